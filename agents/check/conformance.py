"""Conformance checks of ``llm-gym check``: the two Gymnasium checkers, reward determinism, token consistency.

Each function takes a built env and returns one :class:`~agents.check.report.CheckResult` of kind
``conformance``; a failure is a finding (the result's ``status`` is ``"fail"``), never an exception.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from agents.check.play import is_token_env, play, real_ids, sample_turn, visible_ids
from agents.check.report import CONFORMANCE, CheckResult

__all__ = ["gymnasium_checker", "reward_determinism", "sb3_checker", "token_consistency"]

# Reward differences below this are rounding, not non-determinism.
TOLERANCE = 1e-6
# Terminal colour codes in Gymnasium's warnings.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _run_checker(name: str, checker: Callable[[], Any]) -> CheckResult:
    """Run a checker; its exception is the failure, its warnings are kept in ``data["warnings"]``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            checker()
        except Exception as exc:  # noqa: BLE001  (any error of the env under the checker is the finding)
            return CheckResult(name, CONFORMANCE, "fail", f"{type(exc).__name__}: {exc}".strip()[:500],
                               {"error": f"{type(exc).__name__}: {exc}"})
    messages = sorted({_ANSI.sub("", str(w.message)).strip() for w in caught})
    detail = f"passed with {len(messages)} warning(s) (in the JSON)" if messages else "passed"
    return CheckResult(name, CONFORMANCE, "pass", detail, {"warnings": messages})


def gymnasium_checker(env: gym.Env) -> CheckResult:
    """``gymnasium.utils.env_checker.check_env`` on the unwrapped env (render check skipped)."""
    from gymnasium.utils.env_checker import check_env

    return _run_checker("gymnasium_check_env", lambda: check_env(env.unwrapped, skip_render_check=True))


def sb3_checker(env: gym.Env) -> CheckResult:
    """``stable_baselines3.common.env_checker.check_env`` on the unwrapped env (what SB3's VecEnv and Monitor need)."""
    from stable_baselines3.common.env_checker import check_env

    return _run_checker("sb3_check_env", lambda: check_env(env.unwrapped, warn=True, skip_render_check=True))


def _random_turn(lm: Any, max_new_tokens: int, seed: int) -> np.ndarray:
    """Token ids drawn uniformly from the vocabulary, without special tokens: ``(T // 2,)`` int64."""
    special = set(lm.tokenizer.all_special_ids)
    choices = np.array([i for i in range(lm.vocab_size) if i not in special])
    return np.random.default_rng(seed).choice(choices, size=max(1, max_new_tokens // 2)).astype(np.int64)


def reward_determinism(env: gym.Env, responses: Mapping[int, Sequence[str]], repeats: int = 3) -> CheckResult:
    """The same response earns the same reward: each response (and random token ids) played ``repeats`` times.

    Every repeat resets to the same problem with a different seed (a reward that draws from the env's
    ``np_random`` is caught too) and compares the per-step rewards.

    Args:
        env: The env.
        responses: ``problem_id -> texts`` to replay on it (the checks use a wrong answer and the gold answer).
        repeats: Plays per (problem, response), at least 2.
    """
    base = env.unwrapped
    worst: dict[str, Any] = {"spread": 0.0}
    noise = _random_turn(base.lm, base.max_new_tokens, seed=0)
    for k, texts in responses.items():
        for t, turn in enumerate([*texts, noise]):
            played = [play(env, (lambda i, obs, turn=turn: turn), k, seed=r) for r in range(max(2, repeats))]
            steps = [e.rewards for e in played]
            if len({len(s) for s in steps}) > 1:
                return CheckResult("reward_determinism", CONFORMANCE, "fail",
                                   f"problem {k}, response {t}: the same turns gave episodes of {sorted({len(s) for s in steps})} "
                                   f"steps", {"problem_id": k, "response": t, "rewards": steps})
            spread = float(np.max(np.ptp(np.asarray(steps, dtype=float), axis=0)))
            if spread > worst["spread"]:
                worst = {"spread": spread, "problem_id": k, "response": t, "rewards": steps}
    n = sum(len(texts) + 1 for texts in responses.values())
    if worst["spread"] > TOLERANCE:
        return CheckResult("reward_determinism", CONFORMANCE, "fail",
                           f"the same response earned different rewards: {worst['rewards']} on problem "
                           f"{worst['problem_id']} (spread {worst['spread']:.4g})", worst)
    return CheckResult("reward_determinism", CONFORMANCE, "pass",
                       f"{n} responses x {max(2, repeats)} plays: identical rewards", worst | {"responses": n})


def _turn_mismatch(before: dict[str, np.ndarray], after: dict[str, np.ndarray], turn: np.ndarray) -> str | None:
    """Why ``after`` is not ``before`` + the turn's ids verbatim (and, with an ``assistant_mask``, marked as the
    policy's); None when it is."""
    old, new = visible_ids(before), visible_ids(after)
    if len(new) < len(old) + len(turn) or not np.array_equal(new[: len(old)], old):
        return "the conversation so far changed (it is not a prefix of the next observation)"
    got = new[len(old): len(old) + len(turn)]
    if not np.array_equal(got, turn):
        return f"the sampled ids {turn.tolist()[:12]}... came back as {got.tolist()[:12]}..."
    if "assistant_mask" in after:
        mask = np.asarray(after["assistant_mask"])[np.asarray(after["attention_mask"]).astype(bool)]
        if not mask[len(old): len(old) + len(turn)].all():
            return "the sampled ids are not all marked in assistant_mask"
    return None


def token_consistency(env: gym.Env, problem_ids: Sequence[int], max_turns: int = 3, seed: int = 0) -> CheckResult:
    """Multi-step envs: the ids the policy sampled are exactly the ids in the next observation.

    On each problem two episodes are played: turns sampled from the env's model, and random token ids (which a
    re-tokenising env is likely to change). After every step the observation must be the previous one's tokens,
    then the turn's tokens verbatim (up to its EOS); a token env's step appends its one token. A sequence env
    (one step, the observation is the prompt) is skipped.

    Args:
        env: The env.
        problem_ids: The problems to play.
        max_turns: Steps checked per episode (token envs: every token of the response).
        seed: Sampling seed.
    """
    base = env.unwrapped
    if not is_token_env(env) and "assistant_mask" not in env.observation_space.spaces:
        return CheckResult("token_consistency", CONFORMANCE, "skip",
                           "single-step env: the observation is the prompt, no sampled ids come back")
    lm, budget = base.lm, base.max_new_tokens
    sources = {"sampled": lambda i, obs: sample_turn(lm, obs, budget, seed=seed + i),
               "random": lambda i, obs: _random_turn(lm, budget, seed=seed + i)}
    checked = 0
    for k in problem_ids:
        for source, turn_fn in sources.items():
            episode = play(env, turn_fn, k, seed=seed)
            for i, action in enumerate(episode.actions[: max_turns if not is_token_env(env) else None]):
                turn = np.array([action]) if is_token_env(env) else real_ids(lm, action)
                problem = _turn_mismatch(episode.observations[i], episode.observations[i + 1], turn)
                checked += 1
                if problem is not None:
                    return CheckResult("token_consistency", CONFORMANCE, "fail",
                                       f"problem {k}, step {i} ({source} ids): {problem}",
                                       {"problem_id": k, "step": i, "source": source, "turn": turn.tolist()})
    return CheckResult("token_consistency", CONFORMANCE, "pass",
                       f"{checked} steps: the sampled ids came back verbatim", {"steps": checked})
