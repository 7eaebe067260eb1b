"""Checks of option values: each error names the option and the value given."""

import math

from asgiref.sync import iscoroutinefunction


def check_count(name: str, value: object, *, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def check_seconds(name: str, value: object, *, allow_zero: bool) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def check_flag(name: str, value: object, *, allow_none: bool = False) -> None:
    if not isinstance(value, bool) and not (allow_none and value is None):
        expected = "True, False or None" if allow_none else "a bool"
        raise TypeError(f"{name} must be {expected}, got {value!r}")


def check_hook(name: str, value: object) -> None:
    """A hook is called on the event loop: a plain callable, not ``async``."""
    if value is not None and (
        not callable(value)
        or iscoroutinefunction(value)
        or iscoroutinefunction(type(value).__call__)
    ):
        raise TypeError(f"{name} must be a plain (not async) callable, got {value!r}")
