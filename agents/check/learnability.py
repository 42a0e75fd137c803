"""Learnability of ``llm-gym check``: a short GRPO run on the env, before anyone spends a GPU-day on it.

GRPO learns only from groups whose rewards differ (``rollout/zero_std_groups`` counts the others: their advantages
are all zero). A task where nearly every group is uniform for the given model has no signal, however long it
trains: it is flagged (``warn``), with the reward of every iteration and whether it moved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.logger import KVWriter, Logger

from agents.check.report import CONFORMANCE, LEARNABILITY, CheckResult

__all__ = ["MOVED", "NO_SIGNAL_FRACTION", "MetricsRecorder", "grpo_run", "signal_verdict"]

#: Flag the task when at least this fraction of the groups had zero reward variance (over all iterations).
NO_SIGNAL_FRACTION = 0.9
#: The mean reward "moved" when its second half of iterations differs from its first half by more than this.
MOVED = 1e-3


class MetricsRecorder(KVWriter):
    """An SB3 logger output that keeps every dump (one per iteration) as a dict in :attr:`rows`."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        """Keep the numbers of one dump (SB3's ``KVWriter.write``)."""
        self.rows.append({k: float(v) for k, v in key_values.items() if isinstance(v, (int, float, np.number))})


def signal_verdict(rewards: list[float], zero_std: list[float], accuracy: list[float]) -> CheckResult:
    """The learnability result of per-iteration metrics (mean reward, zero-variance fraction, accuracy).

    >>> signal_verdict([0.0, 0.0], [1.0, 1.0], [0.0, 0.0]).status
    'warn'
    >>> signal_verdict([0.2, 0.5], [0.25, 0.5], [0.2, 0.5]).status
    'pass'
    """
    half = max(1, len(rewards) // 2)
    delta = float(np.mean(rewards[-half:]) - np.mean(rewards[:half])) if len(rewards) > 1 else 0.0
    moved = abs(delta) > MOVED
    zero = float(np.mean(zero_std)) if zero_std else 1.0
    data = {"rewards": rewards, "zero_std_groups": zero_std, "accuracy": accuracy, "reward_delta": delta,
            "reward_moved": moved, "zero_std_fraction": zero}
    detail = (f"reward {rewards[0]:.3g} -> {rewards[-1]:.3g} over {len(rewards)} iteration(s) "
              f"({'moved' if moved else 'did not move'}, {delta:+.3g}); zero-variance groups {zero:.0%}")
    if zero >= NO_SIGNAL_FRACTION:
        return CheckResult("grpo_run", LEARNABILITY, "warn", f"{detail}: little or no signal for GRPO with this model "
                           f"(an easier task, a curriculum or a stronger model)", data)
    return CheckResult("grpo_run", LEARNABILITY, "pass", detail, data)


def grpo_run(make_env: Callable[[], gym.Env], iterations: int = 5, n_prompts: int = 4, group_size: int = 8,
             learning_rate: float = 2e-5, seed: int = 0, device: str = "auto") -> CheckResult:
    """Train :class:`agents.GRPO` for ``iterations`` rollouts of ``n_prompts x group_size`` and judge the signal.

    Args:
        make_env: Builds the env to train on (a ``GroupVecEnv`` for a token env).
        iterations: Rollouts (each followed by its update).
        n_prompts: Prompts per rollout.
        group_size: Responses per prompt (G).
        learning_rate: GRPO's learning rate (the CPU profile of ``llm-gym train``).
        seed: GRPO's seed.
        device: Torch device.

    Returns:
        :func:`signal_verdict` of the run (``learnability``); a ``conformance`` failure when GRPO cannot run on
        the env (the error is the detail).
    """
    from agents import GRPO

    recorder = MetricsRecorder()
    try:
        algo = GRPO("LLMPolicy", make_env(), n_prompts=n_prompts, group_size=group_size, learning_rate=learning_rate,
                    seed=seed, device=device, verbose=0, doctor=False, stats_window_size=n_prompts * group_size)
        algo.set_logger(Logger(folder=None, output_formats=[recorder]))
        for i in range(iterations):  # one rollout each: learn() rounds up to whole rollouts
            algo.learn(1, reset_num_timesteps=i == 0)
    except Exception as exc:  # noqa: BLE001  (an env GRPO cannot train on is the finding)
        return CheckResult("grpo_run", CONFORMANCE, "fail", f"GRPO could not train on the env: "
                           f"{type(exc).__name__}: {exc}"[:500], {"error": f"{type(exc).__name__}: {exc}"})
    rows = [r for r in recorder.rows if "rollout/ep_rew_mean" in r]
    if not rows:
        return CheckResult("grpo_run", CONFORMANCE, "fail", "GRPO ran but no episode finished in any iteration")
    return signal_verdict([r["rollout/ep_rew_mean"] for r in rows],
                          [r.get("rollout/zero_std_groups", 1.0) for r in rows],
                          [r.get("rollout/accuracy", float("nan")) for r in rows])
