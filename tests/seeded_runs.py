"""Seeded runs on the tiny model whose final weights and logged scalars pin the engine's numbers.

A structural change (how rewards are scored, where the config lives, how modules are split) must not change
a single number a run produces. This script runs six short seeded trainings through the public API only
(GRPO on a sequence env with the built-in reward wrappers and on a group vector env, PPO at token level, DAPO with dynamic sampling,
multi-turn GRPO on ``LLMGuessNumber-v0`` and on ``LLMToolMath-v0``) and records, for each:

- ``weights_sha256``: the SHA-256 of every parameter's bytes, in ``named_parameters`` order;
- ``weights_sum`` / ``weights_abs_sum``: float checksums, for a comparison on another CPU or torch build,
  where the bytes may legitimately differ (other matmul kernels);
- ``scalars``: every value the SB3 logger recorded, per dump, except wall-clock ones (``time/*``).

``tests/test_seeded_runs.py`` compares a fresh run with ``tests/golden/seeded_runs.json``: byte-identical
weights and equal scalars on the platform that wrote the file (same torch version and CPU capability),
close values elsewhere. Regenerate the file only when a change is *meant* to change the numbers::

    python tests/seeded_runs.py --write tests/golden/seeded_runs.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

if __name__ == "__main__":  # run as a script: import this checkout's packages, not tests/agents
    sys.path[0] = str(Path(__file__).resolve().parents[1])

RUNS = ("grpo_sequence_wrappers", "grpo_group_vec", "ppo_token", "dapo_sequence", "grpo_guess_number", "grpo_tool_math")


def digit_reward(prompts, responses, answers, **fields):
    """Fraction of digits in each response: a dense reward the tiny random model can move."""
    return [sum(c.isdigit() for c in r) / max(len(r), 1) for r in responses]


def _recorder():
    """An SB3 ``KVWriter`` keeping every dump in memory (time-dependent keys dropped)."""
    from stable_baselines3.common.logger import KVWriter

    class Recorder(KVWriter):
        def __init__(self):
            self.dumps: list[dict[str, float]] = []

        def write(self, key_values, key_excluded, step=0):
            kept = {k: float(v) for k, v in key_values.items()
                    if not k.startswith("time/") and isinstance(v, (int, float, np.floating, np.integer))}
            self.dumps.append(dict(sorted(kept.items())) | {"_step": int(step)})

        def close(self):
            pass

    return Recorder()


def _env(run: str, model_dir: str):
    import gymnasium as gym

    import llm_gym
    from llm_gym.wrappers import (
        ClipReward,
        FormatReward,
        LengthPenalty,
        OverlongPenalty,
        RewardFunction,
        ScaleReward,
    )

    common = {"model": model_dir, "device": "cpu"}
    if run == "grpo_sequence_wrappers":
        env = gym.make("LLMMath-v0", max_new_tokens=8, n_problems=20, max_prompt_length=96, **common)
        env = RewardFunction(env, digit_reward, weight=0.5)
        env = FormatReward(env, weight=0.25, pattern=r"\d")
        env = LengthPenalty(env, coef=0.01)
        env = OverlongPenalty(env, overlong_buffer=4)
        env = ScaleReward(env, 2.0)
        return ClipReward(env, -1.0, 1.5)
    if run == "grpo_group_vec":
        return llm_gym.make_group_vec_env("LLMMath-v0", n_envs=8, max_new_tokens=8, n_problems=20,
                                          max_prompt_length=96, wrapper_class=LengthPenalty,
                                          wrapper_kwargs={"coef": 0.05}, reward_fn=digit_reward, **common)
    if run == "ppo_token":
        return llm_gym.make_group_vec_env("LLMMathToken-v0", n_envs=8, max_new_tokens=8, n_problems=20,
                                          reward_fn=digit_reward, **common)
    if run == "dapo_sequence":
        return llm_gym.SequenceEnv(max_new_tokens=8, n_problems=20, max_prompt_length=96, reward_fn=digit_reward,
                                   **common)
    if run == "grpo_guess_number":
        return llm_gym.make_group_vec_env("LLMGuessNumber-v0", n_envs=4, max_new_tokens=6, max_prompt_length=None,
                                          max_turns=3, max_message_tokens=64, **common)
    if run == "grpo_tool_math":
        return gym.make("LLMToolMath-v0", max_new_tokens=8, max_turns=2, **common)
    raise ValueError(f"unknown run {run!r}; runs: {RUNS}")


def run_one(run: str, model_dir: str) -> dict:
    """Train one seeded run and return its fingerprint (see the module docstring)."""
    from stable_baselines3.common.logger import Logger

    from agents import DAPO, GRPO, PPO

    torch.manual_seed(0)
    env = _env(run, model_dir)
    if run == "ppo_token":
        model = PPO("LLMActorCriticPolicy", env, n_prompts=8, group_size=1, n_epochs=2, learning_rate=1e-2,
                    seed=0, device="cpu")
        steps = 3 * 8 * 8
    elif run == "dapo_sequence":
        model = DAPO("LLMPolicy", env, n_prompts=2, group_size=4, learning_rate=1e-2, max_sampling_rounds=2,
                     seed=0, device="cpu")
        steps = 3 * 8
    else:
        model = GRPO("LLMPolicy", env, n_prompts=2, group_size=2 if "guess" in run or "tool" in run else 4,
                     learning_rate=1e-2, beta=0.04, seed=0, device="cpu")
        steps = 3 * model.rollout_size
    recorder = _recorder()
    model.set_logger(Logger(folder=None, output_formats=[recorder]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.learn(steps, log_interval=1)
    digest = hashlib.sha256()
    weights_sum = weights_abs = 0.0
    for _, p in model.policy.named_parameters():
        data = p.detach().cpu().contiguous()
        digest.update(data.numpy().tobytes())
        weights_sum += float(data.double().sum())
        weights_abs += float(data.double().abs().sum())
    return {"weights_sha256": digest.hexdigest(), "weights_sum": weights_sum, "weights_abs_sum": weights_abs,
            "scalars": recorder.dumps}


def platform() -> dict[str, str]:
    """What decides whether weights can be byte-identical: torch's version and the CPU kernels it picks."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": "1"}


def run_all(model_dir: str, runs=RUNS) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {"platform": platform(), "runs": {run: run_one(run, model_dir) for run in runs}}
    finally:
        torch.set_num_threads(threads)


def compare(golden: dict, fresh: dict) -> list[str]:
    """Differences between two fingerprints (empty when they agree). Exact on the golden platform."""
    exact = golden["platform"] == fresh["platform"]
    problems = []
    for run, want in golden["runs"].items():
        got = fresh["runs"][run]
        if exact and got["weights_sha256"] != want["weights_sha256"]:
            problems.append(f"{run}: weights differ (sha256 {got['weights_sha256'][:12]} != {want['weights_sha256'][:12]})")
        for key in ("weights_sum", "weights_abs_sum"):
            if not (got[key] == want[key] if exact else math.isclose(got[key], want[key], rel_tol=1e-4)):
                problems.append(f"{run}: {key} {got[key]!r} != {want[key]!r}")
        if len(got["scalars"]) != len(want["scalars"]):
            problems.append(f"{run}: {len(got['scalars'])} logger dumps != {len(want['scalars'])}")
            continue
        for i, (g, w) in enumerate(zip(got["scalars"], want["scalars"], strict=True)):
            if set(g) != set(w):
                problems.append(f"{run}: dump {i} keys differ: +{sorted(set(g) - set(w))} -{sorted(set(w) - set(g))}")
                continue
            for key in w:
                a, b = g[key], w[key]
                same = (a == b or (math.isnan(a) and math.isnan(b))) if exact else (
                    math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-5) or (math.isnan(a) and math.isnan(b)))
                if not same:
                    problems.append(f"{run}: dump {i} {key}: {a!r} != {b!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="write the fingerprint JSON here")
    parser.add_argument("--check", type=Path, help="compare with this fingerprint JSON")
    parser.add_argument("--model-dir", help="tiny model folder (default: build one in a temporary folder)")
    args = parser.parse_args(argv)
    import tempfile

    from llm_gym.models import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or str(build_tiny_model(Path(tmp) / "tiny"))
        fresh = run_all(model_dir)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(fresh, indent=1, sort_keys=True) + "\n")
    if args.check:
        problems = compare(json.loads(args.check.read_text()), fresh)
        print("\n".join(problems) or "identical")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
