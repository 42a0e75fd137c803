"""Reward-model scorers: an outcome reward model (ORM) and a process reward model (PRM) as reward functions.

Both wrap a Hugging Face encoder or decoder with a classification head loaded from a local folder:

- :class:`RewardModelScorer` (``AutoModelForSequenceClassification``) is a batched reward function,
  ``scorer(prompts, responses, answers, **fields) -> list[float]``, so it plugs into
  ``SequenceEnv(reward_fn=scorer)``. Score = probability of label 1 ("correct") for a 2-label head, the raw
  logit for a 1-label head.
- :class:`ProcessRewardModelScorer` (``AutoModelForTokenClassification``, 2 labels) scores every reasoning
  step: ``scorer(prompts, steps, answers, **fields) -> list[list[float]]``, the probability of "correct" read
  at the last token of each step (Math-Shepherd, arXiv:2312.08935; DeepSeekMath arXiv:2402.03300
  section 4.1.3).

Pairs are encoded as :mod:`llm_gym.reward_models.samples` describes (prompt truncated first); train a
scorer with :func:`~llm_gym.reward_models.training.train_reward_model`.

>>> scorer = RewardModelScorer("outputs/reward_model")                      # doctest: +SKIP
>>> scorer(["What is 2 + 3?"], ["2 + 3 = 5. \\\\boxed{5}"], ["5"])           # doctest: +SKIP
[0.93]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_gym.reward_models.backbone import (
    head_model_class,
    load_head_model,
    load_tokenizer,
    resolve_backbone,
    save_reward_model,
)
from llm_gym.reward_models.samples import encode_pairs, step_end_positions, step_spans

__all__ = ["ClassifierScorer", "ProcessRewardModelScorer", "RewardModelScorer"]


class ClassifierScorer:
    """Base of the two scorers: loading, device handling, the forward pass, save and load.

    Args:
        model: a local folder (or alias, :func:`~llm_gym.reward_models.backbone.resolve_backbone`) of a
            classifier of :attr:`kind`, or an already-loaded model (then pass ``tokenizer``).
        tokenizer: the model's tokenizer (loaded from the folder when None).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        batch_size: pairs per forward pass.
        max_length: tokens per pair, special tokens included.

    Raises:
        ValueError: a loaded model without tokenizer, ``batch_size < 1`` or ``max_length < 2``, a head with
            other than 1 or 2 labels, or ``max_length`` beyond the model's positions.
        FileNotFoundError: ``model`` is neither a folder nor an alias.
    """

    kind = "outcome"
    name = "reward_model"

    def __init__(self, model, tokenizer=None, device: str | torch.device = "auto", batch_size: int = 16,
                 max_length: int = 512):
        from llm_gym.lm import resolve_device

        if batch_size < 1 or max_length < 2:
            raise ValueError(f"Need batch_size >= 1 and max_length >= 2, got {batch_size} and {max_length}.")
        self.name_or_path: str | None = None
        if isinstance(model, (str, os.PathLike)):
            self.name_or_path = os.fspath(resolve_backbone(model))
            tokenizer = tokenizer or load_tokenizer(self.name_or_path, need_offsets=self.kind == "process")
            model = load_head_model(self.name_or_path, self.kind, tokenizer)
        elif tokenizer is None:
            raise ValueError(f"{type(self).__name__}: pass the tokenizer with an already-loaded model, "
                             f"e.g. {type(self).__name__}(model, tokenizer=tokenizer), or pass a folder.")
        self.tokenizer = tokenizer
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.batch_size, self.max_length = int(batch_size), int(max_length)
        self._check_model()

    def _check_model(self) -> None:
        num_labels = int(self.model.config.num_labels)
        if num_labels not in (1, 2):
            raise ValueError(f"{type(self).__name__} needs a head with 2 labels (P(correct) = softmax[1]) or "
                             f"1 (raw logit), got num_labels={num_labels}. Train one with "
                             f"train_reward_model.")
        n_pos = getattr(self.model.config, "max_position_embeddings", None) or getattr(
            self.model.config, "n_positions", None)
        if n_pos is not None and self.max_length > n_pos:
            raise ValueError(f"max_length={self.max_length} exceeds the model's {n_pos} positions; pass "
                             f"max_length<={n_pos}.")
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    @property
    def threshold(self) -> float:
        """Decision threshold of a score: 0.5 for a probability (2 labels), 0.0 for a raw logit (1 label)."""
        return 0.5 if self.model.config.num_labels == 2 else 0.0

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        """``(..., num_labels)`` logits -> ``(...)`` float32 scores (P(label 1) or the raw logit)."""
        logits = logits.float()
        return torch.softmax(logits, dim=-1)[..., 1] if logits.shape[-1] == 2 else logits[..., 0]

    def logits(self, encoding) -> torch.Tensor:
        """Logits ``(B, num_labels)`` (outcome) or ``(B, S, num_labels)`` (process) of one padded batch.

        Args:
            encoding: a pair encoding from :func:`~llm_gym.reward_models.samples.encode_pairs`.

        Returns:
            The head's logits on the model's device (with grad when the caller has it on, as training does).
        """
        inputs = {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]}
        if "token_type_ids" in encoding and getattr(self.model.config, "type_vocab_size", 0):
            inputs["token_type_ids"] = encoding["token_type_ids"]
        return self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits

    def load(self, path: str | os.PathLike) -> None:
        """Load the weights of a saved reward model folder into :attr:`model` in place (same object, device).

        Raises:
            FileNotFoundError: ``path`` is not a model folder.
            RuntimeError: the saved weights do not fit this model (another architecture or head size).
        """
        folder = resolve_backbone(path)
        saved = head_model_class(self.kind).from_pretrained(folder)
        self.model.load_state_dict(saved.state_dict())
        self.model.eval()
        self.name_or_path = os.fspath(folder)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model and tokenizer to ``path`` atomically (see :func:`save_reward_model`)."""
        return save_reward_model(self.model, self.tokenizer, path, {"kind": self.kind})

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name_or_path or type(self.model).__name__!r}, "
                f"device={str(self.device)!r}, batch_size={self.batch_size}, max_length={self.max_length})")


class RewardModelScorer(ClassifierScorer):
    """An outcome reward model as a batched reward function: one score per ``(prompt, response)``.

    Args:
        model: a local folder of an ``AutoModelForSequenceClassification`` (e.g. from
            :func:`train_reward_model`), or an already-loaded model (then pass ``tokenizer``).
        tokenizer: the model's tokenizer (loaded from the folder when None).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        batch_size: pairs per forward pass.
        max_length: tokens per pair (special tokens included); longer pairs lose the prompt's start first
            (module docstring).

    Raises:
        ValueError: a loaded model without tokenizer, a head with other than 1 or 2 labels, or ``max_length``
            beyond the model's positions.
        FileNotFoundError: ``model`` is neither a folder nor an alias (``"minilm"``, ``"policy"``).

    Attributes:
        name: ``"reward_model"`` (the component name in ``info["reward_components"]``).
        model: the classifier, in eval mode on :attr:`device`.
        tokenizer: its tokenizer.
        threshold: 0.5 (probability) or 0.0 (logit); a score above it counts as "correct".
    """

    kind = "outcome"
    name = "reward_model"

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Scores ``(N,)`` float64: P("correct") for a 2-label head, the raw logit for a 1-label head.

        Runs in micro-batches of :attr:`batch_size` on the model's device, without grad. Pairs are
        grouped by length (characters) before batching, so a micro-batch pads little; the scores come back
        in the input order.

        Raises:
            ValueError: ``prompts`` and ``responses`` have different lengths.
        """
        if len(prompts) != len(responses):
            raise ValueError(f"{self.name}: got {len(prompts)} prompts but {len(responses)} responses.")
        order = np.argsort([len(p) + len(r) for p, r in zip(prompts, responses, strict=True)], kind="stable")
        scores = np.zeros(len(responses))
        for lo in range(0, len(order), self.batch_size):
            rows = order[lo:lo + self.batch_size]
            encoding = encode_pairs(self.tokenizer, [prompts[i] for i in rows], [responses[i] for i in rows],
                                    self.max_length)
            scores[rows] = self._scores(self.logits(encoding)).cpu().double().numpy()  # (b,)
        return scores

    def __call__(self, prompts: list[str], responses: list[str], answers: list[str], **problem_fields: Any
                 ) -> list[float]:
        """The reward function: one score per response (``answers`` and fields are not used).

        Raises:
            ValueError: ``prompts``, ``responses`` and ``answers`` have different lengths.
        """
        if len(answers) != len(responses):
            raise ValueError(f"{self.name}: got {len(responses)} responses but {len(answers)} answers.")
        return self.score(prompts, responses).tolist()


class ProcessRewardModelScorer(ClassifierScorer):
    """A process reward model: a token-classification head read at the last token of every step.

    One forward per ``(prompt, "\\n".join(steps))`` pair; the score of step ``k`` is P("correct") (2 labels)
    or the raw logit (1 label) at the last token of step ``k``'s character span, found with the fast
    tokenizer's ``offset_mapping`` (:func:`step_end_positions`). Training puts the step labels at the same
    positions (:func:`train_reward_model` with ``kind="process"``).

    With a bidirectional encoder (MiniLM) the score at a step end also sees the later steps; a causal LM
    backbone (``backbone="policy"``) makes each score depend on the prompt and steps ``0..k`` only, as the
    token env's process-reward hook requires.

    Args:
        model: a local folder of an ``AutoModelForTokenClassification``, or an already-loaded model.
        tokenizer: as :class:`RewardModelScorer`; it must be a fast tokenizer (``offset_mapping``).
        device: as :class:`RewardModelScorer`.
        batch_size: as :class:`RewardModelScorer`.
        max_length: as :class:`RewardModelScorer`.

    Raises:
        ValueError: as :class:`RewardModelScorer`, or a slow tokenizer.

    Attributes:
        name: ``"process_reward_model"``.
    """

    kind = "process"
    name = "process_reward_model"

    @torch.no_grad()
    def score_steps(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """Per-step scores: ``steps[i]`` (``K_i`` strings) -> ``K_i`` floats (``[]`` when ``K_i == 0``).

        Raises:
            ValueError: ``prompts`` and ``steps`` have different lengths, or ``steps[i]`` is a string.
        """
        if len(prompts) != len(steps):
            raise ValueError(f"{self.name}: got {len(prompts)} prompts but {len(steps)} step lists.")
        if any(isinstance(s, str) for s in steps):
            raise ValueError(f"{self.name}: steps must be a list of lists of strings (one list per "
                             f"response), got a plain string; split the response into steps first.")
        out: list[list[float]] = []
        for lo in range(0, len(steps), self.batch_size):
            spans = [step_spans(s) for s in steps[lo:lo + self.batch_size]]
            encoding = encode_pairs(self.tokenizer, prompts[lo:lo + self.batch_size], [t for t, _ in spans],
                                    self.max_length, return_offsets=True)
            scores = self._scores(self.logits(encoding)).cpu()  # (b, S)
            for row, (_, ends) in enumerate(spans):
                out.append([float(scores[row, p]) for p in step_end_positions(encoding, row, ends)])
        return out

    def __call__(self, prompts: list[str], steps: list[list[str]], answers: list[str], **problem_fields: Any
                 ) -> list[list[float]]:
        """The process reward function: one score per step of each response.

        Raises:
            ValueError: mismatched lengths of ``prompts``, ``steps`` and ``answers``.
        """
        if len(answers) != len(steps):
            raise ValueError(f"{self.name}: got {len(steps)} step lists but {len(answers)} answers.")
        return self.score_steps(prompts, steps)
