"""``llm-gym check``: a conformance and learnability report for any llm-gym env, ours or a third party's.

:func:`run_checks` builds the env and runs, in order:

- conformance (:mod:`agents.check.conformance`): Gymnasium's and SB3's ``check_env``, reward determinism, and
  token consistency on multi-step envs;
- reward-hack probes (:mod:`agents.check.probes`): an empty answer, the question copied back, a repeated token,
  an invalid move or tool call (none may beat a wrong answer) and the gold answer stated twice (may not beat
  the gold answer once);
- learnability (:mod:`agents.check.learnability`): a short :class:`agents.GRPO` run on the given model, with the
  reward of each iteration and the fraction of zero-variance groups.

Every check is a :class:`~agents.check.report.CheckResult`; a failing env is a finding, never an exception. The
command line (docs/check.md) prints the table and writes the JSON of :mod:`agents.check.report`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from agents.check.conformance import gymnasium_checker, reward_determinism, sb3_checker, token_consistency
from agents.check.learnability import grpo_run
from agents.check.play import is_token_env
from agents.check.probes import ANSWER_FORMATS, NO_GOLD_ANSWER, problem_view, run_probes, wrong_value
from agents.check.report import (
    CONFORMANCE,
    EXIT_CONFORMANCE,
    EXIT_OK,
    EXIT_REWARD_HACK,
    CheckResult,
    EnvReport,
    print_reports,
    write_json,
)
from agents.env_ids import EnvError, check_env_id, entry_point_class, fit_kwargs, require_llm_env

__all__ = ["EXIT_CONFORMANCE", "EXIT_OK", "EXIT_REWARD_HACK", "CheckResult", "EnvReport", "make_checked_env",
           "print_reports", "run_checks", "write_json"]


def make_checked_env(env_id: str, model: Any = None, device: str = "auto", env_kwargs: dict[str, Any] | None = None
                     ) -> tuple[gym.Env, dict[str, Any]]:
    """``gym.make`` the env to check on ``model``, with ``env_kwargs``; returns it and the keywords used.

    Raises:
        EnvError: an unknown id, a keyword the env does not take, or not an llm-gym env.
        Exception: whatever the env's constructor raises (a missing extra's ImportError, a bad keyword's
            ValueError...).
    """
    spec = check_env_id(env_id)
    require_llm_env(entry_point_class(spec), env_id)
    env_kwargs = dict(env_kwargs or {})
    kwargs = fit_kwargs(spec, {"model": model, "device": device, **env_kwargs},
                        dict.fromkeys(env_kwargs, "--env-kwargs"))
    env = gym.make(env_id, **kwargs)
    require_llm_env(env, env_id)
    return env, kwargs


def _guarded(name: str, check: Callable[[], CheckResult | list[CheckResult]]) -> list[CheckResult]:
    """Run one check; an exception from the env is a failed conformance check named ``name``."""
    try:
        result = check()
    except Exception as exc:  # noqa: BLE001  (the env raised under the check: that is the finding)
        return [CheckResult(name, CONFORMANCE, "fail", f"the env raised {type(exc).__name__}: {exc}"[:500],
                            {"error": f"{type(exc).__name__}: {exc}"})]
    return result if isinstance(result, list) else [result]


def _responses(env: gym.Env, problem_ids: range) -> dict[int, list[str]]:
    """Per problem, the responses the determinism check replays: a wrong answer and the gold answer."""
    out = {}
    for k in problem_ids:
        view = problem_view(env, k)
        out[k] = [NO_GOLD_ANSWER] if view.answer is None else [
            ANSWER_FORMATS[0].format(wrong_value(view.answer)), ANSWER_FORMATS[0].format(view.answer)]
    return out


def _grpo_env(env_id: str, env: gym.Env, kwargs: dict[str, Any], n_envs: int) -> Callable[[], gym.Env]:
    """A builder of the env GRPO trains on (the checked env's model handle shared): a GroupVecEnv for a token env."""
    from llm_gym import make_group_vec_env

    shared = {**kwargs, "model": env.unwrapped.lm} if "model" in kwargs else dict(kwargs)
    if is_token_env(env):
        return lambda: make_group_vec_env(env_id, n_envs=n_envs, **shared)
    return lambda: gym.make(env_id, **shared)


def run_checks(env_id: str, model: Any = None, device: str = "auto", env_kwargs: dict[str, Any] | None = None,
               problems: int = 2, repeats: int = 3, grpo_iterations: int = 5, n_prompts: int = 4,
               group_size: int = 8, learning_rate: float = 2e-5, seed: int = 0) -> EnvReport:
    """Check one env: conformance, reward-hack probes and (``grpo_iterations`` > 0) learnability.

    Args:
        env_id: Any id ``gym.make`` takes (llm-gym's, a plugin's, ``module:EnvId``).
        model: The model (folder, ``.gguf``, hub id; None / ``"default"`` = the default model).
        device: Torch device.
        env_kwargs: More keywords of the env.
        problems: Problems the determinism, token and probe checks play (the first ones of the env).
        repeats: Plays per response in the determinism check.
        grpo_iterations: GRPO rollouts in the learnability run (0 = skip it).
        n_prompts: Prompts per GRPO rollout.
        group_size: Responses per prompt (G).
        learning_rate: GRPO's learning rate.
        seed: Seed of the sampled turns and of GRPO.

    Returns:
        The :class:`EnvReport`; ``error`` set when the env could not be built.

    Raises:
        EnvError: an unknown env id, a keyword the env does not take (a usage error, before anything loads), or a
            missing optional package (the message names the extra).
    """
    start = time.perf_counter()
    report = EnvReport(env_id, dict(env_kwargs or {}))
    check_env_id(env_id)
    try:
        env, kwargs = make_checked_env(env_id, model, device, env_kwargs)
    except EnvError as exc:
        if "not an llm-gym env" not in str(exc):
            raise
        report.error = str(exc)
    except ImportError as exc:  # a missing optional extra: the message names it
        raise EnvError(f"env {env_id!r} needs a package that is not installed: {exc}") from exc
    except Exception as exc:  # noqa: BLE001  (an env that cannot be built fails the check)
        report.error = f"the env could not be built: {type(exc).__name__}: {exc}"
    if report.error is None:
        report.env_kwargs = kwargs
        ids = range(min(problems, env.unwrapped.n_problems))
        report.checks += _guarded("gymnasium_check_env", lambda: gymnasium_checker(env))
        report.checks += _guarded("sb3_check_env", lambda: sb3_checker(env))
        report.checks += _guarded("reward_determinism", lambda: reward_determinism(env, _responses(env, ids), repeats))
        report.checks += _guarded("token_consistency", lambda: token_consistency(env, ids, seed=seed))
        report.checks += _guarded("reward_hack_probes", lambda: run_probes(env, ids))
        if grpo_iterations > 0:
            make = _grpo_env(env_id, env, kwargs, n_prompts * group_size)
            report.checks += _guarded("grpo_run", lambda: grpo_run(make, grpo_iterations, n_prompts, group_size,
                                                                   learning_rate, seed, device))
        env.close()
    report.seconds = time.perf_counter() - start
    return report
