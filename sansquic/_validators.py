"""attrs validators shared by the frozen settings classes; each raises ConfigError."""

from __future__ import annotations

from typing import Any

import attrs

from ._errors import ConfigError

__all__ = ["bool_", "int_in", "one_of", "optional", "positive", "positive_or_none"]

Validator = Any  # attrs' validator protocol: (instance, attribute, value) -> None


def int_in(low: int, high: int) -> Validator:
    """An int (not a bool) in ``[low, high]``."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError(f"{attribute.name} must be an int in [{low}, {high}], not {value!r}")

    return check


def _is_positive_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0


def positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A number greater than zero."""
    if not _is_positive_number(value):
        raise ConfigError(f"{attribute.name} must be a positive number, not {value!r}")


def positive_or_none(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A number greater than zero, or ``None`` for "no limit"."""
    if value is not None and not _is_positive_number(value):
        raise ConfigError(f"{attribute.name} must be a positive number or None, not {value!r}")


def bool_(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Exactly True or False."""
    if not isinstance(value, bool):
        raise ConfigError(f"{attribute.name} must be True or False, not {value!r}")


def one_of(*choices: str) -> Validator:
    """One of ``choices``."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ConfigError(f"{attribute.name} must be one of {choices}, not {value!r}")

    return check


def optional(check: Validator) -> Validator:
    """``check``, or ``None``."""

    def check_optional(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            check(instance, attribute, value)

    return check_optional
