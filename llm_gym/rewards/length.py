"""Length-based reward shaping: a linear per-token cost and DAPO's soft overlong punishment.

Both depend on the response length in tokens, not on the text, so they are functions of lengths (applied
at episode end by the :mod:`llm_gym.wrappers` ``LengthPenalty`` and ``OverlongPenalty``) rather than
text reward functions.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

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
        lengths: ``(N,)`` response lengths in tokens (EOS included), array-like, each >= 0.
        max_length: Normaliser :math:`L_{max}` in tokens (the env's ``max_new_tokens``), >= 1.
        coef: Penalty at ``max_length`` tokens, a finite number >= 0.

    Returns:
        ``(N,)`` float64 penalties, ``<= 0`` (in ``[-coef, 0]`` for lengths up to ``max_length``).

    Raises:
        ValueError: ``max_length < 1``, ``coef`` negative or not finite, or a negative length.

    >>> length_penalty([0, 16, 64], max_length=64, coef=0.5).tolist()
    [0.0, -0.125, -0.5]
    """
    if isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral) or max_length < 1:
        raise ValueError(f"length_penalty: max_length must be an integer >= 1 (tokens), got {max_length!r}.")
    if isinstance(coef, bool) or not isinstance(coef, numbers.Real) or not (math.isfinite(coef) and coef >= 0):
        raise ValueError(f"length_penalty: coef must be a finite number >= 0, got {coef!r}. For a reward "
                         f"that grows with length, write a reward function instead.")
    lengths = np.asarray(lengths, dtype=np.float64)
    if np.any(lengths < 0):
        raise ValueError(f"length_penalty: lengths must be >= 0 tokens, got {lengths.min():g}.")
    return 0.0 - float(coef) * lengths / max_length  # 0.0 - x: no negative zero


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
        ValueError: An argument out of range.

    >>> overlong_penalty([10, 48, 56, 64], max_length=64, overlong_buffer=16).tolist()
    [0.0, 0.0, -0.5, -1.0]
    """
    if max_length < 1 or not 0 <= overlong_buffer <= max_length or penalty_factor < 0:
        raise ValueError(f"Need max_length >= 1, 0 <= overlong_buffer <= max_length and penalty_factor >= 0; got "
                         f"max_length={max_length}, overlong_buffer={overlong_buffer}, penalty_factor={penalty_factor}")
    lengths = np.asarray(lengths, dtype=np.float64)
    expected = max_length - overlong_buffer
    if overlong_buffer == 0:
        return np.where(lengths > max_length, -float(penalty_factor), 0.0)
    penalty = np.clip((expected - lengths) / overlong_buffer, -1.0, 0.0)
    return penalty * penalty_factor
