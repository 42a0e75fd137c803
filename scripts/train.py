"""Train a language model with RL on an llm-gym env: the README's main job.

Evaluates greedy accuracy on a held-out split, trains (progress bar, TensorBoard logs), evaluates
again, saves the algorithm (SB3 zip) and a plain Hugging Face folder, and writes a results JSON.

Every field of agents.AlgorithmConfig is a flag (``--learning-rate``, ``--clip-range-high``,
``--dynamic-sampling/--no-dynamic-sampling``, ...). The defaults are the preset of ``--algo`` with the CPU
profile on top (a higher learning rate, temperature 0.7, a 320-response budget, so ten updates show a
change, and bf16 autocast; the whole GRPO job, both evaluations included, takes about 9 minutes on 2 CPU cores);
``--algo X --help`` prints the true defaults of X.

Examples::

    python scripts/train.py --algo grpo --env LLMMath-v0
    python scripts/train.py --algo ppo --env LLMMathToken-v0     # token level, critic, KL in the reward
    python scripts/train.py --env LLMToolMath-v0                 # multi-turn: a calculator tool (docs/envs.md)
    python scripts/train.py --algo dapo --batch-size 8           # clip-higher, dynamic sampling, overlong penalty
    python scripts/train.py --algo rloo --batch-size 8           # leave-one-out baseline
    python scripts/train.py --algo grpo --help                   # every flag with its default for GRPO
    python scripts/train.py --mixed-precision bf16 --lora-r 16   # bf16 autocast, LoRA adapters (peft)
    torchrun --nproc_per_node 2 scripts/train.py --algo grpo     # data parallel (docs/scaling.md)
    torchrun --nproc_per_node 2 scripts/train.py --fsdp          # sharded parameters and optimizer state
    tensorboard --logdir runs/
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.callbacks import BaseCallback

import llm_gym  # noqa: F401  (registers the envs)
from agents import ALGORITHMS, AlgorithmConfig, LLMAlgorithm
from agents.common.callbacks import IterationCheckpointCallback, IterativeRewardModelCallback
from agents.common.config import field_docs
from agents.common.distributed import init_distributed, is_main_process, shutdown_distributed, world_size
from agents.common.evaluation import evaluate_accuracy
from agents.common.fsdp import gathered, is_sharded
from agents.common.precision import lora_to_dict
from llm_gym import TOKEN_ENV_IDS, make_group_vec_env

#: The CPU profile: what the main job changes from every preset, so a 135M model shows learning in ten updates
#: on 2 cores (docs/benchmarks.md has the runs). Per algorithm, then for all.
CPU_PROFILE: dict[str, dict] = {
    # bf16 autocast: a faster step, and over 3 seeds it kept the held-out accuracy that fp32 lost with the
    # current sampler (docs/benchmarks.md). --mixed-precision no for CPUs without bf16 support.
    "all": {"learning_rate": 2e-5, "temperature": 0.7, "total_timesteps": 320, "mixed_precision": "bf16"},
    # PPO: 32 prompts x 1 response, 2 epochs of 2 minibatches; 7100 tokens = what the GRPO default generates.
    "ppo": {"n_prompts": 32, "n_epochs": 2, "batch_size": 16, "learning_rate": 1e-5, "total_timesteps": 7100},
}


def algorithm_defaults(algo: str) -> dict:
    """The true defaults of ``--algo``: its preset (:meth:`LLMAlgorithm.default_config`) plus the CPU profile."""
    return {**ALGORITHMS[algo].default_config().to_dict(), **CPU_PROFILE["all"], **CPU_PROFILE.get(algo, {})}


def _flag_type(annotation: str):
    """``(argparse type, nullable)`` of a config field from its annotation string (``"int | None"``...)."""
    nullable = "None" in annotation
    base = annotation.replace("| None", "").strip()
    kind = {"int": int, "float": float, "str": str, "bool": bool}[base]
    if not nullable or kind is bool:
        return kind, nullable
    return (lambda text: None if text.lower() == "none" else kind(text)), nullable


def add_config_flags(p: argparse.ArgumentParser, defaults: dict) -> None:
    """One flag per :class:`AlgorithmConfig` field; help = the field's docstring and the true default."""
    docs = field_docs()
    group = p.add_argument_group("algorithm (agents.AlgorithmConfig; defaults: the --algo preset + CPU profile)")
    for f in dataclasses.fields(AlgorithmConfig):
        kind, nullable = _flag_type(str(f.type))
        flag = "--" + f.name.replace("_", "-")
        default = defaults[f.name]
        text = f"{docs[f.name]} (default: {default}{'; none = None' if nullable else ''})"
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        else:
            group.add_argument(flag, type=kind, default=default, help=text.replace("%", "%%"))


def add_reward_model_flags(p: argparse.ArgumentParser) -> None:
    """Learned rewards (--reward-model, --process-reward-model) and iterative RL on them (--iterative...)."""
    add = p.add_argument_group("reward models and iterative RL").add_argument
    add("--process-reward-model", default=None,
        help="Folder of a process reward model (scripts/train_reward_model.py --kind process) whose per-step "
             "scores are the training env's step rewards (use with --advantage process).")
    add("--iterative", action="store_true",
        help="Iterative RL (DeepSeekMath 4.1.4) with --reward-model or --process-reward-model: retrain it on "
             "each --iterative-every-th rollout's samples, labelled by the rule checker (answer check; for a "
             "process model the grounded step checker), with --replay-fraction replayed, and reset the "
             "reference model to the policy.")
    add("--iterative-every", type=int, default=1, help="--iterative: retrain on every n-th rollout.")
    add("--replay-fraction", type=float, default=0.1,
        help="--iterative: share of earlier samples in each retraining set (DeepSeekMath: 10 %%).")
    add("--replay-from", default=None,
        help="--iterative: a scripts/train_reward_model.py output folder whose train_samples.jsonl (the reward "
             "model's own training data) seeds the replay store, so replay reaches back past this run.")
    add("--iterative-epochs", type=int, default=1,
        help="--iterative: epochs over each retraining set (continual training from the current weights).")
    add("--iterative-balance-classes", action="store_true",
        help="--iterative: weight the retraining loss so right and wrong samples count equally, as "
             "scripts/train_reward_model.py --balance-classes does (a rollout holds few right answers).")
    add("--reward-model", default=None,
        help="Folder of a sequence-classification reward model (scripts/train_reward_model.py) that replaces the "
             "training env's rule reward; held-out accuracy is still rule-checked.")


def build_parser(algo: str = "grpo") -> argparse.ArgumentParser:
    """Every flag with its meaning and its default for ``algo``; the same text is ``--help``."""
    defaults = algorithm_defaults(algo)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--algo", default="grpo", choices=sorted(ALGORITHMS), help="Preset (agents.ALGORITHMS).")
    add("--env", default="LLMMath-v0",
        help="Registered env id (LLMMath-v0, LLMMathToken-v0, multi-turn LLMToolMath-v0 and LLMGuessNumber-v0; "
             "GSM8K is test-only).")
    add("--task", default=None,
        help="Problem source of a math env (llm_gym.tasks.TASKS, e.g. arithmetic_tool: LLMMath-v0 on the tool "
             "env's problems, without the tool; env default otherwise).")
    add("--max-prompt-length", type=int, default=None, help="Prompt budget in tokens (env default).")
    add("--prompt-template", default=None,
        help="The user message, with {question} where the question goes (train and held-out env; default: "
             "the env's, '{question}\\nPut your final answer within \\boxed{}.'; literal braces doubled).")
    add("--max-turns", type=int, default=None, help="Multi-turn envs: most assistant turns per episode.")
    add("--tool-call-cost", type=float, default=None, help="LLMToolMath-v0: reward subtracted per calculator call.")
    add("--model", default=None, help="HF folder, .gguf file or hub id; default SmolLM2-135M-Instruct.")
    add("--difficulty", type=int, nargs="+", default=None, help="Arithmetic levels (env default: 1 2).")
    add("--total-timesteps", type=int, default=defaults["total_timesteps"],
        help="Env steps to train on: responses (sequence envs) or tokens (token envs); rounded up to whole "
             f"rollouts (default: {defaults['total_timesteps']}).")
    add("--max-new-tokens", type=int, default=None, help="Response budget in tokens (env default: 64).")
    add("--format-weight", type=float, default=0.0, help="Weight of the \\boxed{} format reward.")
    add("--process-reward", default="none", choices=["none", "arithmetic", "arithmetic-errors", "grounded"],
        help="Step rewards of the training env (info['step_rewards']; use with --advantage process): "
             "'arithmetic' pays 1 for every correct 'expression = value' line and 0 for a wrong one, "
             "'arithmetic-errors' pays 0 and -1 (only errors are penalised), 'grounded' pays 1 only for true "
             "steps built from the question's numbers or earlier results in a response that reaches the answer "
             "and --step-penalty for false, unrelated or restating steps and a wrong final step "
             "(llm_gym.rewards.grounded_arithmetic_step_reward).")
    add("--step-penalty", type=float, default=-1.0, help="--process-reward grounded: the penalty value (<= 0).")
    add_reward_model_flags(p)
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
    add("--save-freq", type=int, default=0,
        help="Save a checkpoint every this many iterations into <output-dir>/<run-name>/checkpoints/ (at iteration "
             "boundaries, so --resume continues exactly; 0 = only the final model.zip).")
    add("--resume", default=None,
        help="Continue from a checkpoint (model.zip or checkpoints/model_*.zip) to --total-timesteps in total; the "
             "checkpoint's algorithm and config are used, the evaluation before training is skipped.")
    add("--lora-r", type=int, default=0,
        help="LoRA rank (peft.LoraConfig r); 0 = full fine-tuning. Only the adapters are trained; the reference "
             "model is the base with the adapters disabled.")
    add("--lora-alpha", type=float, default=None, help="LoRA scaling alpha (default: 2 x --lora-r).")
    add("--lora-dropout", type=float, default=0.0, help="Dropout on the LoRA path.")
    add("--lora-target-modules", nargs="+", default=None,
        help="Module names that get adapters, or 'all-linear' (default: peft's choice for the architecture, "
             "q_proj and v_proj for Llama).")
    add("--no-doctor", action="store_true",
        help="Turn off the training doctor (warnings with fixes when a run goes wrong; docs/troubleshooting.md).")
    add("--verbose", type=int, default=1, help="0 silent, 1 prints the metrics table each rollout.")
    add_config_flags(p, defaults)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse in two passes: ``--algo`` first, then every flag with that algorithm's defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algo", default="grpo", choices=sorted(ALGORITHMS))
    known, _ = pre.parse_known_args(argv)
    return build_parser(known.algo).parse_args(argv)


def make_envs(args: argparse.Namespace, rewards: dict[str, Any] | None = None) -> tuple[gym.Env, gym.Env]:
    """The training env (train split) and the held-out env (test split), sharing one model handle.

    ``rewards`` (:func:`reward_kwargs`) go to the training env only: held-out accuracy is always rule-checked.
    """
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
    for flag in ("task", "max_prompt_length", "max_turns", "tool_call_cost", "prompt_template"):
        if getattr(args, flag) is not None:
            kwargs[flag] = getattr(args, flag)
    train_kwargs = dict(kwargs)
    train_kwargs.update(rewards or {})
    if args.env in TOKEN_ENV_IDS:  # N token envs decoded as one batch; evaluate on the sequence version
        train_env = make_group_vec_env(args.env, n_envs=args.n_prompts * args.group_size, split="train",
                                       **train_kwargs)
        eval_env = gym.make(args.env.replace("Token", ""), split="test", **kwargs)
    else:  # a multi-turn env becomes a GroupVecEnv of n_prompts x group_size copies inside the algorithm
        train_env = gym.make(args.env, split="train", **train_kwargs)
        eval_env = gym.make(args.env, split="test", **kwargs)
    return train_env, eval_env


def reward_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The training env's ``process_reward_fn`` / ``reward_fn`` chosen by the reward flags (may be empty).

    Raises:
        SystemExit: ``--process-reward`` together with ``--process-reward-model``, ``--iterative`` without a
            reward model, or ``--replay-from`` without ``--iterative``.
    """
    from llm_gym.rewards import (
        arithmetic_step_penalty,
        arithmetic_step_reward,
        grounded_arithmetic_step_reward,
    )
    from llm_gym.rewards.models import ProcessRewardModelScorer, RewardModelScorer

    if args.process_reward != "none" and args.process_reward_model:
        raise SystemExit("Choose one source of step rewards: --process-reward or --process-reward-model.")
    if args.iterative and not (args.reward_model or args.process_reward_model):
        raise SystemExit("--iterative retrains a reward model: pass --reward-model or --process-reward-model.")
    if args.replay_from and not args.iterative:
        raise SystemExit("--replay-from seeds the replay of iterative RL: add --iterative.")
    out: dict[str, Any] = {}
    if args.process_reward != "none":
        out["process_reward_fn"] = {
            "arithmetic": arithmetic_step_reward, "arithmetic-errors": arithmetic_step_penalty,
            "grounded": functools.partial(grounded_arithmetic_step_reward, penalty=args.step_penalty),
        }[args.process_reward]
    if args.process_reward_model:
        out["process_reward_fn"] = ProcessRewardModelScorer(args.process_reward_model, device=args.device)
    if args.reward_model:
        out["reward_fn"] = RewardModelScorer(args.reward_model, device=args.device)
    return out


def build_callbacks(args: argparse.Namespace, rewards: dict[str, Any], out: Path) -> list[BaseCallback]:
    """Checkpoints (``--save-freq``) and iterative RL (``--iterative``) on the reward model of ``rewards``."""
    callbacks: list[BaseCallback] = []
    if args.save_freq:
        callbacks.append(IterationCheckpointCallback(args.save_freq, out / "checkpoints"))
    if args.iterative:
        from llm_gym.rewards import grounded_arithmetic_step_reward

        process = bool(args.process_reward_model)
        scorer = rewards["process_reward_fn" if process else "reward_fn"]
        initial_replay = None
        if args.replay_from:
            from llm_gym.rewards.models import read_labelled_samples

            samples = read_labelled_samples(Path(args.replay_from) / "train_samples.jsonl",
                                            "process" if process else "outcome")
            initial_replay = list(zip(*samples, strict=True))
        callbacks.append(IterativeRewardModelCallback(
            scorer, label_fn=grounded_arithmetic_step_reward if process else None, save_dir=out / "iterative",
            every_n_rollouts=args.iterative_every, replay_fraction=args.replay_fraction, seed=args.seed,
            initial_replay=initial_replay,
            train_kwargs={"epochs": args.iterative_epochs, "balance_classes": args.iterative_balance_classes},
            verbose=args.verbose))
    return callbacks


def without_tool_env(args: argparse.Namespace, eval_env: gym.Env) -> gym.Env | None:
    """For LLMToolMath-v0: LLMMath-v0 on the same held-out problems (same task, levels, turn budget), no tool.

    The same model is scored on the same questions with one answer and no calculator, so the "with tool" and
    "without tool" accuracies compare the tool's effect. None for other envs.
    """
    if args.env != "LLMToolMath-v0":
        return None
    spec = eval_env.spec.kwargs
    keep = ("model", "device", "task", "difficulty", "max_new_tokens", "max_prompt_length", "format_weight",
            "split")
    return gym.make("LLMMath-v0", **{k: spec[k] for k in keep if k in spec})


def evaluate(model: torch.nn.Module, env: gym.Env, args: argparse.Namespace, label: str) -> dict | None:
    """Greedy held-out accuracy (or None when ``--eval-n 0``)."""
    if args.eval_n <= 0:
        return None
    n = min(args.eval_n, env.unwrapped.n_problems)
    result = evaluate_accuracy(model, env, n_problems=n, batch_size=args.eval_batch_size,
                               progress_bar=not args.no_progress_bar)
    turns = (f", {result['num_turns']:.2f} turns/episode" if "num_turns" in result else "") + (
        f", tool called in {result['tool_call_fraction']:.0%} of episodes" if "tool_call_fraction" in result else "")
    print(f"[{label}] held-out greedy accuracy {result['accuracy']:.3f} on {n} problems, mean response "
          f"{result['response_length']:.1f} tokens{turns} ({result['seconds']:.0f} s)")
    return result | {"examples": result["samples"][:5]}  # samples: every (question, response, answer, correct)


def evaluate_all(model: torch.nn.Module, env: gym.Env, plain_env: gym.Env | None, args: argparse.Namespace,
                 label: str) -> dict | None:
    """:func:`evaluate` on the held-out env, plus ``"without_tool"``: the same problems without the tool."""
    result = evaluate(model, env, args, label)
    if result is not None and plain_env is not None:
        result["without_tool"] = evaluate(model, plain_env, args, f"{label}, without the tool")
    return result


def lora_config(args: argparse.Namespace):
    """The ``peft.LoraConfig`` of the ``--lora-*`` flags, or None (``--lora-r 0``).

    Raises:
        SystemExit: a negative ``--lora-r``.
    """
    if args.lora_r < 0:
        raise SystemExit(f"--lora-r must be >= 0 (0 = full fine-tuning), got {args.lora_r}")
    if args.lora_r == 0:
        return None
    import peft

    targets = args.lora_target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    return peft.LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha or 2 * args.lora_r,
                           lora_dropout=args.lora_dropout, target_modules=targets, task_type="CAUSAL_LM")


def build_algorithm(args: argparse.Namespace, train_env) -> LLMAlgorithm:
    """The algorithm: a new one from the flags, or (``--resume``) the checkpoint's, with its own config."""
    if args.resume:
        algo = LLMAlgorithm.load(args.resume, env=train_env, device=args.device)
        algo.tensorboard_log, algo.verbose = args.tensorboard_log or None, args.verbose
        print(f"Resuming {type(algo).__name__} from {args.resume} at {algo.num_timesteps} env steps "
              f"({algo._n_updates} optimizer steps); its saved config is used, not the algorithm flags.")
        return algo
    config = {name: getattr(args, name) for name in AlgorithmConfig.field_names()}
    return ALGORITHMS[args.algo]("LLMPolicy", train_env, **config, seed=args.seed, device=args.device,
                                 tensorboard_log=args.tensorboard_log or None, verbose=args.verbose,
                                 doctor=not args.no_doctor, peft_config=lora_config(args))


def main(argv: list[str] | None = None) -> int:
    """Run the whole job; returns a process exit code.

    Under ``torchrun`` / ``accelerate launch`` every rank trains (data parallel, docs/scaling.md); rank 0 alone
    evaluates, shows the progress bar, logs and writes (under ``--fsdp`` every rank takes part in gathering
    the weights for evaluation and saving).
    """
    args = parse_args(argv)
    main_process = not init_distributed() or is_main_process()
    run_name = args.run_name or f"{args.algo.upper()}_{args.env}"
    out = Path(args.output_dir) / run_name
    rewards = reward_kwargs(args)
    train_env, eval_env = make_envs(args, rewards)
    algo = build_algorithm(args, train_env)
    skip_before = args.no_eval_before or args.resume or not main_process
    plain_env = without_tool_env(args, eval_env)
    with gathered(algo.policy):  # FSDP: every rank gathers the weights; rank 0 evaluates (no collectives)
        before = None if skip_before else evaluate_all(algo.policy.model, eval_env, plain_env, args, "before")
    callbacks = build_callbacks(args, rewards, out)
    start = time.perf_counter()
    algo.learn(max(0, args.total_timesteps - algo.num_timesteps), callback=callbacks or None, tb_log_name=run_name,
               reset_num_timesteps=not args.resume, progress_bar=not args.no_progress_bar)
    train_seconds = time.perf_counter() - start
    with gathered(algo.policy):  # FSDP: every rank gathers the weights; rank 0 evaluates
        after = evaluate_all(algo.policy.model, eval_env, plain_env, args, "after") if main_process else None
    if main_process or is_sharded(algo.policy):  # FSDP: gathering the weights to save them is collective
        save_models(algo, out)
    if main_process:
        save_results(args, argv, algo, out, before, after, train_seconds)
    shutdown_distributed()  # every rank leaves together (no rank exits mid-collective)
    return 0


def save_models(algo: LLMAlgorithm, out: Path) -> None:
    """The checkpoint and the Hugging Face export(s); rank 0 writes (under FSDP every rank calls it)."""
    out.mkdir(parents=True, exist_ok=True)
    algo.save(out / "model.zip")
    algo.policy.save_pretrained(out / "hf_model", merged=True)  # a plain HF model, LoRA merged in
    if algo.policy.is_peft:
        algo.policy.save_pretrained(out / "hf_adapter")  # the adapter alone (peft.PeftModel.from_pretrained)


def save_results(args: argparse.Namespace, argv: list[str] | None, algo: LLMAlgorithm, out: Path, before, after,
                 train_seconds: float) -> None:
    """Write ``results.json`` and print the summary (rank 0)."""
    results = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "config": vars(args), "algorithm": type(algo).__name__, "algorithm_config": algo.config.to_dict(),
        "world_size": world_size(), "peft_config": lora_to_dict(algo.peft_config),
        "data_parallel": "fsdp" if is_sharded(algo.policy) else "ddp" if world_size() > 1 else "none",
        "timesteps": algo.num_timesteps, "optimizer_steps": algo._n_updates, "generated_tokens": algo.generated_tokens,
        "train_seconds": train_seconds, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "before": before, "after": after, "tensorboard_dir": algo.logger.dir,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"Trained {algo.num_timesteps} env steps, {algo.generated_tokens} generated tokens "
          f"({algo._n_updates} optimizer steps) in {train_seconds:.0f} s on {world_size()} process(es); "
          f"peak memory {results['peak_rss_gb']:.1f} GB. Saved {out}/model.zip and {out}/hf_model; "
          f"curves: tensorboard --logdir {args.tensorboard_log or '(off)'}")


if __name__ == "__main__":
    sys.exit(main())
