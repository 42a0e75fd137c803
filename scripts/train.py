"""Train a language model with RL on an llm-gym env: the README's main job.

Evaluates greedy accuracy on a held-out split, trains (progress bar, TensorBoard logs), evaluates
again, saves the algorithm (SB3 zip) and a plain Hugging Face folder, and writes a results JSON.

Example (the defaults: SmolLM2-135M-Instruct, arithmetic curriculum, about 10 minutes on 2 CPU cores)::

    python scripts/train.py --algo grpo --env LLMMath-v0
    python scripts/train.py --algo ppo --env LLMMathToken-v0     # token level, critic, KL in the reward
    python scripts/train.py --algo dapo --batch-size 8           # clip-higher, dynamic sampling, overlong penalty
    python scripts/train.py --algo gspo --batch-size 8           # sequence-level ratio, clipped per sequence
    tensorboard --logdir runs/
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import gymnasium as gym
import torch

import llm_gym  # noqa: F401  (registers the envs)
from agents import DAPO, GRPO, GSPO, PPO, OnlineRFT
from agents.common.evaluation import evaluate_accuracy
from llm_gym import TOKEN_ENV_IDS, make_group_vec_env

ALGORITHMS = {"grpo": GRPO, "ppo": PPO, "dapo": DAPO, "gspo": GSPO, "rft": OnlineRFT}
# Per-algorithm defaults for flags left unset (CPU-sized; see docs/benchmarks.md for the runs they give).
ALGO_DEFAULTS = {
    "grpo": {"n_prompts": 4, "group_size": 8, "n_epochs": 1, "batch_size": None, "learning_rate": 2e-5,
             "beta": 0.04, "total_timesteps": 320},
    # DAPO, GSPO and Online RFT: GRPO's budget; beta 0 as in their papers (Online RFT has no KL either).
    "dapo": {"n_prompts": 4, "group_size": 8, "n_epochs": 1, "batch_size": None, "learning_rate": 2e-5,
             "beta": 0.0, "total_timesteps": 320},
    "gspo": {"n_prompts": 4, "group_size": 8, "n_epochs": 1, "batch_size": None, "learning_rate": 2e-5,
             "beta": 0.0, "total_timesteps": 320},
    "rft": {"n_prompts": 4, "group_size": 8, "n_epochs": 1, "batch_size": None, "learning_rate": 2e-5,
            "beta": 0.0, "total_timesteps": 320},
    "ppo": {"n_prompts": 32, "group_size": 1, "n_epochs": 2, "batch_size": 16, "learning_rate": 1e-5,
            "beta": 0.05, "total_timesteps": 7100},
}


def build_parser() -> argparse.ArgumentParser:
    """Every flag with its meaning; the same text is ``--help``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--algo", default="grpo", choices=sorted(ALGORITHMS), help="RL algorithm.")
    add("--env", default="LLMMath-v0", help="Registered env id (LLMMath-v0, LLMGSM8K-v0, ...).")
    add("--model", default=None, help="HF folder, .gguf file or hub id; default SmolLM2-135M-Instruct.")
    add("--difficulty", type=int, nargs="+", default=None, help="Arithmetic levels (env default: 1 2).")
    add("--total-timesteps", type=int, default=None,
        help="Env steps to train on: responses (sequence envs) or tokens (token envs); rounded up to whole "
             "rollouts. Default: grpo 320, ppo 7100 (the tokens the GRPO default generates).")
    add("--n-prompts", type=int, default=None, help="Prompts per rollout (default: grpo 4, ppo 32).")
    add("--group-size", type=int, default=None, help="Responses per prompt G (default: grpo 8, ppo 1).")
    add("--batch-size", type=int, default=None, help="Sequences per optimizer step (default: whole rollout).")
    add("--micro-batch-size", type=int, default=8, help="Sequences per forward/backward (grad accumulation).")
    add("--n-epochs", type=int, default=None, help="Passes over each rollout (default: grpo 1, ppo 2).")
    add("--learning-rate", type=float, default=None, help="AdamW learning rate (default: grpo 2e-5, ppo 1e-5).")
    add("--beta", type=float, default=None, help="KL coefficient to the reference model, in the loss (grpo, default 0.04) or the reward "
        "(ppo, default 0.05); 0 = no reference model.")
    add("--clip-range", type=float, default=None,
        help="Clip epsilon (low); default: the algorithm's (0.2; GSPO 3e-4).")
    add("--clip-range-high", type=float, default=None,
        help="Upper clip epsilon; default: the algorithm's (= clip-range; DAPO 0.28, GSPO 4e-4).")
    add("--max-sampling-rounds", type=int, default=None, help="DAPO: generation rounds per iteration (default 4).")
    add("--scale-rewards", default="group", choices=["group", "batch", "none"], help="Advantage scaling.")
    add("--temperature", type=float, default=0.7, help="Sampling temperature (also used for log-probs).")
    add("--top-p", type=float, default=1.0, help="Nucleus sampling threshold (1.0 = off).")
    add("--max-new-tokens", type=int, default=None, help="Response budget in tokens (env default: 64).")
    add("--format-weight", type=float, default=0.0, help="Weight of the \\boxed{} format reward.")
    add("--process-reward", default="none", choices=["none", "arithmetic", "arithmetic-errors"],
        help="Step rewards of the training env (info['step_rewards']; use with --advantage process): "
             "'arithmetic' pays 1 for every correct 'expression = value' line and 0 for a wrong one, "
             "'arithmetic-errors' pays 0 and -1 (only errors are penalised).")
    add("--advantage", default="outcome", choices=["outcome", "process"],
        help="GRPO family: outcome (DeepSeekMath 4.1.2) or process (4.1.3) supervision.")
    add("--reward-model", default=None,
        help="Folder of a sequence-classification reward model (scripts/train_reward_model.py) that replaces the "
             "training env's rule reward; held-out accuracy is still rule-checked.")
    add("--no-eval-before", action="store_true",
        help="Skip the evaluation before training (the base model's figure is the same for every algorithm).")
    add("--eval-n", type=int, default=200, help="Held-out problems for the before/after evaluation (0 = skip).")
    add("--eval-batch-size", type=int, default=50, help="Sequences per generate call during evaluation.")
    add("--seed", type=int, default=0, help="Seed of Python, NumPy, torch, the env and problem draws.")
    add("--device", default="auto", help="auto (CUDA if present), cpu or cuda.")
    add("--tensorboard-log", default="runs", help="TensorBoard folder ('' = off).")
    add("--run-name", default=None, help="TensorBoard run / output name (default: <ALGO>_<env>).")
    add("--output-dir", default="outputs", help="Where the zip, the HF folder and results.json go.")
    add("--no-progress-bar", action="store_true", help="Hide the progress bar.")
    add("--verbose", type=int, default=1, help="0 silent, 1 prints the metrics table each rollout.")
    return p


def make_envs(args: argparse.Namespace) -> tuple[gym.Env, gym.Env]:
    """The training env (train split) and the held-out env (test split), sharing one model handle."""
    if args.env in ("LLMGSM8K-v0", "LLMGSM8KToken-v0"):
        raise SystemExit("The GSM8K originals are test-only (training on them would evaluate on the training "
                         "set). Train on LLMMath-v0 and evaluate GSM8K with scripts/evaluate.py.")
    kwargs = {"model": args.model, "device": args.device}
    if args.difficulty:
        kwargs["difficulty"] = tuple(args.difficulty)
    if args.max_new_tokens:
        kwargs["max_new_tokens"] = args.max_new_tokens
    if args.format_weight:
        kwargs["format_weight"] = args.format_weight
    train_kwargs = dict(kwargs)
    if args.process_reward != "none":
        from llm_gym.rewards import arithmetic_step_penalty, arithmetic_step_reward

        train_kwargs["process_reward_fn"] = {"arithmetic": arithmetic_step_reward,
                                             "arithmetic-errors": arithmetic_step_penalty}[args.process_reward]
    if args.reward_model:
        from llm_gym.rewards.models import RewardModelScorer

        train_kwargs["reward_fn"] = RewardModelScorer(args.reward_model, device=args.device)
    if args.env in TOKEN_ENV_IDS:  # N token envs decoded as one batch; evaluate on the sequence version
        train_env = make_group_vec_env(args.env, n_envs=args.n_prompts * args.group_size, split="train",
                                       **train_kwargs)
        eval_env = gym.make(args.env.replace("Token", ""), split="test", **kwargs)
    else:
        train_env = gym.make(args.env, split="train", **train_kwargs)
        eval_env = gym.make(args.env, split="test", **kwargs)
    return train_env, eval_env


def evaluate(model: torch.nn.Module, env: gym.Env, args: argparse.Namespace, label: str) -> dict | None:
    """Greedy held-out accuracy (or None when ``--eval-n 0``)."""
    if args.eval_n <= 0:
        return None
    n = min(args.eval_n, env.unwrapped.n_problems)
    result = evaluate_accuracy(model, env, n_problems=n, batch_size=args.eval_batch_size,
                               progress_bar=not args.no_progress_bar)
    print(f"[{label}] held-out greedy accuracy {result['accuracy']:.3f} on {n} problems, mean response "
          f"{result['response_length']:.1f} tokens ({result['seconds']:.0f} s)")
    return {k: v for k, v in result.items() if k != "samples"} | {"examples": result["samples"][:5]}


def algorithm_options(args: argparse.Namespace) -> dict:
    """Keyword arguments that only some algorithms take, or whose default is the algorithm's own."""
    options = {name: getattr(args, name) for name in ("clip_range", "clip_range_high", "max_sampling_rounds")
               if getattr(args, name) is not None}
    if args.algo != "ppo":
        options["scale_rewards"] = args.scale_rewards
        if args.advantage != "outcome":
            options["advantage"] = args.advantage
    return options


def main(argv: list[str] | None = None) -> int:
    """Run the whole job; returns a process exit code."""
    args = build_parser().parse_args(argv)
    for key, value in ALGO_DEFAULTS[args.algo].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    run_name = args.run_name or f"{args.algo.upper()}_{args.env}"
    out = Path(args.output_dir) / run_name
    train_env, eval_env = make_envs(args)
    algo = ALGORITHMS[args.algo](
        "LLMPolicy", train_env, learning_rate=args.learning_rate, n_prompts=args.n_prompts,
        group_size=args.group_size, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
        n_epochs=args.n_epochs, beta=args.beta, **algorithm_options(args),
        temperature=args.temperature, top_p=args.top_p, seed=args.seed, device=args.device,
        tensorboard_log=args.tensorboard_log or None, verbose=args.verbose,
    )
    before = None if args.no_eval_before else evaluate(algo.policy.model, eval_env, args, "before")
    start = time.perf_counter()
    algo.learn(args.total_timesteps, tb_log_name=run_name, progress_bar=not args.no_progress_bar)
    train_seconds = time.perf_counter() - start
    after = evaluate(algo.policy.model, eval_env, args, "after")
    out.mkdir(parents=True, exist_ok=True)
    algo.save(out / "model.zip")
    algo.policy.save_pretrained(out / "hf_model")
    results = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "config": vars(args), "timesteps": algo.num_timesteps, "optimizer_steps": algo._n_updates,
        "generated_tokens": algo.generated_tokens,
        "train_seconds": train_seconds, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "before": before, "after": after, "tensorboard_dir": algo.logger.dir,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"Trained {algo.num_timesteps} env steps, {algo.generated_tokens} generated tokens "
          f"({algo._n_updates} optimizer steps) in {train_seconds:.0f} s; "
          f"peak memory {results['peak_rss_gb']:.1f} GB. Saved {out}/model.zip and {out}/hf_model; "
          f"curves: tensorboard --logdir {args.tensorboard_log or '(off)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
