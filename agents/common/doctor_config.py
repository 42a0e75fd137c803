"""What the training doctor checks: the kinds of warning, their thresholds and the advice each gives.

:class:`DoctorConfig` holds every threshold of :class:`~agents.common.doctor.TrainingDoctor` (one documented
field each), :data:`KINDS` and :data:`STREAK_KINDS` name the conditions it checks, and :data:`ADVICE` is the
likely causes and fixes its warning quotes per kind. docs/troubleshooting.md documents the same per kind.
Import these from :mod:`agents.common.doctor`, which re-exports them.

>>> DoctorConfig(zero_std_patience=2).zero_std_patience
2
>>> sorted(ADVICE) == sorted(KINDS)
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ADVICE", "KINDS", "STREAK_KINDS", "DoctorConfig"]

#: The kinds of warning, in check order; each has the counter ``doctor/<kind>``.
KINDS: tuple[str, ...] = ("zero_variance", "entropy_collapse", "kl_explosion", "truncation",
                          "high_clip_fraction", "grad_norm_spike", "reward_hacking")
#: The kinds that need ``patience`` consecutive iterations; each also has the counter ``doctor/<kind>_streak``.
STREAK_KINDS: tuple[str, ...] = ("zero_variance", "entropy_collapse", "truncation", "high_clip_fraction")


@dataclass
class DoctorConfig:
    """The thresholds of :class:`~agents.common.doctor.TrainingDoctor`, one documented field each
    (docs/troubleshooting.md).

    A streak counts consecutive iterations that carry the metric; an iteration without it leaves the streak
    as it was. Raises ``ValueError`` naming the field when a value is out of range.
    """

    zero_std_fraction: float = 1.0
    """Zero variance: an iteration counts when ``rollout/zero_std_groups >= zero_std_fraction`` (1.0 = every
    group's rewards were equal, so every advantage and the policy loss are exactly 0; TRL #3857)."""
    zero_std_patience: int = 3
    """Zero variance: warn after this many such rollouts in a row (one all-equal rollout happens by chance
    with few prompts; three in a row means the task does not fit the model)."""
    entropy_floor: float = 0.03
    """Entropy collapse: ``train/entropy`` below this (nats/token) counts (0.03 nats is a near-deterministic
    sampler: no exploration left; verl #5953)."""
    entropy_min_ratio: float = 0.1
    """Entropy collapse: ``train/entropy`` below this fraction of its first value also counts (RL lowers the
    entropy; a 10x drop is the collapse that stops exploration)."""
    entropy_patience: int = 2
    """Entropy collapse: warn after this many low-entropy updates in a row (one noisy minibatch is not a trend)."""
    kl_max: float = 1.0
    """KL explosion: ``train/kl`` above this (nats/token) warns at once (1 nat/token to the reference model is
    far beyond the 0.001-0.1 of a healthy GRPO run)."""
    approx_kl_max: float = 0.1
    """KL explosion: ``train/approx_kl`` above this warns at once (10x SB3/Spinning Up's usual target_kl 0.01:
    the update left the trust region)."""
    kl_growth_factor: float = 10.0
    """KL explosion: ``train/kl`` that grew by this factor over ``kl_growth_window`` updates warns (10x in a few
    updates is exponential growth, not drift)."""
    kl_growth_window: int = 5
    """KL explosion: the growth is measured against the value this many KL-logging updates earlier."""
    kl_growth_min: float = 0.1
    """KL explosion: the growth rule only fires once ``train/kl >= kl_growth_min`` (the KL starts at exactly 0,
    so tiny early values grow by large factors harmlessly)."""
    truncated_max: float = 0.5
    """Truncation: ``rollout/truncated_fraction`` above this counts (more than half the responses get no
    answer in, so the reward mostly scores the budget)."""
    truncated_patience: int = 3
    """Truncation: warn after this many such rollouts in a row (long responses early in training are common)."""
    clip_fraction_max: float = 0.3
    """High clip fraction: ``train/clip_fraction`` above this counts (PPO-style runs stay below about 0.2;
    GSPO's sequence clipping clips more by design: raise this for GSPO)."""
    clip_fraction_patience: int = 3
    """High clip fraction: warn after this many such updates in a row (one off-policy minibatch is normal)."""
    grad_norm_factor: float = 10.0
    """Gradient spike: ``train/grad_norm`` above this multiple of the running median warns (10x the median
    is an outlier batch, not noise)."""
    grad_norm_window: int = 20
    """Gradient spike: the running median is over the last this many gradient norms."""
    grad_norm_min: float = 0.1
    """Gradient spike in KL-only updates (every group's rewards equal): only a ``train/grad_norm`` of at least
    this counts (a tenth of the default max_grad_norm). Only the KL term pulls there, and its gradient starts
    at exactly 0 (the policy is the reference model), so its tiny early norms grow by large factors harmlessly."""
    grad_norm_min_history: int = 5
    """Gradient spike: the median rule needs this many known gradient norms (a median of 1-4 values is noise);
    before that, from the second update on, only a norm above grad_norm_factor**2 x the largest known norm
    (100x by default) warns."""
    hack_window: int = 5
    """Reward hacking: W; the means of the last W and the previous W iterations are compared (W=5 smooths
    the per-rollout noise of a few prompts)."""
    hack_min_reward_rise: float = 0.05
    """Reward hacking: the reward mean must rise by at least this (reward units) between the two windows."""
    hack_min_accuracy_drop: float = 0.05
    """Reward hacking: and the accuracy mean must fall by at least this (5 points of accuracy: beyond the
    noise of a few dozen responses' mean over W rollouts)."""
    hack_reward_key: str = "rollout/ep_rew_mean"
    """Reward hacking: the reward metric (``rollout/ep_rew_mean`` smooths over the last 100 episodes)."""
    hack_accuracy_key: str = "rollout/accuracy"
    """Reward hacking: the accuracy metric (or a component, e.g. ``rollout/reward/accuracy``)."""
    ignore: tuple[str, ...] = ()
    """Kinds never checked (e.g. ``("high_clip_fraction",)``); see :data:`KINDS`."""

    def __post_init__(self) -> None:
        self.ignore = tuple(self.ignore)
        self.validate()

    def validate(self) -> DoctorConfig:
        """Check every field's range.

        Returns:
            ``self`` (for chaining).

        Raises:
            ValueError: a field out of range, or an unknown kind in ``ignore``; the message names it.
        """
        positive = ("entropy_floor", "kl_max", "approx_kl_max", "kl_growth_min", "grad_norm_min",
                    "hack_min_reward_rise", "hack_min_accuracy_drop")
        fractions = ("zero_std_fraction", "entropy_min_ratio", "truncated_max", "clip_fraction_max")
        for name in positive + fractions + ("kl_growth_factor", "grad_norm_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"DoctorConfig.{name} must be a finite number, got {value!r}")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"DoctorConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in fractions:
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"DoctorConfig.{name} must be in (0, 1], got {getattr(self, name)!r}")
        for name in ("kl_growth_factor", "grad_norm_factor"):
            if getattr(self, name) <= 1:
                raise ValueError(f"DoctorConfig.{name} must be > 1, got {getattr(self, name)!r}")
        for name in ("zero_std_patience", "entropy_patience", "kl_growth_window", "truncated_patience",
                     "clip_fraction_patience", "grad_norm_window", "grad_norm_min_history", "hack_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DoctorConfig.{name} must be an int >= 1, got {value!r}")
        if self.grad_norm_min_history > self.grad_norm_window:
            raise ValueError(f"DoctorConfig.grad_norm_min_history={self.grad_norm_min_history} must be <= "
                             f"grad_norm_window={self.grad_norm_window}")
        unknown = [kind for kind in self.ignore if kind not in KINDS]
        if unknown:
            raise ValueError(f"DoctorConfig.ignore: unknown kind(s) {unknown}; valid kinds: {list(KINDS)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-able data (``ignore`` as a list)."""
        data = dataclasses.asdict(self)
        data["ignore"] = list(self.ignore)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DoctorConfig:
        """The inverse of :meth:`to_dict`.

        Raises:
            TypeError: an unknown field.
            ValueError: a field out of range.
        """
        return cls(**{**data, "ignore": tuple(data.get("ignore", ()))})



#: Per kind: the likely causes and the fixes, appended to what was seen in the kind's warning.
ADVICE: dict[str, str] = {
    "zero_variance": (
        "Likely causes: the problems are too hard (every reward 0) or too easy (every reward 1) for the model, "
        "too little diversity in the samples, or a reward that is constant. Fixes: easier problems or a "
        "curriculum (e.g. gym.make('LLMMath-v0', difficulty=1)); a larger group_size; a higher temperature; "
        "dynamic_sampling=True (DAPO: drops all-equal groups and samples more); a denser reward (format_weight, "
        "partial credit, a process reward)."),
    "entropy_collapse": (
        "Likely causes: the policy became near-deterministic (learning rate too high, many epochs per rollout, "
        "symmetric clipping that lets probable tokens grow fastest, a low temperature), so it stops exploring "
        "and the groups' rewards become equal. Fixes: a lower learning_rate; DAPO's clip-higher "
        "(clip_range_high=0.28); fewer n_epochs; a higher temperature; beta > 0 to stay near the reference "
        "model; with PPO's value-head policy, an entropy bonus ent_coef > 0."),
    "kl_explosion": (
        "Likely causes: steps that are too large (learning_rate, n_epochs, many minibatches per rollout, a "
        "wide clip range), a reward whose scale dwarfs the KL term, or a reward the policy exploits by "
        "drifting away from the reference model. Fixes: a lower learning_rate; fewer n_epochs; target_kl "
        "(e.g. 0.02) to stop the epochs early; a larger beta; a smaller clip_range; check the reward scale."),
    "truncation": (
        "Likely causes: max_new_tokens is too small for the task's reasoning, or the model rambles or repeats "
        "without emitting EOS (its answer is then cut off and usually scored 0). Fixes: raise max_new_tokens; "
        "overlong shaping (overlong_buffer > 0, DAPO) or mask_truncated=True; a format reward "
        "(format_weight) or a prompt that asks for a short final answer."),
    "high_clip_fraction": (
        "Likely causes: the policy moves too far from the rollout policy within one iteration (learning_rate "
        "too high, many n_epochs or minibatches) or the clip range is narrow. GSPO clips whole sequences with "
        "a tiny range (3e-4/4e-4), so its clip fraction is high by design: raise clip_fraction_max for GSPO. "
        "Fixes: a lower learning_rate; fewer n_epochs; a larger batch_size (fewer steps per rollout); a larger "
        "clip_range / clip_range_high."),
    "grad_norm_spike": (
        "Likely causes: an outlier batch (a very long response, an extreme reward, a near-zero group std "
        "blowing up the advantages), tokens with tiny old probabilities and huge ratios, or a learning rate "
        "at the edge of stability. A norm above max_grad_norm was clipped before the step, so one spike is "
        "mostly harmless; repeated spikes are not. Fixes: check the reward scale and outliers (scale_rewards, eps); keep "
        "max_grad_norm small (1.0); a lower learning_rate; a larger batch_size."),
    "reward_hacking": (
        "Likely causes: the policy found a way to raise another reward component (format, length, a reward "
        "model) at the expense of correctness: reward hacking. Fixes: inspect responses "
        "(rollout/reward/<component> shows which part rose); lower the weight of the component that rose; "
        "make the accuracy reward dominate; a larger beta; fix the exploitable reward (e.g. a reward model "
        "that prefers length)."),
}
