"""TrainingDoctor: watches the logged metrics of every iteration and warns, once, when a run goes wrong.

The learn loop calls :meth:`TrainingDoctor.update` once per iteration, after the rollout and the update,
with that iteration's metrics as a plain dict (the keys of docs/metrics.md; any key may be missing) and the
run's ``group_size`` (with one response per prompt, as in PPO, every "group" has zero reward variance by
construction, so the zero-variance check does not apply). The
doctor is quiet while the run is healthy. When one of seven conditions holds it emits one
:class:`TrainingDoctorWarning` (a ``UserWarning``) per kind and per run, saying what was seen (with the
numbers), the likely causes and the fix, and it keeps ``doctor/*`` counters for the logger.

>>> doctor = TrainingDoctor(DoctorConfig(zero_std_patience=2))
>>> doctor.update({"rollout/zero_std_groups": 1.0}, iteration=1)
[]
>>> import warnings
>>> with warnings.catch_warnings(record=True):
...     [m.split(":")[0] for m in doctor.update({"rollout/zero_std_groups": 1.0}, iteration=2)]
['llm-gym training doctor [zero_variance] at iteration 2']
>>> doctor.counters["doctor/zero_variance_streak"], doctor.counters["doctor/warnings"]
(2.0, 1.0)

Every threshold is a field of :class:`DoctorConfig`; docs/troubleshooting.md maps each warning to its
causes and fixes. Non-finite values (NaN, inf) are ignored here: the non-finite guard owns them.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "STREAK_KINDS", "DoctorConfig", "TrainingDoctor", "TrainingDoctorWarning", "make_doctor"]

#: The kinds of warning, in check order; each has the counter ``doctor/<kind>``.
KINDS: tuple[str, ...] = ("zero_variance", "entropy_collapse", "kl_explosion", "truncation",
                          "high_clip_fraction", "grad_norm_spike", "reward_hacking")
#: The kinds that need ``patience`` consecutive iterations; each also has the counter ``doctor/<kind>_streak``.
STREAK_KINDS: tuple[str, ...] = ("zero_variance", "entropy_collapse", "truncation", "high_clip_fraction")

_STATE_VERSION = 1
_DOCS = "docs/troubleshooting.md"


class TrainingDoctorWarning(UserWarning):
    """A training-doctor warning: ``warnings.filterwarnings("ignore", category=TrainingDoctorWarning)``."""


@dataclass
class DoctorConfig:
    """The thresholds of :class:`TrainingDoctor`, one documented field each (docs/troubleshooting.md).

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


#: Per kind: the likely causes and the fixes, appended to what was seen.
_ADVICE: dict[str, str] = {
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


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics convertible to a finite float (others, NaN and inf are treated as missing)."""
    clean = {}
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            clean[key] = number
    return clean


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


class TrainingDoctor:
    """Checks each iteration's metrics for seven known failure modes and warns once per kind per run.

    Args:
        config: the thresholds (default :class:`DoctorConfig`'s).
        enabled: False makes :meth:`update` a no-op and :attr:`counters` empty.

    Attributes:
        config: the :class:`DoctorConfig` (may be replaced between iterations).
        enabled: whether :meth:`update` checks anything.
        warned: kind -> iteration at which its warning was emitted.
    """

    def __init__(self, config: DoctorConfig | None = None, enabled: bool = True) -> None:
        self.config = (config or DoctorConfig()).validate()
        self.enabled = bool(enabled)
        self.reset()

    def reset(self) -> None:
        """Forget everything: streaks, counts, histories and which warnings were emitted."""
        self.warned: dict[str, int] = {}
        self._counts = dict.fromkeys(KINDS, 0)
        self._streaks = dict.fromkeys(STREAK_KINDS, 0)
        self._entropy_initial: float | None = None
        self._kl_history: list[float] = []
        self._grad_norm_history: list[float] = []  # updates with a nonzero advantage somewhere
        self._grad_norm_history_kl_only: list[float] = []  # updates where every group's rewards were equal
        self._group_size: int | None = None
        self._hack_history: list[list[float]] = []

    # ------------------------------------------------------------------ public API
    def update(self, metrics: Mapping[str, Any], iteration: int, *, group_size: int | None = None) -> list[str]:
        """Check one iteration's metrics; warn (once per kind per run) for each condition that holds.

        Args:
            metrics: the iteration's metrics, docs/metrics.md keys (``"rollout/zero_std_groups"``...); any key
                may be missing; non-numeric and non-finite values are ignored.
            iteration: the iteration number, quoted in the messages.
            group_size: responses per prompt, G (the learn loop passes its config's). With G = 1 (PPO) every
                group's reward std is 0 by construction, so the zero-variance check is skipped and the
                gradient norms are not treated as KL-only. None: unknown (the checks assume G > 1).

        Returns:
            The messages of the warnings emitted at this iteration (empty when all is well, when disabled,
            and for conditions already warned about).

        Raises:
            ValueError: ``group_size`` is not None or an int >= 1.
        """
        if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int)
                                       or group_size < 1):
            raise ValueError(f"group_size must be an int >= 1 (responses per prompt) or None, got {group_size!r}")
        if not self.enabled:
            return []
        self._group_size = group_size
        m = _finite(metrics)
        raised = []
        for kind, check in self._checks().items():
            if kind in self.config.ignore:
                continue
            seen = check(m)
            if seen is None:
                continue
            self._counts[kind] += 1
            if kind not in self.warned:
                raised.append(self._warn(kind, seen, iteration))
        return raised

    @property
    def counters(self) -> dict[str, float]:
        """The ``doctor/*`` metrics to record: ``doctor/warnings`` (warnings emitted), ``doctor/<kind>``
        (iterations the condition held) and ``doctor/<kind>_streak`` (current streak); empty when disabled."""
        if not self.enabled:
            return {}
        return {"doctor/warnings": float(len(self.warned)),
                **{f"doctor/{kind}": float(n) for kind, n in self._counts.items()},
                **{f"doctor/{kind}_streak": float(n) for kind, n in self._streaks.items()}}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly, as plain JSON-able data (config included)."""
        return {"version": _STATE_VERSION, "config": self.config.to_dict(), "warned": dict(self.warned),
                "counts": dict(self._counts), "streaks": dict(self._streaks),
                "entropy_initial": self._entropy_initial, "kl_history": list(self._kl_history),
                "grad_norm_history": list(self._grad_norm_history),
                "grad_norm_history_kl_only": list(self._grad_norm_history_kl_only),
                "hack_history": [list(pair) for pair in self._hack_history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s data (``enabled`` is left as it is).

        Raises:
            ValueError: an unknown state version or kind.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"TrainingDoctor state version {state.get('version')!r} is not {_STATE_VERSION}")
        unknown = ((set(state["warned"]) | set(state["counts"])) - set(KINDS)) | (set(state["streaks"])
                                                                                 - set(STREAK_KINDS))
        if unknown:
            raise ValueError(f"TrainingDoctor state has unknown kinds {sorted(unknown)}")
        self.config = DoctorConfig.from_dict(state["config"])
        self.warned = {k: int(v) for k, v in state["warned"].items()}
        self._counts = dict.fromkeys(KINDS, 0) | {k: int(v) for k, v in state["counts"].items()}
        self._streaks = dict.fromkeys(STREAK_KINDS, 0) | {k: int(v) for k, v in state["streaks"].items()}
        initial = state["entropy_initial"]
        self._entropy_initial = None if initial is None else float(initial)
        self._kl_history = [float(v) for v in state["kl_history"]]
        self._grad_norm_history = [float(v) for v in state["grad_norm_history"]]
        self._grad_norm_history_kl_only = [float(v) for v in state.get("grad_norm_history_kl_only", [])]
        self._hack_history = [[float(r), float(a)] for r, a in state["hack_history"]]

    # ------------------------------------------------------------------ helpers
    def _checks(self) -> dict[str, Callable[[dict[str, float]], str | None]]:
        """Kind -> check; a check returns what was seen when its condition holds at this iteration, else None."""
        return {"zero_variance": self._check_zero_variance, "entropy_collapse": self._check_entropy,
                "kl_explosion": self._check_kl, "truncation": self._check_truncation,
                "high_clip_fraction": self._check_clip_fraction, "grad_norm_spike": self._check_grad_norm,
                "reward_hacking": self._check_reward_hacking}

    def _warn(self, kind: str, seen: str, iteration: int) -> str:
        self.warned[kind] = int(iteration)
        message = (f"llm-gym training doctor [{kind}] at iteration {iteration}: {seen}. {_ADVICE[kind]} "
                   f"Silence it with DoctorConfig(ignore=({kind!r},)) or adjust its thresholds; see {_DOCS}.")
        warnings.warn(message, TrainingDoctorWarning, stacklevel=3)
        return message

    def _advance(self, kind: str, met: bool) -> int:
        """Extend or reset ``kind``'s streak; returns the new streak."""
        self._streaks[kind] = self._streaks[kind] + 1 if met else 0
        return self._streaks[kind]

    # ------------------------------------------------------------------ the seven checks
    def _all_groups_equal(self, m: dict[str, float]) -> bool:
        """Every group of G > 1 responses had equal rewards: all advantages 0, only the KL term's gradient."""
        return self._group_size != 1 and m.get("rollout/zero_std_groups", 0.0) >= 1.0 - 1e-9

    def _check_zero_variance(self, m: dict[str, float]) -> str | None:
        value = m.get("rollout/zero_std_groups")
        if value is None or self._group_size == 1:  # one response per prompt: its "group" std is always 0
            return None
        cfg = self.config
        streak = self._advance("zero_variance", value >= cfg.zero_std_fraction - 1e-9)
        if streak < cfg.zero_std_patience:
            return None
        seen = (f"rollout/zero_std_groups = {value:.2f} (>= zero_std_fraction={cfg.zero_std_fraction}) for "
                f"{streak} consecutive rollouts: the loss is 0 because every group's rewards are equal, so "
                f"every advantage is 0 and only the KL term (if any) moves the weights (TRL #3857)")
        accuracy = m.get("rollout/accuracy")
        if accuracy is not None and accuracy <= 0.01:
            seen += f"; rollout/accuracy = {accuracy:.2f}: every answer is wrong, the problems are too hard"
        elif accuracy is not None and accuracy >= 0.99:
            seen += f"; rollout/accuracy = {accuracy:.2f}: every answer is right, the problems are too easy"
        return seen

    def _check_entropy(self, m: dict[str, float]) -> str | None:
        entropy = m.get("train/entropy")
        if entropy is None:
            return None
        cfg = self.config
        if self._entropy_initial is None:
            self._entropy_initial = entropy
        initial = self._entropy_initial
        below_floor = entropy < cfg.entropy_floor
        below_ratio = entropy < cfg.entropy_min_ratio * initial
        streak = self._advance("entropy_collapse", below_floor or below_ratio)
        if streak < cfg.entropy_patience:
            return None
        rule = (f"below entropy_floor={cfg.entropy_floor}" if below_floor else
                f"below entropy_min_ratio={cfg.entropy_min_ratio} x its first value {initial:.4f}")
        return (f"train/entropy = {entropy:.4f} nats/token (first value {initial:.4f}) has been {rule} for "
                f"{streak} consecutive updates: the entropy collapsed (verl #5953)")

    def _check_kl(self, m: dict[str, float]) -> str | None:
        cfg = self.config
        kl, approx_kl = m.get("train/kl"), m.get("train/approx_kl")
        seen = []
        if kl is not None and kl > cfg.kl_max:
            seen.append(f"train/kl = {kl:.4g} nats/token > kl_max={cfg.kl_max}")
        if approx_kl is not None and approx_kl > cfg.approx_kl_max:
            seen.append(f"train/approx_kl = {approx_kl:.4g} nats/token > approx_kl_max={cfg.approx_kl_max}")
        if kl is not None:
            window = cfg.kl_growth_window
            self._kl_history = [*self._kl_history, kl][-(window + 1):]
            old = self._kl_history[0]
            if (len(self._kl_history) == window + 1 and kl >= cfg.kl_growth_min
                    and kl >= cfg.kl_growth_factor * old):
                factor = f"x{kl / old:.1f}" if old > 0 else "from 0"
                seen.append(f"train/kl grew from {old:.4g} to {kl:.4g} in {window} updates ({factor}, "
                            f">= kl_growth_factor={cfg.kl_growth_factor} and >= kl_growth_min={cfg.kl_growth_min})")
        return "; ".join(seen) + ": the KL exploded" if seen else None

    def _check_truncation(self, m: dict[str, float]) -> str | None:
        value = m.get("rollout/truncated_fraction")
        if value is None:
            return None
        cfg = self.config
        streak = self._advance("truncation", value > cfg.truncated_max)
        if streak < cfg.truncated_patience:
            return None
        return (f"rollout/truncated_fraction = {value:.2f} has been above truncated_max={cfg.truncated_max} "
                f"for {streak} consecutive rollouts: most responses hit max_new_tokens before EOS")

    def _check_clip_fraction(self, m: dict[str, float]) -> str | None:
        value = m.get("train/clip_fraction")
        if value is None:
            return None
        cfg = self.config
        streak = self._advance("high_clip_fraction", value > cfg.clip_fraction_max)
        if streak < cfg.clip_fraction_patience:
            return None
        return (f"train/clip_fraction = {value:.2f} has been above clip_fraction_max={cfg.clip_fraction_max} "
                f"for {streak} consecutive updates: most of the gradient is cut by the clip")

    def _check_grad_norm(self, m: dict[str, float]) -> str | None:
        """A norm far above the running median of the same regime's norms.

        Updates where every group's rewards were equal (only the KL term's gradient) and the others are two
        regimes with their own histories, so a switch between them is not a spike, and a spike inside
        either one is seen (with G = 1 there is one regime). KL-only norms below ``grad_norm_min`` never count.
        """
        norm = m.get("train/grad_norm")
        if norm is None:
            return None
        cfg = self.config
        kl_only = self._all_groups_equal(m)
        history = self._grad_norm_history_kl_only if kl_only else self._grad_norm_history
        recent = history[-cfg.grad_norm_window:]
        history[:] = [*recent, norm][-cfg.grad_norm_window:]
        regime = " KL-only" if kl_only else ""
        if kl_only and norm < cfg.grad_norm_min:
            return None
        if len(recent) < cfg.grad_norm_min_history:  # too few for a median: only a huge jump counts
            largest = max(recent, default=0.0)
            if largest <= 0 or norm <= cfg.grad_norm_factor ** 2 * largest:
                return None
            return (f"train/grad_norm = {norm:.4g} is {norm / largest:.1f}x the largest of the {len(recent)}{regime} "
                    f"update(s) so far ({largest:.4g}; > grad_norm_factor**2={cfg.grad_norm_factor ** 2:g}): a "
                    f"gradient spike")
        median = statistics.median(recent)
        if median <= 0 or norm <= cfg.grad_norm_factor * median:
            return None
        return (f"train/grad_norm = {norm:.4g} is {norm / median:.1f}x the running median {median:.4g} of the "
                f"last {len(recent)}{regime} updates (> grad_norm_factor={cfg.grad_norm_factor}): a gradient spike")

    def _check_reward_hacking(self, m: dict[str, float]) -> str | None:
        cfg = self.config
        reward, accuracy = m.get(cfg.hack_reward_key), m.get(cfg.hack_accuracy_key)
        if reward is None or accuracy is None:
            return None
        w = cfg.hack_window
        self._hack_history = [*self._hack_history, [reward, accuracy]][-2 * w:]
        if len(self._hack_history) < 2 * w:
            return None
        previous, last = self._hack_history[:w], self._hack_history[w:]
        rise = _mean([r for r, _ in last]) - _mean([r for r, _ in previous])
        drop = _mean([a for _, a in previous]) - _mean([a for _, a in last])
        if rise < cfg.hack_min_reward_rise or drop < cfg.hack_min_accuracy_drop:
            return None
        return (f"over the last {w} iterations vs the {w} before, {cfg.hack_reward_key} rose by {rise:.3f} "
                f"(>= hack_min_reward_rise={cfg.hack_min_reward_rise}) while {cfg.hack_accuracy_key} fell by "
                f"{drop:.3f} (>= hack_min_accuracy_drop={cfg.hack_min_accuracy_drop})")


def make_doctor(doctor: bool | DoctorConfig | TrainingDoctor | None = True) -> TrainingDoctor:
    """The doctor for an algorithm's ``doctor=`` keyword.

    Args:
        doctor: True or None (default thresholds), False (disabled), a :class:`DoctorConfig` or a
            :class:`TrainingDoctor` (used as is).

    Raises:
        TypeError: any other value.
    """
    if isinstance(doctor, TrainingDoctor):
        return doctor
    if isinstance(doctor, DoctorConfig):
        return TrainingDoctor(doctor)
    if doctor is None or isinstance(doctor, bool):
        return TrainingDoctor(enabled=doctor is not False)
    raise TypeError(f"doctor must be a bool, a DoctorConfig or a TrainingDoctor, got {type(doctor).__name__}")
