"""Config.versions and Config.cipher_suites on the simnet, seen as a wire observer sees them."""

from typing import Any

import pytest

from interop.wire import V1, V2, Observer
from sansquic import Config, ConfigError, ConnectionState, Endpoint
from sansquic.testing import LinkConditions, SimNetwork

CLIENT, SERVER = ("10.0.0.1", 5000), ("10.0.0.2", 4433)


class Watched:
    """Wraps the client endpoint so an Observer sees every datagram it sends and receives."""

    def __init__(self, node: Endpoint, observer: Observer) -> None:
        self.node, self.observer = node, observer

    def receive_datagram(self, data: bytes, address: Any, now: float) -> None:
        self.observer.observe(data, to_server=False)
        self.node.receive_datagram(data, address, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        out = self.node.datagrams_to_send(now)
        for data, _ in out:
            self.observer.observe(data, to_server=True)
        return out

    def timer(self) -> float | None:
        return self.node.timer()

    def handle_timer(self, now: float) -> None:
        self.node.handle_timer(now)


def handshake(client: Config, server: Config) -> tuple[Any, Observer, Endpoint]:
    """Connect once; the client connection (connected or not after 10 s), what the wire
    showed, and the server endpoint."""
    net = SimNetwork(1, conditions=LinkConditions(delay=0.005))
    observer = Observer()
    client_endpoint, server_endpoint = Endpoint(client), Endpoint(server, server=True)
    net.add(CLIENT, Watched(client_endpoint, observer))
    net.add(SERVER, server_endpoint)

    def drain() -> None:  # nobody reads events in this test; keep the queues short
        for endpoint in (client_endpoint, server_endpoint):
            while endpoint.next_event() is not None:
                pass

    net.step_hooks.append(drain)
    conn = client_endpoint.connect(SERVER, net.now, server_name="localhost")
    net.run_until(lambda: conn.state in (ConnectionState.CONNECTED, ConnectionState.CLOSED), 10)
    return conn, observer, server_endpoint


DEV = Config(dev_mode=True, trust_dev_certificate=True)


def test_v1_is_the_default_and_nothing_on_the_wire_is_v2() -> None:
    conn, observer, _ = handshake(DEV, DEV)
    assert conn.state is ConnectionState.CONNECTED
    assert observer.packets("s2c", "handshake", V1) > 0
    assert observer.packets("s2c", "handshake", V2) == 0
    assert [h.version for h in observer.hellos] == [V1]


def test_a_v2_client_and_a_v1_v2_server_speak_v2() -> None:
    conn, observer, _ = handshake(DEV.replace(versions=("v2",)), DEV.replace(versions=("v1", "v2")))
    assert conn.state is ConnectionState.CONNECTED
    assert observer.packets("c2s", "initial", V2) > 0
    assert observer.packets("s2c", "handshake", V2) > 0
    assert observer.packets("s2c", "handshake", V1) == 0
    assert [h.version for h in observer.hellos] == [V2]


def test_a_v1_only_server_answers_v2_with_version_negotiation() -> None:
    conn, observer, server = handshake(DEV.replace(versions=("v2",)), DEV)
    assert conn.state is not ConnectionState.CONNECTED
    assert observer.packets("s2c", "negotiation") > 0
    assert observer.hellos == []
    assert server.stats().version_negotiations > 0


@pytest.mark.parametrize(
    "suite", ["AES_128_GCM_SHA256", "AES_256_GCM_SHA384", "CHACHA20_POLY1305_SHA256"]
)
def test_the_client_s_only_cipher_suite_is_the_one_negotiated(suite: str) -> None:
    conn, observer, _ = handshake(DEV.replace(cipher_suites=(suite,)), DEV)
    assert conn.state is ConnectionState.CONNECTED
    assert [h.cipher for h in observer.hellos] == [suite]


def test_no_common_cipher_suite_fails_the_handshake() -> None:
    client = DEV.replace(cipher_suites=("CHACHA20_POLY1305_SHA256",))
    conn, observer, _ = handshake(client, DEV.replace(cipher_suites=("AES_128_GCM_SHA256",)))
    assert conn.state is not ConnectionState.CONNECTED
    assert observer.hellos == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("versions", ()),
        ("versions", ("v3",)),
        ("versions", ("v1", "v1")),
        ("versions", 1),
        ("cipher_suites", ()),
        ("cipher_suites", ("TLS_AES_128_CCM_SHA256",)),
        ("cipher_suites", ("AES_128_GCM_SHA256", "AES_128_GCM_SHA256")),
    ],
)
def test_bad_versions_and_cipher_suites_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=field):
        Config(**{field: value})


def test_names_are_kept_in_order_and_one_name_is_a_one_tuple() -> None:
    assert Config(versions="v2").versions == ("v2",)
    assert Config(versions=["v2", "v1"]).versions == ("v2", "v1")
    assert Config(cipher_suites="CHACHA20_POLY1305_SHA256").cipher_suites == (
        "CHACHA20_POLY1305_SHA256",
    )
    assert Config().cipher_suites is None


def test_qh3_refuses_what_its_adapter_does_not_pass_on() -> None:
    for changes in ({"versions": ("v2",)}, {"cipher_suites": ("AES_128_GCM_SHA256",)}):
        with pytest.raises(ConfigError, match="qh3"):
            Config(engine="qh3", **changes)
