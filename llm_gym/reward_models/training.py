"""Training and evaluating reward models: a plain torch loop over labelled samples, and binary metrics.

:func:`train_reward_model` fine-tunes a 2-label classification head (and its backbone) as an outcome or
process reward model on a backbone (:func:`~llm_gym.reward_models.backbone.resolve_backbone`): the MiniLM
encoder (``backbone="minilm"``, the default), the default causal LM with a classification head
(``backbone="policy"``), or any local Hugging Face folder. :func:`evaluate_reward_model` scores held-out
samples with :func:`binary_metrics`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_gym.reward_models.backbone import (
    load_head_model,
    load_tokenizer,
    resolve_backbone,
    save_reward_model,
)
from llm_gym.reward_models.samples import encode_pairs, step_end_positions, step_spans
from llm_gym.reward_models.scorers import ClassifierScorer, ProcessRewardModelScorer, RewardModelScorer

__all__ = ["IGNORE_INDEX", "binary_metrics", "evaluate_reward_model", "train_reward_model"]

#: Target of the token positions that carry no label (cross-entropy ignores them).
IGNORE_INDEX = -100


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


def _fit(scorer: ClassifierScorer, examples: list, labels: list, epochs: int, lr: float, batch_size: int,
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
            logits = scorer.logits(encoding)  # (B, 2) or (B, S, 2)
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


def evaluate_reward_model(scorer: ClassifierScorer, texts_or_pairs: Sequence, labels: Sequence
                          ) -> dict[str, float]:
    """:func:`binary_metrics` of a scorer on labelled samples (per step for a process reward model).

    Args:
        scorer: a :class:`RewardModelScorer` or :class:`ProcessRewardModelScorer`.
        texts_or_pairs: labelled samples' texts or ``(prompt, response)`` pairs, as :func:`train_reward_model`.
        labels: their labels, as :func:`train_reward_model`.

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
    tokenizer = load_tokenizer(folder, need_offsets=kind == "process")
    torch.manual_seed(seed)  # the new head's initialisation
    model = load_head_model(folder, kind, tokenizer, num_labels=2)
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
