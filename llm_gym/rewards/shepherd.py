"""Math-Shepherd step labels: a reasoning step is good if the policy can still reach the answer from it.

Math-Shepherd (Wang et al., ACL 2024, arXiv:2312.08935, section 3.3 "automatic process annotation") labels
step ``s_i`` of a solution without human annotation: a *completer* (here the policy) continues the solution
from ``s_1..s_i`` ``N`` times (``k`` here), giving final answers ``a_1..a_N``, and the step is scored by how
many of them equal the gold answer ``a*``:

- **hard estimation** (HE): ``y_i = 1`` if some ``a_j == a*`` else ``0``;
- **soft estimation** (SE): ``y_i = sum_j I(a_j == a*) / N``, the fraction correct.

A step is thus labelled by its *value* (its potential to lead to the correct answer) rather than its logical
correctness: a wrong step that later steps repair can score 1, a right step the policy cannot finish
scores 0. The last step needs no completion: its label is the response's own correctness.

:func:`shepherd_step_labels` runs every completion of a batch of responses through the policy in batches of
``batch_size`` sequences with the KV cache (:func:`llm_gym.decoding.sample_responses`; the ``k`` copies of
one prefix are prefilled once). Bind the policy to get a process reward function
(``fn(prompts, steps, answers, **fields) -> list[list[float]]``)::

    labels_fn = functools.partial(shepherd_step_labels, lm, k=4, estimation="hard")

:func:`step_label_agreement` compares two sets of step labels (e.g. a PRM's predictions, Shepherd labels and
a rule checker) on the steps where both have an opinion.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from llm_gym.rewards.base import RewardFunction
from llm_gym.rewards.calling import call_reward_fn
from llm_gym.rewards.math import math_answer_reward

__all__ = [
    "ESTIMATIONS",
    "ContinuationSampler",
    "PolicyContinuations",
    "ShepherdLabels",
    "continuation_prefix",
    "shepherd_step_labels",
    "step_label_agreement",
]

#: Math-Shepherd's two label estimates (section 3.3).
ESTIMATIONS = ("hard", "soft")


@runtime_checkable
class ContinuationSampler(Protocol):
    """Protocol of a completer: one sampled continuation per text, in one batched call.

    Args:
        texts: ``B`` prefix texts (chat-formatted prompt + the response so far); with ``group_size > 1``
            they come in consecutive groups of ``group_size`` identical texts (a group may share its prefill).
        group_size: rows per group of identical texts (1 = no sharing).
        max_new_tokens: continuation budget in tokens.
        temperature: sampling temperature.

    Returns:
        ``B`` continuation texts (special tokens removed).
    """

    def __call__(self, texts: list[str], *, group_size: int, max_new_tokens: int, temperature: float
                 ) -> list[str]: ...


class PolicyContinuations:
    """A :class:`ContinuationSampler` on a :class:`~llm_gym.lm.LanguageModel`: batched KV-cache sampling.

    Each call tokenizes the texts (no special tokens added), left-pads them to the longest and samples with
    :func:`llm_gym.decoding.sample_responses` (one prefill per group of identical rows, finished rows leave
    the batch); the prefix is never recomputed per token.

    Args:
        lm: the policy.

    Attributes:
        completion_tokens: tokens sampled so far over all calls (EOS included).
        n_calls: sampling calls so far.
    """

    def __init__(self, lm: Any):
        self.lm = lm
        self.completion_tokens = 0
        self.n_calls = 0

    def __call__(self, texts: list[str], *, group_size: int, max_new_tokens: int, temperature: float
                 ) -> list[str]:
        """Sample one continuation per text (see :class:`ContinuationSampler`).

        Raises:
            ValueError: a prefix plus ``max_new_tokens`` exceeds the model's context length (lower
                ``max_new_tokens`` or use shorter responses).
        """
        from llm_gym.decoding import sample_responses

        lm = self.lm
        length = max(lm.prompt_lengths(texts))
        if length + max_new_tokens > lm.context_length:
            raise ValueError(f"A Math-Shepherd prefix has {length} tokens; with "
                             f"max_new_tokens={max_new_tokens} it exceeds the model's context of "
                             f"{lm.context_length} tokens. Lower max_new_tokens or label shorter responses.")
        ids, mask = lm.encode_prompts(texts, length)  # (B, L) left-padded
        model = lm.model
        device = next(model.parameters()).device
        response = sample_responses(model, ids.to(device), mask.to(device), max_new_tokens, lm.eos_token_id,
                                    lm.pad_token_id, group_size=group_size, temperature=temperature)  # (B, T)
        response_mask = lm.response_mask(response)  # (B, T)
        self.completion_tokens += int(response_mask.sum())
        self.n_calls += 1
        return lm.decode(response, response_mask)


class ShepherdLabels(list):
    """Per-step labels (a plain ``list`` of ``N`` lists of floats) plus what computing them cost.

    Attributes:
        n_completions: continuations sampled (``k`` per step that is not a response's last).
        n_sampling_calls: batched sampling calls.
        completion_tokens: tokens sampled (None when the completer does not count them).
        seconds: wall-clock time, sampling and answer checks included.
    """

    def __init__(self, labels: list[list[float]], n_completions: int, n_sampling_calls: int,
                 completion_tokens: int | None, seconds: float):
        super().__init__(labels)
        self.n_completions = n_completions
        self.n_sampling_calls = n_sampling_calls
        self.completion_tokens = completion_tokens
        self.seconds = seconds

    @property
    def stats(self) -> dict[str, Any]:
        """The cost as a JSON-ready dict (``n_completions``, ``n_sampling_calls``, ``completion_tokens``,
        ``seconds``)."""
        return {"n_completions": self.n_completions, "n_sampling_calls": self.n_sampling_calls,
                "completion_tokens": self.completion_tokens, "seconds": self.seconds}


def continuation_prefix(prompt: str, steps: Sequence[str], i: int) -> str:
    """The text a completion of step ``i`` continues: ``prompt + "\\n".join(steps[:i + 1]) + "\\n"``.

    >>> continuation_prefix("Q: 2+3*4? A: ", ["3*4 = 12", "2 + 12 = 14"], 0)
    'Q: 2+3*4? A: 3*4 = 12\\n'
    """
    return prompt + "\n".join(steps[:i + 1]) + "\n"


def _check_arguments(prompts: Sequence[str], steps: Sequence[Sequence[str]], answers: Sequence[str], k: int,
                     estimation: str, max_new_tokens: int, temperature: float, batch_size: int,
                     problem_fields: dict[str, Any]) -> None:
    """Raise ValueError naming the fix for any bad argument of :func:`shepherd_step_labels`."""
    n = len(steps)
    if len(prompts) != n or len(answers) != n:
        raise ValueError(f"shepherd_step_labels: prompts, steps and answers must have one entry per "
                         f"response, got len(prompts)={len(prompts)}, len(steps)={n}, "
                         f"len(answers)={len(answers)}.")
    if any(isinstance(s, str) for s in steps):
        raise ValueError("shepherd_step_labels: steps must be one list of step texts per response, got a "
                         "plain string; split each response into steps first (e.g. its non-blank lines).")
    for name, value in problem_fields.items():
        if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != n:
            raise ValueError(f"shepherd_step_labels: problem field {name!r} must hold one value per response "
                             f"({n}), got {value!r:.80}.")
    checks = [("k", k, 1), ("max_new_tokens", max_new_tokens, 1), ("batch_size", batch_size, 1)]
    for name, value, minimum in checks:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"shepherd_step_labels: {name} must be an integer >= {minimum}, got {value!r}.")
    if estimation not in ESTIMATIONS:
        raise ValueError(f"shepherd_step_labels: estimation must be one of {ESTIMATIONS} (hard: 1 if any "
                         f"completion is correct; soft: the fraction correct), got {estimation!r}.")
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"shepherd_step_labels: temperature must be a finite number > 0 (the k completions "
                         f"must differ), got {temperature!r}.")


def _sample_all(sampler: ContinuationSampler, texts: list[str], k: int, batch_size: int, max_new_tokens: int,
                temperature: float) -> tuple[list[str], int]:
    """Continue ``texts`` (groups of ``k`` identical rows) in chunks; returns the continuations and the calls.

    A chunk holds ``batch_size // k`` whole groups when ``batch_size >= k`` (each group is prefilled once),
    else ``batch_size`` rows without sharing.
    """
    chunk, group_size = (batch_size // k * k, k) if batch_size >= k else (batch_size, 1)
    out: list[str] = []
    calls = 0
    for lo in range(0, len(texts), chunk):
        batch = texts[lo:lo + chunk]
        continuations = sampler(batch, group_size=group_size, max_new_tokens=max_new_tokens,
                                temperature=temperature)
        if len(continuations) != len(batch):
            raise ValueError(f"The completer returned {len(continuations)} continuations for {len(batch)} "
                             f"texts; a ContinuationSampler must return one string per text.")
        out.extend(continuations)
        calls += 1
    return out, calls


def _fork_rng(completer: Any):
    """A forked torch RNG (CPU, and the completer's CUDA device): seeding it leaves the caller's stream."""
    device = getattr(completer, "device", None)
    cuda = [device.index or 0] if isinstance(device, torch.device) and device.type == "cuda" else []
    return torch.random.fork_rng(devices=cuda)


def _correct(answer_fn: RewardFunction, prompts: list[str], responses: list[str], answers: list[str],
             fields: dict[str, list[Any]]) -> np.ndarray:
    """``(n,)`` bool: the answer check's value is above 0.5 (None, "no opinion", counts as wrong)."""
    if not responses:
        return np.zeros(0, dtype=bool)
    out = call_reward_fn(answer_fn, prompts, responses, answers, **fields)
    return (out.values > 0.5) & out.has_opinion


def _assemble_labels(n: int, owners: list[tuple[int, int]], finished: list[int], correct: np.ndarray, k: int,
                     estimation: str) -> list[list[float]]:
    """Per-response step labels from the answer checks: ``k`` completions per non-last step (in ``owners``
    order), then one check per finished response (its own last step)."""
    per_step = correct[:len(owners) * k].reshape(len(owners), k)  # (S, k): S = steps that are not a last step
    scores = per_step.any(axis=1).astype(float) if estimation == "hard" else per_step.mean(axis=1)  # (S,)
    labels: list[list[float]] = [[] for _ in range(n)]
    for (r, _), score in zip(owners, scores, strict=True):
        labels[r].append(float(score))
    for r, ok in zip(finished, correct[len(owners) * k:], strict=True):
        labels[r].append(float(ok))
    return labels


def shepherd_step_labels(lm: Any, prompts: Sequence[str], steps: Sequence[Sequence[str]],
                         answers: Sequence[str], k: int = 4, estimation: str = "hard",
                         max_new_tokens: int = 64, temperature: float = 0.7, batch_size: int = 32,
                         answer_fn: RewardFunction = math_answer_reward, seed: int = 0,
                         **problem_fields: Any) -> ShepherdLabels:
    """Label every step of ``N`` responses by Monte-Carlo completion with the policy (Math-Shepherd).

    Math-Shepherd (arXiv:2312.08935) section 3.3: for step ``i`` of a response with ``K`` steps
    (``i < K - 1``), the policy continues ``continuation_prefix(prompt, steps, i)`` (the prompt, steps
    ``0..i`` joined with ``"\\n"`` and a trailing ``"\\n"``) ``k`` times; completed response ``j`` is
    ``"\\n".join(steps[:i + 1]) + "\\n" + continuation_j`` and is correct when ``answer_fn`` gives it a value
    above 0.5 (None counts as wrong). Then

    - ``estimation="hard"`` (HE): label ``1.0`` if any of the ``k`` is correct, else ``0.0``;
    - ``estimation="soft"`` (SE): label = the fraction of the ``k`` that are correct.

    The last step (``i = K - 1``) is labelled with the response's own correctness (``"\\n".join(steps)``), no
    completion needed. All ``k * sum_r (K_r - 1)`` continuations go through the completer in chunks of at
    most ``batch_size`` sequences, ``batch_size // k`` whole groups of ``k`` copies of a prefix when
    ``batch_size >= k`` (so each prefix is prefilled once), and one ``answer_fn`` call checks all of them.

    Args:
        lm: the policy, a :class:`~llm_gym.lm.LanguageModel` (sampled with :class:`PolicyContinuations`), or
            any :class:`ContinuationSampler` (e.g. a vLLM wrapper, or a scripted fake in tests).
        prompts: ``N`` chat-formatted prompt texts, exactly as the policy saw them (the env's
            ``info["prompt_text"]``).
        steps: ``N`` lists of step texts (a response's non-blank lines, :func:`~llm_gym.rewards.split_steps`);
            an empty list gets no labels.
        answers: ``N`` gold answers.
        k: completions per step (Math-Shepherd's ``N``; the paper uses 8), >= 1.
        estimation: ``"hard"`` or ``"soft"``.
        max_new_tokens: continuation budget in tokens (each continuation writes the rest of the response).
        temperature: sampling temperature, > 0.
        batch_size: sequences per sampling call, >= 1.
        answer_fn: batched reward function judging a whole response (``fn(prompts, responses, answers,
            **fields)``), :func:`~llm_gym.rewards.math_answer_reward` by default.
        seed: seeds torch's RNG for the sampling (in a forked RNG: the caller's stream is left as it was).
        **problem_fields: per-response fields (``N`` values each), passed to ``answer_fn`` for every
            completion of that response.

    Returns:
        A :class:`ShepherdLabels`: ``N`` lists with ``K_r`` floats in ``[0, 1]`` (``{0.0, 1.0}`` for HE), and
        the cost (``n_completions``, ``n_sampling_calls``, ``completion_tokens``, ``seconds``; ``stats``).

    Raises:
        ValueError: ``prompts``, ``steps``, ``answers`` or a problem field differ in length; ``steps`` holds
            a plain string; ``k``, ``max_new_tokens`` or ``batch_size`` below 1; unknown ``estimation``;
            ``temperature <= 0``; a prefix too long for the model's context; a completer returning the wrong
            number of continuations.
        RewardFunctionError: ``answer_fn`` fails or returns bad values (the message names it).

    >>> shepherd_step_labels(lm, [p], [["3 * 4 = 12", "2 + 12 = 14"]], ["14"]).stats  # doctest: +SKIP
    {'n_completions': 4, 'n_sampling_calls': 1, 'completion_tokens': 31, 'seconds': 0.4}
    """
    _check_arguments(prompts, steps, answers, k, estimation, max_new_tokens, temperature, batch_size,
                     problem_fields)
    start = time.perf_counter()
    sampler = lm if isinstance(lm, ContinuationSampler) else PolicyContinuations(lm)
    tokens_before = getattr(sampler, "completion_tokens", None)
    owners = [(r, i) for r, response_steps in enumerate(steps) for i in range(len(response_steps) - 1)]
    rows = [(r, i) for r, i in owners for _ in range(k)]  # k consecutive copies of every prefix
    texts = [continuation_prefix(prompts[r], steps[r], i) for r, i in rows]
    with _fork_rng(lm):
        torch.manual_seed(seed)
        continuations, calls = _sample_all(sampler, texts, k, batch_size, max_new_tokens, temperature)
    finished = [r for r, response_steps in enumerate(steps) if response_steps]
    check_rows = [r for r, _ in rows] + finished
    responses = ["\n".join(steps[r][:i + 1]) + "\n" + c
                 for (r, i), c in zip(rows, continuations, strict=True)]
    responses += ["\n".join(steps[r]) for r in finished]
    fields = {name: [values[r] for r in check_rows] for name, values in problem_fields.items()}
    correct = _correct(answer_fn, [prompts[r] for r in check_rows], responses,
                       [answers[r] for r in check_rows], fields)
    labels = _assemble_labels(len(steps), owners, finished, correct, k, estimation)
    tokens = None if tokens_before is None else sampler.completion_tokens - tokens_before
    return ShepherdLabels(labels, len(rows), calls, tokens, time.perf_counter() - start)


def step_label_agreement(labels: Sequence[Sequence[float | None]],
                         reference: Sequence[Sequence[float | None]], threshold: float = 0.5,
                         reference_threshold: float = 0.0) -> dict[str, Any]:
    """How often two sets of step labels agree, on the steps where both have an opinion.

    A step's label is 1 when its value is above the threshold (``labels``: ``value > threshold``, e.g. a
    PRM's probability or a Shepherd label; ``reference``: ``value > reference_threshold``, e.g. a rule
    checker's reward with positive = good), else 0; ``None`` is "no opinion" and the step is skipped.

    Args:
        labels: ``N`` lists of per-step values or None.
        reference: ``N`` lists of per-step values or None, the same shape.
        threshold: decision threshold of ``labels``.
        reference_threshold: decision threshold of ``reference``.

    Returns:
        ``{"agreement", "n", "label_rate", "reference_rate"}``: the fraction of compared steps with equal
        labels (nan when none), the number of steps compared, and the fractions of them that ``labels`` and
        ``reference`` call 1.

    Raises:
        ValueError: the two differ in the number of responses or of steps of a response.

    >>> step_label_agreement([[0.9, 0.2, 0.7]], [[1.0, None, -1.0]])
    {'agreement': 0.5, 'n': 2, 'label_rate': 1.0, 'reference_rate': 0.5}
    """
    if len(labels) != len(reference) or any(len(a) != len(b) for a, b in zip(labels, reference, strict=True)):
        raise ValueError("step_label_agreement: labels and reference must have the same responses and steps; "
                         "score the same (prompt, steps) samples with both.")
    pairs = [(float(a) > threshold, float(b) > reference_threshold)
             for row_a, row_b in zip(labels, reference, strict=True)
             for a, b in zip(row_a, row_b, strict=True) if a is not None and b is not None]
    if not pairs:
        return {"agreement": float("nan"), "n": 0, "label_rate": float("nan"), "reference_rate": float("nan")}
    a, b = np.array(pairs).T
    return {"agreement": float(np.mean(a == b)), "n": len(pairs), "label_rate": float(np.mean(a)),
            "reference_rate": float(np.mean(b))}
