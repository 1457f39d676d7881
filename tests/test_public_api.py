"""Meta-tests of the public surface: small, documented, typed, and free of engine types."""

import inspect

import attrs
import pytest

import sansquic
import sansquic.messaging
import sansquic.testing

PUBLIC = [getattr(sansquic, name) for name in sansquic.__all__ if name != "__version__"]
EVENTS = [obj for obj in PUBLIC if isinstance(obj, type) and issubclass(obj, sansquic.Event)]


def test_all_names_exist_and_nothing_private_is_exported() -> None:
    for module in (sansquic, sansquic.testing, sansquic.messaging):
        for name in module.__all__:
            assert hasattr(module, name), name
            assert not name.startswith("_") or name == "__version__"


@pytest.mark.parametrize("obj", [o for o in PUBLIC if inspect.isclass(o) or inspect.isfunction(o)])
def test_public_names_have_docstrings(obj: object) -> None:
    assert inspect.getdoc(obj), obj


def test_public_methods_of_connection_have_docstrings() -> None:
    for name, member in inspect.getmembers(sansquic.Connection):
        if not name.startswith("_"):
            assert inspect.getdoc(member), name


def test_connection_commands_say_what_to_call_next() -> None:
    commands = [
        "connect",
        "receive_datagram",
        "handle_timer",
        "datagrams_to_send",
        "open_stream",
        "send",
        "reset",
        "stop",
        "send_datagram",
        "close",
    ]
    for name in commands:
        assert "Next:" in (getattr(sansquic.Connection, name).__doc__ or ""), name


def test_classes_report_a_public_module() -> None:
    for obj in PUBLIC:
        if inspect.isclass(obj):
            assert not any(part.startswith("_") for part in obj.__module__.split(".")), obj


@pytest.mark.parametrize("event", EVENTS)
def test_events_are_frozen_slotted_keyword_only(event: type) -> None:
    assert attrs.has(event)
    assert "__slots__" in event.__dict__
    fields = attrs.fields(event)
    assert all(f.kw_only for f in fields)
    if fields:
        with pytest.raises(TypeError):
            event(*([0] * len(fields)))  # positional arguments are refused


def test_events_cannot_be_mutated() -> None:
    event = sansquic.StreamReset(stream_id=0, error_code=1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.error_code = 2  # type: ignore[misc]


def test_every_error_derives_from_sansquic_error() -> None:
    errors = [o for o in PUBLIC if isinstance(o, type) and issubclass(o, BaseException)]
    assert len(errors) >= 6
    assert all(issubclass(e, sansquic.SansQuicError) for e in errors)


def test_the_package_is_typed() -> None:
    from importlib.resources import files

    assert files("sansquic").joinpath("py.typed").is_file()


@pytest.mark.parametrize("name", sansquic.messaging.__all__)
def test_messaging_names_are_documented_and_report_the_public_module(name: str) -> None:
    obj = getattr(sansquic.messaging, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert inspect.getdoc(obj), name
    if inspect.isclass(obj):
        assert obj.__module__ == "sansquic.messaging", obj
        if issubclass(obj, BaseException):
            assert issubclass(obj, sansquic.SansQuicError), obj
