"""Length-based reward shaping: DAPO's soft overlong punishment."""

from __future__ import annotations

import numpy as np

__all__ = ["overlong_penalty"]


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
