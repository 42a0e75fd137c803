"""SB3 callbacks for LLM RL: periodic checkpoints at iteration boundaries, and iterative RL.

:class:`IterationCheckpointCallback` saves every K iterations, between two iterations, where a checkpoint
resumes exactly (SB3's ``CheckpointCallback`` saves on env steps, which here fall inside a rollout).
:class:`IterativeRewardModelCallback` is iterative RL, with a reward model retrained on the policy's own samples.

DeepSeekMath (arXiv:2402.03300) section 4.1.4, "Iterative RL with GRPO" (Algorithm 1): as the policy improves,
the old reward model may no longer supervise it well, so every few iterations new training data for the reward
model is sampled from the current policy, the reward model is continually trained on it with a replay of 10 %
of historical data, and the reference model is reset to the current policy.

>>> scorer = RewardModelScorer("outputs/reward_model/model")                   # doctest: +SKIP
>>> env = gym.make("LLMMath-v0", reward_fn=scorer)                              # doctest: +SKIP
>>> model = GRPO("LLMPolicy", env)                                              # doctest: +SKIP
>>> model.learn(320, callback=IterativeRewardModelCallback(scorer, every_n_rollouts=4))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from llm_gym.reward_models import evaluate_reward_model, train_reward_model
from llm_gym.rewards import call_reward_fn, math_answer_reward
from llm_gym.validation import check_int, check_real

__all__ = ["IterationCheckpointCallback", "IterativeRewardModelCallback"]


class IterationCheckpointCallback(BaseCallback):
    """Save the model every ``save_freq`` iterations, at an iteration boundary, and at the end of training.

    A checkpoint is written when the next rollout starts (so after the previous iteration's update) as
    ``<save_path>/<name_prefix>_<num_timesteps>_steps.zip`` (SB3's naming) and, at the end of training, also
    as ``<save_path>/<name_prefix>_last.zip``. Loading one and calling ``learn(M, reset_num_timesteps=False)``
    continues exactly (docs/design.md, "Save and load").

    Args:
        save_freq: iterations between checkpoints (an int >= 1; not a float, not a bool).
        save_path: the folder.
        name_prefix: the file name prefix (a non-empty file name, without a path separator).
        verbose: 0 quiet, 1 prints each saved path.

    Raises:
        ValueError: ``save_freq`` or ``verbose`` that is not an int in range (``1.5`` and ``True`` are refused,
            never rounded), or an empty ``name_prefix`` or one holding a path separator.
        TypeError: ``save_path`` that is not a path, or ``name_prefix`` that is not a string.
    """

    def __init__(self, save_freq: int, save_path: str | os.PathLike, name_prefix: str = "model", verbose: int = 0):
        super().__init__(check_verbose(verbose, "IterationCheckpointCallback"))
        self.save_freq = check_int("save_freq", save_freq, minimum=1, owner="IterationCheckpointCallback")
        if not isinstance(save_path, (str, os.PathLike)):
            raise TypeError(f"IterationCheckpointCallback: save_path must be a folder path (str or os.PathLike), "
                            f"got {type(save_path).__name__}.")
        if not isinstance(name_prefix, str):
            raise TypeError(f"IterationCheckpointCallback: name_prefix must be a string, got "
                            f"{type(name_prefix).__name__}.")
        if not name_prefix or any(sep in name_prefix for sep in ("/", "\\", os.sep)) or name_prefix in (".", ".."):
            raise ValueError(f"IterationCheckpointCallback: name_prefix must be a plain file name prefix (no path "
                             f"separator), got {name_prefix!r}; put the folder in save_path.")
        self.save_path, self.name_prefix = Path(save_path), name_prefix
        self.n_rollouts = 0

    def _save(self, name: str) -> Path:
        path = self.save_path / f"{self.name_prefix}_{name}.zip"
        self.model.save(path)
        if self.verbose:
            print(f"Saved checkpoint {path}")
        return path

    def _on_rollout_start(self) -> None:
        if self.n_rollouts and self.n_rollouts % self.save_freq == 0:
            self._save(f"{self.num_timesteps}_steps")
        self.n_rollouts += 1

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self._save("last")

#: Defaults of each retraining (continual training from the current reward model: one short pass).
DEFAULT_TRAIN_KWARGS = {"epochs": 1, "lr": 2e-5}


class IterativeRewardModelCallback(BaseCallback):
    """Iterative RL: retrain the env's reward model on fresh policy samples and reset the reference model.

    Every ``every_n_rollouts``-th rollout (at ``on_rollout_end``, before that rollout's ``train()``):

    1. **Fresh data.** The rollout's responses (``rollout_buffer.samples``, decoded with ``model.lm``) with
       their prompts and gold answers (the final ``info`` of each sequence) are labelled by ``label_fn``, the
       rule verifier: label 1 when its value is above 0.5; samples it has no opinion on (None) are dropped.
       Process reward models get one label per step (steps from
       :func:`llm_gym.rewards.process.split_steps`).
    2. **Accuracy.** The current reward model is scored on these samples before it sees them:
       ``iterative/reward_model_accuracy`` and ``iterative/reward_model_auc`` measure how well it still
       supervises the current policy; ``iterative/label_base_rate`` is the fraction labelled 1 (correct).
    3. **Replay.** ``round(replay_fraction / (1 - replay_fraction) * n_fresh)`` samples (capped by the store)
       are drawn without replacement from the samples of earlier retrainings, so they make up
       ``replay_fraction`` (10 %) of the training set; then the fresh samples join the store.
    4. **Retrain** the reward model from its current weights (:func:`train_reward_model`, continual training)
       into ``save_dir/reward_model`` and load the new weights into ``scorer`` in place, so the env's reward
       function (the same object) uses them from the next rollout on.
    5. **Reset the reference model** to the current policy (``model.ref_policy.model`` gets a copy of
       ``model.policy.model``'s weights); skipped when the algorithm has none (``beta = 0``). The buffer's
       ``ref_log_probs`` of this rollout were computed before, with the old reference.

    Nothing happens on the other rollouts.

    Args:
        scorer: the env's :class:`~llm_gym.rewards.models.RewardModelScorer` (or
            :class:`~llm_gym.rewards.models.ProcessRewardModelScorer`), the object passed as ``reward_fn``.
        label_fn: the rule verifier, a reward function ``(prompts, responses, answers, **fields)``; for a
            process scorer a process reward function ``(prompts, steps, answers, **fields)``. Default:
            :func:`~llm_gym.rewards.math_answer_reward` (outcome) or
            :func:`~llm_gym.rewards.process.arithmetic_step_reward` (process).
        save_dir: where the retrained reward model is written (``save_dir/reward_model``, replaced each time).
        every_n_rollouts: retrain on every n-th rollout (``>= 1``).
        replay_fraction: share of replayed historical samples in each training set, in ``[0, 1)``
            (DeepSeekMath: 10 %).
        max_replay_size: keep at most this many samples in the replay store (oldest dropped); None = all.
        initial_replay: samples the replay store starts with, ``[((prompt, response_or_steps), label)]``:
            the reward model's own training data, so that replay reaches back past this run (DeepSeekMath's
            "historical data"); e.g. ``list(zip(*read_labelled_samples(folder / "train_samples.jsonl",
            "outcome")))``. None = start empty (the first retraining replays nothing).
        train_kwargs: extra :func:`train_reward_model` arguments (default ``epochs=1, lr=2e-5``; the batch
            size and ``max_length`` default to the scorer's).
        reset_reference: reset the reference model to the policy (step 5).
        seed: seeds the replay draws (and, plus the retraining count, each retraining).
        verbose: 1 prints a line per retraining.

    Attributes:
        n_rollouts: rollouts seen so far.
        replay_store: ``[(example, label)]`` of every earlier retraining's fresh samples.
        history: one dict per retraining: ``rollout``, ``n_fresh``, ``n_replay``, ``n_samples``,
            ``reward_model_accuracy``, ``reward_model_auc`` (NaN when the fresh samples hold one label
            only), ``label_base_rate`` (fraction of fresh samples, or steps, labelled 1) and the
            :func:`train_reward_model` metrics.

    Raises:
        ValueError: ``every_n_rollouts``, ``max_replay_size``, ``seed`` or ``verbose`` that is not an int in range
            (floats and bools are refused, never rounded), or ``replay_fraction`` that is not a finite number in
            ``[0, 1)``.
        TypeError: ``label_fn`` that is not callable, ``reset_reference`` that is not a bool, ``train_kwargs``
            that is not a dict, or ``initial_replay`` items that are not ``(example, label)`` pairs.
    """

    def __init__(
        self,
        scorer,
        label_fn: Callable | None = None,
        save_dir: str | os.PathLike = "outputs/iterative_reward_model",
        every_n_rollouts: int = 1,
        replay_fraction: float = 0.1,
        max_replay_size: int | None = None,
        initial_replay: Sequence[tuple[Any, Any]] | None = None,
        train_kwargs: dict[str, Any] | None = None,
        reset_reference: bool = True,
        seed: int = 0,
        verbose: int = 0,
    ):
        owner = "IterativeRewardModelCallback"
        super().__init__(check_verbose(verbose, owner))
        self.every_n_rollouts = check_int("every_n_rollouts", every_n_rollouts, minimum=1, owner=owner)
        try:
            self.replay_fraction = check_real("replay_fraction", replay_fraction, 0.0, 1.0, max_inclusive=False,
                                              owner=owner)
        except ValueError as exc:
            raise ValueError(f"{exc} DeepSeekMath replays 10 %: replay_fraction=0.1.") from None
        self.max_replay_size = check_int("max_replay_size", max_replay_size, minimum=1, allow_none=True, owner=owner)
        self.seed = check_int("seed", seed, minimum=0, owner=owner)
        if label_fn is not None and not callable(label_fn):
            raise TypeError(f"{owner}: label_fn must be a reward function (callable) or None, got "
                            f"{type(label_fn).__name__}.")
        if not isinstance(reset_reference, bool):
            raise TypeError(f"{owner}: reset_reference must be True or False, got {reset_reference!r}.")
        if train_kwargs is not None and not isinstance(train_kwargs, dict):
            raise TypeError(f"{owner}: train_kwargs must be a dict of train_reward_model arguments or None, got "
                            f"{type(train_kwargs).__name__}.")
        self.scorer, self.kind = scorer, getattr(scorer, "kind", "outcome")
        self.label_fn = label_fn or _default_label_fn(self.kind)
        self.save_dir = Path(save_dir)
        self.train_kwargs = {"batch_size": scorer.batch_size, "max_length": scorer.max_length,
                             **DEFAULT_TRAIN_KWARGS, **(train_kwargs or {})}
        self.reset_reference = reset_reference
        self.rng = np.random.default_rng(self.seed)
        self.n_rollouts = 0
        self.replay_store: list[tuple[Any, Any]] = _replay_pairs(initial_replay, owner)
        self.history: list[dict[str, Any]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.n_rollouts += 1
        if self.n_rollouts % self.every_n_rollouts:
            return
        fresh = self.fresh_samples()
        if not fresh:  # e.g. DAPO's dynamic sampling kept no group
            return
        before = self._current_metrics(fresh)
        accuracy = before["eval_accuracy"]
        replay = self._draw_replay(len(fresh))
        metrics = self._retrain(fresh + replay)
        self.replay_store.extend(fresh)
        if self.max_replay_size is not None:
            self.replay_store = self.replay_store[-self.max_replay_size:]
        if self.reset_reference:
            self._reset_reference_model()
        record = {"rollout": self.n_rollouts, "n_fresh": len(fresh), "n_replay": len(replay),
                  "n_samples": len(fresh) + len(replay), "reward_model_accuracy": accuracy,
                  "reward_model_auc": before["eval_auc"], "label_base_rate": before["eval_base_rate"], **metrics}
        self.history.append(record)
        self.logger.record("iterative/reward_model_accuracy", accuracy)
        self.logger.record("iterative/label_base_rate", record["label_base_rate"])
        if math.isfinite(record["reward_model_auc"]):  # NaN when the rollout holds one label only
            self.logger.record("iterative/reward_model_auc", record["reward_model_auc"])
        self.logger.record("iterative/n_samples", record["n_samples"])
        self.logger.record("iterative/n_replay", record["n_replay"])
        self.logger.record("iterative/reward_model_loss", metrics["train_loss"])
        if self.verbose:
            print(f"Iterative RL (rollout {self.n_rollouts}): reward model accuracy {accuracy:.3f} on "
                  f"{len(fresh)} fresh samples, retrained on {record['n_samples']} ({len(replay)} replayed)")

    # ------------------------------------------------------------------ steps
    def fresh_samples(self) -> list[tuple[Any, Any]]:
        """The current rollout as labelled samples ``[((prompt, response_or_steps), label)]``.

        Raises:
            RuntimeError: the rollout's infos do not line up with the buffer's rows.
        """
        buffer = self.locals.get("rollout_buffer", self.model.rollout_buffer)
        rollout = self.locals.get("rollout")
        samples = buffer.samples
        if samples is None:
            return []
        infos = getattr(rollout, "infos", None)
        if infos is None or len(infos) != samples.n_sequences:
            raise RuntimeError("IterativeRewardModelCallback needs each sequence's final info (prompt_text, "
                               "answer) aligned with the rollout buffer; use it with an LLMAlgorithm's "
                               "learn().")
        prompts, answers = [i["prompt_text"] for i in infos], [i["answer"] for i in infos]
        ids, mask = samples.response_ids.cpu(), samples.response_mask.cpu()
        if self.kind == "process":
            return self._process_samples(prompts, ids, mask, answers)
        responses = self.model.lm.decode(ids, mask)
        out = call_reward_fn(self.label_fn, prompts, responses, answers)
        rows = zip(prompts, responses, out.values, out.has_opinion, strict=True)
        return [((p, r), int(v > 0.5)) for p, r, v, has in rows if has]

    def _process_samples(self, prompts: list[str], ids: torch.Tensor, mask: torch.Tensor, answers: list[str]
                         ) -> list[tuple[Any, Any]]:
        """``[((prompt, steps), per-step labels)]``; responses without steps or any label are dropped."""
        from llm_gym.rewards import call_process_reward_fn, split_steps

        steps = [[s.text for s in split_steps(row[m.bool()].tolist(), self.model.lm.tokenizer)]
                 for row, m in zip(ids, mask, strict=True)]
        values = call_process_reward_fn(self.label_fn, prompts, steps, answers)
        labels = [[None if v is None else int(v > 0.5) for v in row] for row in values]
        return [((p, s), y) for p, s, y in zip(prompts, steps, labels, strict=True)
                if any(v is not None for v in y)]

    def _current_metrics(self, fresh: list[tuple[Any, Any]]) -> dict[str, float]:
        """The reward model before retraining, on samples it has not seen (per step for a PRM):
        :func:`~llm_gym.rewards.models.binary_metrics` prefixed ``eval_`` (accuracy, AUC, base rate...)."""
        metrics = evaluate_reward_model(self.scorer, [x for x, _ in fresh], [y for _, y in fresh])
        return {k: float(v) for k, v in metrics.items() if k.startswith("eval_")}

    def _draw_replay(self, n_fresh: int) -> list[tuple[Any, Any]]:
        """Earlier samples making up ``replay_fraction`` of the training set (fewer if the store is small)."""
        wanted = round(self.replay_fraction / (1.0 - self.replay_fraction) * n_fresh)
        n = min(wanted, len(self.replay_store))
        rows = self.rng.choice(len(self.replay_store), size=n, replace=False) if n else []
        return [self.replay_store[i] for i in rows]

    def _retrain(self, data: list[tuple[Any, Any]]) -> dict[str, Any]:
        """Continue training the scorer's model on ``data`` and load the result into the scorer in place."""
        backbone = self.scorer.name_or_path
        if backbone is None:  # a scorer built from an in-memory model: save it to start from its weights
            backbone = self.scorer.save(self.save_dir / "initial_reward_model")
        kwargs = {"seed": self.seed + len(self.history), "device": str(self.scorer.device),
                  **self.train_kwargs}
        target = self.save_dir / "reward_model"
        metrics = train_reward_model([x for x, _ in data], [y for _, y in data], backbone=backbone,
                                     output_dir=target, kind=self.kind, **kwargs)
        self.scorer.load(target)
        return metrics

    def _reset_reference_model(self) -> None:
        """Copy the policy's weights into the frozen reference model (no-op without one: ``beta = 0``)."""
        ref = getattr(self.model, "ref_policy", None)
        if ref is None:
            return
        with torch.no_grad():
            ref.model.load_state_dict(self.model.policy.model.state_dict())


def check_verbose(verbose: Any, owner: str) -> int:
    """``verbose`` as an int in 0..2 (SB3's levels).

    Raises:
        ValueError: not an int in 0..2 (a bool or float is refused); the message names ``owner``.
    """
    return check_int("verbose", verbose, 0, 2, owner=owner)


def _replay_pairs(initial_replay: Sequence[tuple[Any, Any]] | None, owner: str) -> list[tuple[Any, Any]]:
    """``[(tuple(example), label)]`` of ``initial_replay``.

    Raises:
        TypeError: an item that is not an ``(example, label)`` pair with a sequence example.
    """
    pairs = []
    for i, item in enumerate(initial_replay or []):
        if (isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2
                or isinstance(item[0], (str, bytes)) or not isinstance(item[0], Sequence)):
            raise TypeError(f"{owner}: initial_replay[{i}] must be an ((prompt, response_or_steps), label) pair, got "
                            f"{item!r:.100}; read_labelled_samples gives them as list(zip(*samples)).")
        pairs.append((tuple(item[0]), item[1]))
    return pairs


def _default_label_fn(kind: str) -> Callable:
    if kind == "process":
        from llm_gym.rewards.arithmetic import arithmetic_step_reward

        return arithmetic_step_reward
    return math_answer_reward
