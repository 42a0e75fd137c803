"""Split a response into reasoning steps and map each step to the token that completes it.

A *step* is the text between two occurrences of a delimiter (a line by default). :func:`split_steps`
decodes a response token by token (:class:`IncrementalDecoder`) and returns each :class:`Step` with
``end_index``, the index of the token that completes it: the token holding the delimiter's last character,
or the response's last token for the final step. Process rewards
(:mod:`llm_gym.rewards.process`) score these steps; the envs place each step's reward at its
``end_index``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["IncrementalDecoder", "Step", "split_steps", "token_texts"]


class Step(NamedTuple):
    """One reasoning step of a response.

    Attributes:
        text: The step's text, stripped of surrounding whitespace, without its delimiter; never blank.
        end_index: 0-based index (in the response's tokens) of the token that completes the step.
    """

    text: str
    end_index: int


class IncrementalDecoder:
    """Decode a response one token at a time: the text each token adds, in linear time.

    Each :meth:`push` decodes only a short window of recent tokens (the incremental detokenization of
    vLLM and TGI), so the pieces concatenate to the decoded response with any tokenizer: one character
    per token (the tiny test model), byte-level BPE where one token holds several characters such as
    ``".\\n\\n"`` (SmolLM2), or SentencePiece, whose single-token decode drops leading spaces. A token
    that ends inside a multi-byte character adds ``""`` and the character is credited to the token that
    completes it. Special tokens (EOS, pad) add ``""``: they are not part of the text.

    Args:
        tokenizer: A Hugging Face tokenizer (anything with ``decode(ids, skip_special_tokens=...)``).

    Attributes:
        text: The text decoded so far (the concatenation of the pieces).
        piece: The text the last pushed token added (``""`` before the first push).
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # tokens whose text is already in self.text
        self.text = ""
        self.piece = ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        """Append one token and return the text it adds (``""`` for special or incomplete tokens)."""
        self._ids.append(int(token_id))
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        new_text = self._decode(self._ids[self._prefix:])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.piece = new_text[len(prefix_text):]
            self._prefix, self._read = self._read, len(self._ids)
        else:
            self.piece = ""
        self.text += self.piece
        return self.piece

    def ends_step(self, delimiter: str) -> bool:
        """Whether an occurrence of ``delimiter`` ends inside the last pushed token's text.

        True whenever :func:`split_steps` ends a step at that token (it may also be True when the
        occurrence overlaps an earlier one, e.g. a third ``"\\n"`` with ``delimiter="\\n\\n"``).
        """
        if not self.piece:
            return False
        start = max(0, len(self.text) - len(self.piece) - len(delimiter) + 1)
        return delimiter in self.text[start:]


def token_texts(response_ids: Sequence[int] | np.ndarray, tokenizer: Any) -> list[str]:
    """The text each token adds to the decoded response (see :class:`IncrementalDecoder`).

    Args:
        response_ids: ``(n,)`` token ids.
        tokenizer: A Hugging Face tokenizer.

    Returns:
        ``n`` strings whose concatenation is the response text (special tokens give ``""``).
    """
    decoder = IncrementalDecoder(tokenizer)
    return [decoder.push(i) for i in _as_id_list(response_ids)]


def _as_id_list(response_ids: Sequence[int] | np.ndarray) -> list[int]:
    ids = np.asarray(response_ids)
    if ids.ndim != 1:
        raise ValueError(f"response_ids must be one response, a 1-D sequence of token ids; got shape {ids.shape}.")
    return [int(i) for i in ids]


def split_steps(response_ids: Sequence[int] | np.ndarray, tokenizer: Any, delimiter: str = "\n",
                final: bool = True) -> list[Step]:
    """Split a response into steps at ``delimiter`` and map each step to the token that completes it.

    Conventions:

    - A step ends at the token holding the **last character** of its delimiter occurrence (occurrences
      are found left to right without overlap). With byte-level BPE that token may hold more text, e.g.
      ``".\\n\\n"``: the step still ends there.
    - The final step (the text after the last delimiter) ends at the **last token**, ``n - 1``: the EOS
      when the response has one (a response is finished only once its EOS is emitted), else the last
      token of a truncated response. With ``final=False`` (a response still being generated) it is
      not a step yet and is left out.
    - Blank segments (consecutive delimiters, whitespace only, special tokens only) are skipped, so every
      step has non-blank text. Step texts are stripped and exclude the delimiter and special tokens.

    Causal: the steps returned for a prefix of the tokens are the steps of the whole response that end
    within the prefix (with ``final=False``).

    Args:
        response_ids: ``(n,)`` int token ids, the response's real tokens (EOS included, no padding).
        tokenizer: The Hugging Face tokenizer that produced them.
        delimiter: Non-empty string that ends a step (``"\\n"``: one step per line).
        final: Whether the response is finished (its last segment is a step).

    Returns:
        The steps in order, with strictly increasing ``end_index`` in ``0 .. n - 1``.

    Raises:
        ValueError: ``delimiter`` empty or not a string, or ``response_ids`` not 1-D.

    Example:
        >>> # char tokenizer, ids of "3+4=7\\n\\nso 7" + EOS
        >>> split_steps(ids, tokenizer)  # doctest: +SKIP
        [Step(text='3+4=7', end_index=5), Step(text='so 7', end_index=11)]
    """
    if not isinstance(delimiter, str) or not delimiter:
        raise ValueError(f"delimiter must be a non-empty string, got {delimiter!r}.")
    pieces = token_texts(response_ids, tokenizer)
    ends = np.cumsum([len(p) for p in pieces]).tolist()  # ends[i]: end (exclusive) of token i's text
    text = "".join(pieces)
    steps: list[Step] = []
    pos = 0
    while (found := text.find(delimiter, pos)) >= 0:
        segment = text[pos:found].strip()
        if segment:
            steps.append(Step(segment, bisect_right(ends, found + len(delimiter) - 1)))
        pos = found + len(delimiter)
    tail = text[pos:].strip()
    if final and tail:
        steps.append(Step(tail, len(pieces) - 1))
    return steps
