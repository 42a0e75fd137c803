"""Length-based reward shaping: a linear per-token cost and DAPO's soft overlong punishment.

Both depend on the response length in tokens, not on the text, so they are functions of lengths (applied
at episode end by the :mod:`llm_gym.wrappers` ``LengthPenalty`` and ``OverlongPenalty``) rather than
text reward functions.
"""

from __future__ import annotations

import numbers

import numpy as np

from llm_gym.validation import check_real

__all__ = ["length_penalty", "overlong_penalty"]


def length_penalty(lengths, max_length: int, coef: float = 1.0) -> np.ndarray:
    r"""A linear per-token cost: ``-coef * length / max_length`` per response.

    .. math::
        R_{length}(y) = -\mathrm{coef} \cdot \frac{|y|}{L_{max}}

    Every token costs the same, ``coef / max_length``, so the penalty is 0 for an empty response and
    ``-coef`` for one of ``max_length`` tokens. Added to the task reward it favours shorter responses
    among equally rewarded ones. It is a plain, fixed cost, not a group-relative one: Kimi k1.5's length
    reward (arXiv:2501.12599 section 2.3.3), for instance, compares each response with the shortest and
    longest responses sampled for the same prompt and depends on correctness.

    Args:
        lengths: ``(N,)`` response lengths in tokens (EOS included), array-like, each finite and >= 0.
        max_length: Normaliser :math:`L_{max}` in tokens (the env's ``max_new_tokens``), >= 1.
        coef: Penalty at ``max_length`` tokens, a finite number >= 0.

    Returns:
        ``(N,)`` float64 penalties, ``<= 0`` (in ``[-coef, 0]`` for lengths up to ``max_length``).

    Raises:
        ValueError: ``max_length`` not an integer >= 1, ``coef`` negative or not finite, a length that is
            negative, NaN or infinite, or a penalty that overflows float64.

    >>> length_penalty([0, 16, 64], max_length=64, coef=0.5).tolist()
    [0.0, -0.125, -0.5]
    """
    if isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral) or max_length < 1:
        raise ValueError(f"length_penalty: max_length must be an integer >= 1 (tokens), got {max_length!r}.")
    try:
        coef = check_real("coef", coef, minimum=0, owner="length_penalty")
    except ValueError as exc:
        raise ValueError(f"{exc} For a reward that grows with length, write a reward function instead.") from None
    lengths = _checked_lengths(lengths, "length_penalty")
    with np.errstate(over="ignore"):
        penalty = 0.0 - float(coef) * lengths / max_length  # 0.0 - x: no negative zero
    if not np.all(np.isfinite(penalty)):
        raise ValueError(f"length_penalty: coef * length / max_length overflows float64 (coef={coef!r}, longest "
                         f"length {lengths.max():g}, max_length={max_length}). Use a coef of the reward's scale.")
    return penalty


def _checked_lengths(lengths, owner: str) -> np.ndarray:
    """``lengths`` as a float64 array, checked: every value finite and >= 0.

    Raises:
        ValueError: a length is not a number, is negative, NaN or infinite (the message shows the first).
    """
    try:
        values = np.asarray(lengths, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{owner}: lengths must be numbers of tokens (an array-like of finite values >= 0), "
                         f"got {lengths!r:.200}.") from exc
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        raise ValueError(f"{owner}: lengths must be finite numbers of tokens >= 0, got {values[bad][0]!r} at "
                         f"index {int(np.argmax(bad.reshape(-1)))}.")
    return values


def overlong_penalty(lengths, max_length: int, overlong_buffer: int, penalty_factor: float = 1.0) -> np.ndarray:
    r"""DAPO's soft overlong punishment (arXiv:2503.14476 section 3.4, eq. 13), per response.

    With :math:`L_{max}` = ``max_length`` and :math:`L_{cache}` = ``overlong_buffer``:

    .. math::
        R_{length}(y) = \begin{cases} 0 & |y| \le L_{max} - L_{cache} \\
        \frac{(L_{max} - L_{cache}) - |y|}{L_{cache}} & L_{max} - L_{cache} < |y| \le L_{max} \\
        -1 & L_{max} < |y| \end{cases}

    times ``penalty_factor``. It is added to the task reward: 0 up to ``max_length - overlong_buffer``
    tokens, then linear down to ``-penalty_factor`` at ``max_length`` (a response cut at the budget gets
    the full penalty). ``overlong_buffer = 0`` gives 0 up to ``max_length`` and ``-penalty_factor`` beyond.

    Args:
        lengths: ``(N,)`` response lengths in tokens (EOS included), array-like.
        max_length: :math:`L_{max}` in tokens (the env's ``max_new_tokens``), >= 1.
        overlong_buffer: :math:`L_{cache}` in tokens, ``0 <= overlong_buffer <= max_length``. DAPO uses
            4096 of 20480 (20 %).
        penalty_factor: Scale of the penalty, >= 0 (1.0 in DAPO).

    Returns:
        ``(N,)`` float64 penalties in ``[-penalty_factor, 0]``.

    Raises:
        ValueError: ``max_length`` or ``overlong_buffer`` not an integer in range, ``penalty_factor`` negative
            or not finite, or a length that is negative, NaN or infinite.

    >>> overlong_penalty([10, 48, 56, 64], max_length=64, overlong_buffer=16).tolist()
    [0.0, 0.0, -0.5, -1.0]
    """
    def is_int(x) -> bool:
        return isinstance(x, numbers.Integral) and not isinstance(x, bool)

    try:
        factor_ok = check_real("penalty_factor", penalty_factor, minimum=0) is not None
    except ValueError:
        factor_ok = False
    ok = factor_ok and is_int(max_length) and max_length >= 1 and is_int(overlong_buffer) and (
        0 <= overlong_buffer <= max_length)
    if not ok:
        raise ValueError(f"Need max_length >= 1, 0 <= overlong_buffer <= max_length (integers, tokens) and "
                         f"penalty_factor >= 0 (a finite number); got max_length={max_length!r}, "
                         f"overlong_buffer={overlong_buffer!r}, penalty_factor={penalty_factor!r}")
    lengths = _checked_lengths(lengths, "overlong_penalty")
    expected = max_length - overlong_buffer
    if overlong_buffer == 0:
        return np.where(lengths > max_length, -float(penalty_factor), 0.0)
    penalty = np.clip((expected - lengths) / overlong_buffer, -1.0, 0.0)
    return penalty * penalty_factor
