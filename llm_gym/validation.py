"""Checks of numeric arguments shared by the envs and the reward helpers.

Every check raises ``ValueError`` with a message that names the argument, its allowed range and the value
received. ``bool`` is never accepted as a number (``True`` is not a token count), NaN and infinities never
pass (they compare False with every bound, so a plain ``x < 0`` check lets them through), and integer
arguments accept Python and numpy integers but not floats such as ``12.0``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["check_int", "check_real"]


def _range_text(minimum: float | None, maximum: float | None, min_inclusive: bool = True,
                max_inclusive: bool = True) -> str:
    """``">= 1"``, ``"in [0, 1]"``, ``"> 0"``... for error messages."""
    if minimum is not None and maximum is not None:
        return f"in {'[' if min_inclusive else '('}{minimum:g}, {maximum:g}{']' if max_inclusive else ')'}"
    if minimum is not None:
        return f"{'>=' if min_inclusive else '>'} {minimum:g}"
    if maximum is not None:
        return f"{'<=' if max_inclusive else '<'} {maximum:g}"
    return ""


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None, *,
              allow_none: bool = False, owner: str = "") -> int | None:
    """Return ``value`` as an ``int`` after checking that it is an integer in ``[minimum, maximum]``.

    Args:
        name: The argument's name, used in the error message.
        value: The value to check (``int`` or numpy integer; not ``bool``, not ``float``).
        minimum: Smallest allowed value, or None for no lower bound.
        maximum: Largest allowed value, or None for no upper bound.
        allow_none: Accept (and return) None.
        owner: Prefix of the error message, e.g. ``"SequenceEnv"``.

    Returns:
        ``int(value)``, or None when ``value`` is None and ``allow_none``.

    Raises:
        ValueError: ``value`` is not an integer (or None when allowed) or is out of range; the message names
            the argument and its allowed range.

    >>> check_int("max_new_tokens", 64, minimum=1)
    64
    >>> check_int("max_new_tokens", 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: max_new_tokens must be an integer >= 1, got 0.
    """
    if value is None and allow_none:
        return None
    ok = not isinstance(value, bool) and isinstance(value, numbers.Integral)
    if ok:
        ok = (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        prefix = f"{owner}: " if owner else ""
        bounds = _range_text(minimum, maximum)
        none = " or None" if allow_none else ""
        hint = " (a whole number, not a float or bool)" if isinstance(value, (bool, float)) else ""
        raise ValueError(f"{prefix}{name} must be an integer{' ' + bounds if bounds else ''}{none}{hint}, "
                         f"got {value!r}.")
    return int(value)


def check_real(name: str, value: Any, minimum: float | None = None, maximum: float | None = None, *,
               min_inclusive: bool = True, max_inclusive: bool = True, allow_none: bool = False,
               owner: str = "") -> float | None:
    """Return ``value`` as a ``float`` after checking that it is a finite real number in range.

    Args:
        name: The argument's name, used in the error message.
        value: The value to check (``int``, ``float`` or numpy scalar; not ``bool``, not NaN or infinite).
        minimum: Lower bound, or None for none.
        maximum: Upper bound, or None for none.
        min_inclusive: Whether ``minimum`` itself is allowed.
        max_inclusive: Whether ``maximum`` itself is allowed.
        allow_none: Accept (and return) None.
        owner: Prefix of the error message, e.g. ``"SequenceEnv"``.

    Returns:
        ``float(value)``, or None when ``value`` is None and ``allow_none``.

    Raises:
        ValueError: ``value`` is not a finite real number (or None when allowed) or is out of range; the
            message names the argument and its allowed range.

    >>> check_real("format_weight", 0.5, minimum=0)
    0.5
    >>> check_real("reward_timeout", float("nan"), minimum=0, min_inclusive=False)
    Traceback (most recent call last):
    ...
    ValueError: reward_timeout must be a finite number > 0, got nan.
    """
    if value is None and allow_none:
        return None
    number = math.nan
    if not isinstance(value, bool) and isinstance(value, numbers.Real):
        try:
            number = float(value)
        except (OverflowError, TypeError, ValueError):  # float(10**400) overflows: not a finite float
            pass
    ok = math.isfinite(number)
    if ok:
        low_ok = minimum is None or (number >= minimum if min_inclusive else number > minimum)
        high_ok = maximum is None or (number <= maximum if max_inclusive else number < maximum)
        ok = low_ok and high_ok
    if not ok:
        prefix = f"{owner}: " if owner else ""
        bounds = _range_text(minimum, maximum, min_inclusive, max_inclusive)
        none = " or None" if allow_none else ""
        raise ValueError(f"{prefix}{name} must be a finite number{' ' + bounds if bounds else ''}{none}, "
                         f"got {value!r}.")
    return number
