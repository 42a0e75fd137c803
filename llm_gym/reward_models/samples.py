"""Reward-model samples: ``(prompt, response)`` pairs as tokens, the token that ends each step, labelled-sample files.

**Inputs.** A sample is the text pair ``(prompt, response)`` encoded as the tokenizer's pair template
(``[CLS] prompt [SEP] response [SEP]`` for BERT; plain concatenation for most causal LMs). When the pair is
longer than ``max_length`` tokens, the prompt is truncated first, from its start (its end, the question
and the assistant header, is kept); when the response alone does not fit, its end is cut
(:func:`encode_pairs`). A process sample's response is ``"\\n".join(steps)`` (:func:`step_spans`), read at
the last token of each step (:func:`step_end_positions`).

**Files.** Labelled samples are JSON lines, ``{prompt, response, label}`` (outcome) or
``{prompt, steps, labels}`` (process) (:func:`write_labelled_samples`, :func:`read_labelled_samples`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "KINDS",
    "check_kind",
    "encode_pairs",
    "read_labelled_samples",
    "step_end_positions",
    "step_spans",
    "write_labelled_samples",
]

#: Sample kinds: ``"outcome"`` (one label per response) or ``"process"`` (one label per step).
KINDS = ("outcome", "process")


def check_kind(kind: str) -> None:
    """Raise ``ValueError`` unless ``kind`` is one of :data:`KINDS`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} (outcome: one label per response; process: one label "
                         f"per step), got {kind!r}")


def encode_pairs(tokenizer, prompts: Sequence[str], responses: Sequence[str], max_length: int,
                 return_offsets: bool = False):
    """Tokenize ``(prompt, response)`` pairs, padded, truncating the prompt first (from its start).

    Each pair is measured without special tokens; if ``prompt + response + specials > max_length``, the prompt
    keeps its last tokens that fit beside the whole response, and when the response alone does not fit, it
    keeps its first ``max_length - specials`` tokens. Truncation happens on the text at token boundaries,
    then the pair is tokenized with the tokenizer's own pair template (``longest_first`` guards the rare
    re-tokenization that is a token longer).

    Args:
        tokenizer: a Hugging Face tokenizer (fast if ``return_offsets``).
        prompts: ``B`` prompt texts.
        responses: ``B`` response texts.
        max_length: maximum tokens per pair, special tokens included.
        return_offsets: also return ``offset_mapping`` (character spans) for reading step ends.

    Returns:
        A ``BatchEncoding`` of ``(B, S)`` tensors (``input_ids``, ``attention_mask``, maybe ``token_type_ids``
        and ``offset_mapping`` ``(B, S, 2)``), ``S <= max_length``; ``encoding.sequence_ids(i)`` tells prompt
        (0) from response (1) tokens.

    Raises:
        ValueError: ``max_length`` leaves no room for text beside the special tokens.
    """
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    if budget < 1:
        raise ValueError(f"max_length={max_length} leaves no room for text beside the special tokens.")
    p_enc = tokenizer(list(prompts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    r_enc = tokenizer(list(responses), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    cut_prompts, cut_responses = [], []
    for prompt, response, p_off, r_off in zip(prompts, responses, p_enc["offset_mapping"],
                                              r_enc["offset_mapping"], strict=True):
        keep_r = min(len(r_off), budget)
        keep_p = min(len(p_off), budget - keep_r)
        if keep_r < len(r_off):
            response = response[: r_off[keep_r - 1][1]]
        if keep_p < len(p_off):
            prompt = prompt[p_off[len(p_off) - keep_p][0]:] if keep_p else ""
        cut_prompts.append(prompt)
        cut_responses.append(response)
    return tokenizer(cut_prompts, cut_responses, padding=True, truncation="longest_first",
                     max_length=max_length, return_offsets_mapping=return_offsets, return_tensors="pt")


def step_spans(steps: Sequence[str]) -> tuple[str, list[int]]:
    """Join steps with ``"\\n"`` and return ``(response_text, step_end_chars)``.

    ``step_end_chars[k]`` is the character index just past step ``k`` in the joined text.

    >>> step_spans(["1 + 2 = 3", "3 * 2 = 6"])
    ('1 + 2 = 3\\n3 * 2 = 6', [9, 19])
    """
    ends, pos = [], 0
    for k, step in enumerate(steps):
        pos += len(step) + (1 if k else 0)
        ends.append(pos)
    return "\n".join(steps), ends


def step_end_positions(encoding, row: int, step_ends: Sequence[int]) -> list[int]:
    """Token position of each step's last token in row ``row`` of a pair encoding.

    The last token of step ``k`` is the last *response* token whose character span starts before
    ``step_ends[k]``. A step with no token of its own (an empty step, or one cut by truncation) gets the last
    token before its end; if the response has no token before it, the token before the response (the
    separator or the prompt's last token).

    Args:
        encoding: from :func:`encode_pairs` with ``return_offsets=True``.
        row: the pair's index in the batch.
        step_ends: character end of each step in the response (:func:`step_spans`).

    Returns:
        One position in ``0 .. S-1`` per step.
    """
    seq_ids = encoding.sequence_ids(row)
    offsets = encoding["offset_mapping"][row].tolist()
    response_pos = [i for i, s in enumerate(seq_ids) if s == 1]
    response_start = response_pos[0] if response_pos else next(
        (i + 1 for i in range(len(seq_ids) - 1, -1, -1) if seq_ids[i] == 0), 1)
    fallback = max(response_start - 1, 0)
    positions = []
    for end in step_ends:
        before = [i for i in response_pos if offsets[i][0] < end]
        positions.append(before[-1] if before else fallback)
    return positions


def write_labelled_samples(path: str | os.PathLike, examples: Sequence, labels: Sequence, kind: str) -> None:
    """Write labelled reward-model samples, one JSON line each: ``{prompt, response, label}`` (outcome) or
    ``{prompt, steps, labels}`` (process), as ``scripts/train_reward_model.py`` saves them.

    Args:
        path: the ``.jsonl`` file to write (replaced).
        examples: ``(prompt, response)`` pairs (outcome) or ``(prompt, steps)`` (process).
        labels: one 0/1 per example (outcome) or one list of 0/1/None per example (process).
        kind: ``"outcome"`` or ``"process"``.

    Raises:
        ValueError: bad ``kind``, or ``examples`` and ``labels`` differ in length.
    """
    check_kind(kind)
    key, label_key = ("response", "label") if kind == "outcome" else ("steps", "labels")
    with Path(path).open("w") as f:
        for (prompt, body), label in zip(examples, labels, strict=True):
            f.write(json.dumps({"prompt": prompt, key: body, label_key: label}) + "\n")


def read_labelled_samples(path: str | os.PathLike, kind: str) -> tuple[list, list]:
    """Examples and labels from a :func:`write_labelled_samples` file (its inverse).

    Args:
        path: a ``train_samples.jsonl`` / ``eval_samples.jsonl`` written by ``scripts/train_reward_model.py``.
        kind: ``"outcome"`` or ``"process"``, as written.

    Returns:
        ``(examples, labels)``: ``[(prompt, response_or_steps)]`` and their labels.

    Raises:
        FileNotFoundError: ``path`` is missing.
        KeyError: a line lacks the fields of ``kind`` (a file of the other kind).
    """
    check_kind(kind)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: labelled samples are written by "
                                f"scripts/train_reward_model.py into its --output-dir.")
    key, label_key = ("response", "label") if kind == "outcome" else ("steps", "labels")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["prompt"], r[key]) for r in rows], [r[label_key] for r in rows]
