"""Input checks shared by methods, metrics and the configuration: one implementation each, one
wording of their errors (``<name> must be ..., got <value>``, one line).

Option checks raise ``TypeError`` for a value of the wrong type and ``ValueError`` for a value
out of range; each returns the (converted) value so that it can be used inline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["check_bool", "check_choice", "check_fraction", "check_int", "check_nonneg",
           "check_positive"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive(name: str, value: Any, integer: bool = False) -> Any:
    """A number > 0 (an ``int`` when ``integer``)."""
    if integer and (not isinstance(value, int) or isinstance(value, bool)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not _is_number(value) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def check_fraction(name: str, value: Any, closed: bool = False) -> Any:
    """A number in (0, 1), or in [0, 1] when ``closed``."""
    if not (_is_number(value) and (0 <= value <= 1 if closed else 0 < value < 1)):
        rng = "[0, 1]" if closed else "(0, 1)"
        raise ValueError(f"{name} must be in {rng}, got {value!r}")
    return value


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """An ``int`` (not a bool) >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def check_nonneg(name: str, value: Any) -> float:
    """A finite number >= 0, as a float."""
    if not _is_number(value) or not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """One of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """A ``bool`` (not 0/1)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value
