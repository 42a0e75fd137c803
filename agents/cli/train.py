"""``llm-gym train`` (= ``scripts/train.py``): the README's main job, RL training of a language model on an env.

It evaluates greedy accuracy on a held-out split, trains (progress bar, TensorBoard logs), saves the algorithm
(SB3 zip) and a plain Hugging Face folder, evaluates again and writes a results JSON. The flags and their
checks are in :mod:`agents.cli.train_flags` (``--help`` shows them), ``--resume`` in
:mod:`agents.cli.train_resume`. ``scripts/train.py`` runs this module's code (:mod:`agents.cli.script`).

Examples::

    llm-gym train --algo grpo --env LLMMath-v0
    llm-gym train --env LLMTextArena-v0 --env-kwargs '{"game": "GuessTheNumber-v0"}'
    torchrun --nproc_per_node 2 scripts/train.py --algo grpo     # data parallel (docs/scaling.md)
"""

from __future__ import annotations

import argparse
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
from agents.cli.train_flags import (  # noqa: F401  (the job's flags, kept importable from here and the script)
    CPU_PROFILE,
    DESCRIPTION,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    algorithm_defaults,
    as_flag_names,
    bounded,
    build_parser,
    check_config_flags,
    env_keywords,
    explicit_flags,
    parse_args,
    run_folder,
)
from agents.cli.train_resume import (  # noqa: F401
    _model_path,
    _same,
    checkpoint_flag_values,
    read_checkpoint_settings,
    resume_settings,
)
from agents.common.callbacks import IterationCheckpointCallback, IterativeRewardModelCallback
from agents.common.distributed import (
    init_distributed,
    is_main_process,
    shutdown_distributed,
    wait_for_main_process,
    world_size,
)
from agents.common.evaluation import evaluate_accuracy
from agents.common.fsdp import gathered, is_sharded
from agents.common.precision import lora_to_dict
from agents.env_ids import EnvError, bare_id, check_env_id, fit_kwargs, require_llm_env, split_dataset
from llm_gym import TOKEN_ENV_IDS, make_group_vec_env


def make_envs(args: argparse.Namespace, rewards: dict[str, Any] | None = None) -> tuple[gym.Env, gym.Env | None]:
    """The training env (train split) and the held-out env (test split; None with ``--eval-n 0``), one model handle.

    ``rewards`` (:func:`reward_kwargs`) go to the training env only: held-out accuracy is always rule-checked.
    The env id may be any the flags accept (:func:`~agents.cli.train_flags.check_env_flags` checked it): the
    bare id decides the env family, the full ``module:EnvId`` string goes to ``gym.make``. Keywords the env
    does not take (``split``, ``device``...) are left out (:func:`~agents.env_ids.fit_kwargs`).

    Raises:
        EnvError: the env is not an llm-gym env (:func:`~agents.env_ids.require_llm_env`), or a keyword or split
            it cannot take (checked by the flags already).
    """
    spec, bare = check_env_id(args.env), bare_id(args.env)
    kwargs, given = env_keywords(args)
    given |= dict.fromkeys(rewards or {}, "a reward flag")
    train_kwargs = split_dataset(spec, fit_kwargs(spec, {**kwargs, **(rewards or {}), "split": "train"}, given),
                                 "train")
    eval_kwargs = None
    if args.eval_n > 0:
        eval_kwargs = split_dataset(spec, fit_kwargs(spec, {**kwargs, "split": "test"}, given), "test")
    if bare in TOKEN_ENV_IDS:  # N token envs decoded as one batch; evaluate on the sequence version
        train_env = make_group_vec_env(args.env, n_envs=args.n_prompts * args.group_size, **train_kwargs)
        eval_env = None if eval_kwargs is None else gym.make(args.env.replace("Token", ""), **eval_kwargs)
    else:  # a multi-turn env becomes a GroupVecEnv of n_prompts x group_size copies inside the algorithm
        train_env = gym.make(args.env, **train_kwargs)
        eval_env = None if eval_kwargs is None else gym.make(args.env, **eval_kwargs)
    require_llm_env(train_env, args.env)
    return train_env, eval_env


def reward_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The training env's ``process_reward_fn`` / ``reward_fn`` chosen by the reward flags (may be empty).

    Raises:
        SystemExit: ``--process-reward`` together with ``--process-reward-model``, ``--iterative`` without a
            reward model, or ``--replay-from`` without ``--iterative``.
    """
    from llm_gym.reward_models import ProcessRewardModelScorer, RewardModelScorer
    from llm_gym.rewards import (
        arithmetic_step_penalty,
        arithmetic_step_reward,
        grounded_arithmetic_step_reward,
    )

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
            from llm_gym.reward_models import read_labelled_samples

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


def without_tool_env(args: argparse.Namespace, eval_env: gym.Env | None) -> gym.Env | None:
    """For LLMToolMath-v0: LLMMath-v0 on the same held-out problems (same task, levels, turn budget), no tool.

    The same model is scored on the same questions with one answer and no calculator, so the "with tool" and
    "without tool" accuracies compare the tool's effect. None for other envs, and without a held-out env.
    """
    if bare_id(args.env) != "LLMToolMath-v0" or eval_env is None:
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
    """The ``peft.LoraConfig`` of the ``--lora-*`` flags (checked by :func:`parse_args`), or None (``--lora-r 0``)."""
    if args.lora_r == 0:
        return None
    import peft

    targets = args.lora_target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    alpha = 2 * args.lora_r if args.lora_alpha is None else args.lora_alpha
    return peft.LoraConfig(r=args.lora_r, lora_alpha=alpha,
                           lora_dropout=args.lora_dropout, target_modules=targets, task_type="CAUSAL_LM")


def build_algorithm(args: argparse.Namespace, train_env) -> LLMAlgorithm:
    """The algorithm: a new one from the flags, or (``--resume``) the checkpoint's, with its own config.

    On resume the checkpoint's algorithm, config, seed and LoRA are used (:func:`resume_settings` refused
    flags that contradict them); ``--device``, ``--tensorboard-log``, ``--verbose`` and ``--no-doctor`` apply.
    """
    if args.resume:
        algo = LLMAlgorithm.load(args.resume, env=train_env, device=args.device)
        algo.tensorboard_log, algo.verbose = args.tensorboard_log or None, args.verbose
        algo.doctor.enabled = algo.doctor.enabled and not args.no_doctor
        print(f"Resuming {type(algo).__name__} from {args.resume} at {algo.num_timesteps} env steps "
              f"({algo._n_updates} optimizer steps) with its saved algorithm, config, seed and LoRA; applied from "
              f"the flags: --device {args.device}, --verbose {args.verbose}, the training doctor "
              f"{'on' if algo.doctor.enabled else 'off (--no-doctor)'}, the env and evaluation flags.")
        return algo
    config = {name: getattr(args, name) for name in AlgorithmConfig.field_names()}
    return ALGORITHMS[args.algo]("LLMPolicy", train_env, **config, seed=args.seed, device=args.device,
                                 tensorboard_log=args.tensorboard_log or None, verbose=args.verbose,
                                 doctor=not args.no_doctor, peft_config=lora_config(args))


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run the whole job; returns a process exit code (``prog``: the command's name, ``"llm-gym train"``).

    Every flag is checked before the model loads (:func:`parse_args`, :func:`resume_settings`). The models are
    saved before the evaluation after training, so an evaluation error cannot lose the training: the
    error is recorded in ``results.json`` (``"after_error"``) and raised once the files are written.

    Under ``torchrun`` / ``accelerate launch`` every rank trains (data parallel, docs/scaling.md); rank 0 alone
    evaluates, shows the progress bar, logs and writes (under ``--fsdp`` every rank takes part in gathering
    the weights for evaluation and saving); the other ranks wait for it in :func:`wait_for_main_process`.
    """
    args = parse_args(argv, prog)
    main_process = not init_distributed() or is_main_process()
    if args.resume:
        resume_settings(args, argv)
    out = run_folder(args)
    run_name = out.name
    rewards = reward_kwargs(args)
    try:
        train_env, eval_env = make_envs(args, rewards)
    except EnvError as exc:  # an env that is not an llm-gym env (the flags checked the rest)
        raise SystemExit(f"error: {exc}") from None
    algo = build_algorithm(args, train_env)
    evaluate_before = main_process and not (args.no_eval_before or args.resume)
    plain_env = without_tool_env(args, eval_env)
    with gathered(algo.policy):  # FSDP: every rank gathers the weights; rank 0 evaluates (no collectives)
        before = evaluate_all(algo.policy.model, eval_env, plain_env, args, "before") if evaluate_before else None
    wait_for_main_process()
    callbacks = build_callbacks(args, rewards, out)
    start = time.perf_counter()
    algo.learn(args.total_timesteps - algo.num_timesteps, callback=callbacks or None, tb_log_name=run_name,
               reset_num_timesteps=not args.resume, progress_bar=not args.no_progress_bar)
    train_seconds = time.perf_counter() - start
    if main_process or is_sharded(algo.policy):  # first; FSDP: gathering the weights to save them is collective
        save_models(algo, out)
    after, error = None, None
    with gathered(algo.policy):  # FSDP: every rank gathers the weights; rank 0 evaluates
        if main_process:
            try:
                after = evaluate_all(algo.policy.model, eval_env, plain_env, args, "after")
            except Exception as exc:  # noqa: BLE001  (recorded, reported and raised below)
                error = exc
    if main_process:
        save_results(args, argv, algo, out, before, after, train_seconds, error, prog)
    wait_for_main_process()
    shutdown_distributed()  # every rank leaves together (no rank exits mid-collective)
    if error is not None:
        print(f"error: the evaluation after training failed ({type(error).__name__}: {error}); the trained model "
              f"is saved in {out}/model.zip and {out}/hf_model. Evaluate it again with llm-gym eval "
              f"--checkpoint {out}/model.zip.", file=sys.stderr)
        raise error
    return 0


def save_models(algo: LLMAlgorithm, out: Path) -> None:
    """The checkpoint and the Hugging Face export(s); rank 0 writes (under FSDP every rank calls it)."""
    out.mkdir(parents=True, exist_ok=True)
    algo.save(out / "model.zip")
    algo.policy.save_pretrained(out / "hf_model", merged=True)  # a plain HF model, LoRA merged in
    if algo.policy.is_peft:
        algo.policy.save_pretrained(out / "hf_adapter")  # the adapter alone (peft.PeftModel.from_pretrained)


def save_results(args: argparse.Namespace, argv: list[str] | None, algo: LLMAlgorithm, out: Path, before, after,
                 train_seconds: float, error: BaseException | None = None, prog: str | None = None) -> None:
    """Write ``results.json`` and print the summary (rank 0).

    ``"config"`` holds the flags as they ran (on ``--resume`` the checkpoint's algorithm, config, seed, LoRA and
    model); ``"after_error"`` names an evaluation error after training (``"after"`` is then None).
    """
    results = {
        "command": " ".join([prog or Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "config": vars(args), "algorithm": type(algo).__name__, "algorithm_config": algo.config.to_dict(),
        "world_size": world_size(), "peft_config": lora_to_dict(algo.peft_config),
        "data_parallel": "fsdp" if is_sharded(algo.policy) else "ddp" if world_size() > 1 else "none",
        "timesteps": algo.num_timesteps, "optimizer_steps": algo._n_updates, "generated_tokens": algo.generated_tokens,
        "train_seconds": train_seconds, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "before": before, "after": after, "tensorboard_dir": algo.logger.dir,
        **({"after_error": f"{type(error).__name__}: {error}"} if error is not None else {}),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"Trained {algo.num_timesteps} env steps, {algo.generated_tokens} generated tokens "
          f"({algo._n_updates} optimizer steps) in {train_seconds:.0f} s on {world_size()} process(es); "
          f"peak memory {results['peak_rss_gb']:.1f} GB. Saved {out}/model.zip and {out}/hf_model; "
          f"curves: tensorboard --logdir {args.tensorboard_log or '(off)'}")


if __name__ == "__main__":
    sys.exit(main())
