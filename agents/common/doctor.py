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

Every threshold is a field of :class:`DoctorConfig`; it, the kinds and each kind's advice live in
:mod:`agents.common.doctor_config` and are re-exported here. docs/troubleshooting.md maps each warning to its
causes and fixes. Non-finite values (NaN, inf) are ignored here: the non-finite guard owns them.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from agents.common.doctor_config import ADVICE, KINDS, STREAK_KINDS, DoctorConfig

__all__ = ["KINDS", "STREAK_KINDS", "DoctorConfig", "TrainingDoctor", "TrainingDoctorWarning", "make_doctor"]

_STATE_VERSION = 1
_DOCS = "docs/troubleshooting.md"


class TrainingDoctorWarning(UserWarning):
    """A training-doctor warning: ``warnings.filterwarnings("ignore", category=TrainingDoctorWarning)``."""


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
    """The arithmetic mean of a non-empty list."""
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
        message = (f"llm-gym training doctor [{kind}] at iteration {iteration}: {seen}. {ADVICE[kind]} "
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
