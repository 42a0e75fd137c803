"""GRPO *learning* vs TRL: held-out accuracy after an equal response budget, over several seeds.

Four configurations, each trained ``--steps`` rollouts of ``n_prompts x group_size`` responses (default
10 x 4 x 8 = 320 responses) from the same base model, on the same LLMMath-v0 train prompts with the same reward
(``math_answer_reward``), then evaluated by the same code (``scripts/evaluate.py``: greedy decoding, the first
``--eval-n`` problems of the ``test`` split):

======================  ==============================================================================
configuration           what trains
======================  ==============================================================================
trl_default             TRL's ``GRPOTrainer`` with TRL's default ``loss_type`` (not set: ``"dapo"`` in
                        TRL 1.16, read from ``GRPOConfig``), the other settings below
trl_ours_aggregation    the same with the ``loss_type`` that equals our GRPO's default aggregation
                        (``seq-mean-token-mean`` = TRL ``"grpo"``)
ours_grpo               ``scripts/train.py --algo grpo`` with the same settings
ours_best               ``scripts/train.py --algo rloo --batch-size <rollout / 4>``: the best preset of the
                        two-seed RLOO/REINFORCE++/CISPO runs (docs/benchmarks.md: RLOO, mean 0.443
                        over 2 seeds, spread 0.005), 4 minibatches per rollout
======================  ==============================================================================

Shared settings (both sides): 4 prompts x 8 samples per rollout, 64 new tokens, AdamW at a constant 2e-5
(weight decay 0.01: torch's AdamW default, which our GRPO uses; TRL's default 0.0 is overridden), gradient
norm 1.0, ``beta=0.04`` (k3 in the loss), clip 0.2, rewards scaled by the group std, temperature 0.7,
top-p 1.0, no dropout, no gradient checkpointing, CPU, and **bf16 autocast with fp32 master weights**
(``--precision bf16``, the default: TRL's ``GRPOConfig`` default ``bf16=True`` and the CPU profile of
``scripts/train.py``; ``--precision fp32`` runs both sides in float32). TRL gets its prompts in the order our
GRPO draws them with the same seed (``shuffle_dataset=False``), so both sides see the same prompts per step.

Every training runs alone in its own subprocess (TRL: ``--worker-spec``; ours: ``scripts/train.py``), one at
a time. Recorded per (configuration, seed): held-out accuracy before (the base model, evaluated once) and
after, responses and tokens generated, optimizer steps, training wall time (``trainer.train()`` /
``learn()``) and the whole subprocess's wall time, and the training subprocess's peak RSS (``os.wait4``).
The JSON (``--out``) is rewritten after every run and is the resume state: a (configuration, seed) already
in it is skipped, so an interrupted run continues where it stopped; a JSON written with other settings is
refused. The printed markdown table gives per configuration the mean, the sample standard deviation and
the min-max over seeds.

Example:
    python scripts/benchmark.py --vs-trl-learning                                # 4 configs x seeds 0 1 2
    python scripts/benchmark.py --vs-trl-learning --configs ours_grpo --seeds 1  # continue / subset
    python scripts/benchmark_trl_learning.py --tiny --seeds 0 --out ''            # tiny model, 2 steps
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.util
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
DEFAULT_OUT = "benchmarks/grpo_vs_trl/vs_trl_learning.json"
DEFAULT_WORK_DIR = "outputs/grpo_vs_trl/vs_trl_learning"
#: configuration name -> (side, description). The order is the order of the runs and of the table.
CONFIGS: dict[str, tuple[str, str]] = {
    "trl_default": ("trl", "TRL GRPOTrainer, TRL's default loss_type"),
    "trl_ours_aggregation": ("trl", "TRL GRPOTrainer, loss_type = our GRPO's aggregation"),
    "ours_grpo": ("ours", "llm-gym GRPO (train.py --algo grpo)"),
    "ours_best": ("ours", "llm-gym best issue-9 preset (RLOO, 4 minibatches)"),
}
#: Our best preset in docs/benchmarks.md's RLOO/REINFORCE++/CISPO table: RLOO (mean 0.443, spread 0.005 over
#: 2 seeds), run with 4 minibatches per rollout (``--batch-size 8`` for 4 x 8).
BEST_PRESET = {"algo": "rloo", "minibatches": 4}
#: Our ``loss_aggregation`` -> the TRL 1.16 ``loss_type`` that computes the same scalar (one process, no
#: gradient accumulation: TRL's "bnpo" and "dapo" are both the token mean of the batch).
TRL_LOSS_TYPE = {"seq-mean-token-mean": "grpo", "token-mean": "bnpo", "seq-mean-token-sum-norm": "dr_grpo"}
#: Settings of the real comparison and of ``--tiny`` (tests): n_prompts, group_size, max_new_tokens, steps, eval_n.
FULL = {"n_prompts": 4, "group_size": 8, "max_new_tokens": 64, "steps": 10, "eval_n": 200}
TINY = {"n_prompts": 2, "group_size": 2, "max_new_tokens": 8, "steps": 2, "eval_n": 4}
#: Summary statistics per configuration are taken over these per-run numbers.
METRICS = ("accuracy_before", "accuracy_after", "responses", "generated_tokens", "train_seconds", "peak_rss_gb")


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags (each documented in ``--help``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS), help="configurations")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (each config trains once per seed)")
    p.add_argument("--model", default=None, help="HF model folder or .gguf file; unset = SmolLM2-135M-Instruct")
    p.add_argument("--tiny", action="store_true", help="the tiny random test model and a tiny config: "
                   + ", ".join(f"{k}={v}" for k, v in TINY.items()))
    p.add_argument("--env", default="LLMMath-v0", help="registered llm-gym env id (train and test splits)")
    meaning = {"n_prompts": "prompts per rollout", "group_size": "responses per prompt",
               "max_new_tokens": "response budget in tokens (training and evaluation)",
               "steps": "rollouts to train on (one TRL step each)", "eval_n": "held-out problems evaluated"}
    for name, full in FULL.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                       help=f"{meaning[name]}; unset = {full} ({TINY[name]} with --tiny)")
    p.add_argument("--learning-rate", type=float, default=2e-5, help="constant AdamW step size (both sides)")
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient (k3 in the loss, both sides)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (both sides)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                   help="both sides: bf16 autocast with fp32 master weights, or float32")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every subprocess; unset = torch's")
    p.add_argument("--timeout", type=float, default=7200.0, help="seconds one subprocess may take")
    p.add_argument("--out", default=None, help=f"JSON report and resume state ('' = none, no resume); unset = "
                   f"{DEFAULT_OUT} (none with --tiny)")
    p.add_argument("--work-dir", default=None,
                   help=f"trained models and logs; unset = {DEFAULT_WORK_DIR} (a temporary folder with --tiny)")
    p.add_argument("--keep-models", action="store_true", help="keep each trained model folder after its evaluation")
    p.add_argument("--worker-spec", default=None, help="internal: JSON file of one TRL training run")
    return p


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings every configuration shares; a resumed JSON must carry exactly these.

    Args:
        args: parsed flags (:func:`build_parser`); unset sizes come from :data:`FULL` or (``--tiny``) :data:`TINY`.

    Returns:
        Plain JSON data: model label, env, sizes (``max_new_tokens`` in tokens), ``responses`` (the budget:
        steps x n_prompts x group_size), optimizer, KL, sampling, precision and evaluation settings.

    Raises:
        ValueError: a size flag below 1 (the message names it).
    """
    shape = TINY if args.tiny else FULL
    sizes = {name: getattr(args, name) if getattr(args, name) is not None else shape[name] for name in FULL}
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    model = "tiny" if args.tiny else (args.model or "SmolLM2-135M-Instruct (default)")
    return {"model": model, "env": args.env, **sizes,
            "responses": sizes["steps"] * sizes["n_prompts"] * sizes["group_size"],
            "learning_rate": args.learning_rate, "lr_schedule": "constant", "weight_decay": 0.01,
            "max_grad_norm": 1.0, "beta": args.beta, "kl_estimator": "k3", "clip_range": 0.2,
            "scale_rewards": "group", "temperature": args.temperature, "top_p": 1.0, "precision": args.precision,
            "gradient_checkpointing": False, "device": "cpu", "eval_split": "test", "eval_decoding": "greedy"}


# ------------------------------------------------------------------------------------------ configurations
def trl_default_loss_type() -> str:
    """TRL's default ``GRPOConfig.loss_type``, read from the installed package (``"dapo"`` in TRL 1.16)."""
    from trl import GRPOConfig

    return next(f.default for f in dataclasses.fields(GRPOConfig) if f.name == "loss_type")


def trl_loss_type_for(aggregation: str) -> str:
    """The TRL ``loss_type`` computing the same scalar as our ``loss_aggregation``.

    Raises:
        ValueError: TRL has no loss_type for that aggregation (``"seq-mean-token-sum"``).
    """
    if aggregation not in TRL_LOSS_TYPE:
        raise ValueError(f"TRL has no loss_type equal to loss_aggregation={aggregation!r}; "
                         f"choose one of {list(TRL_LOSS_TYPE)}")
    return TRL_LOSS_TYPE[aggregation]


def our_grpo_aggregation() -> str:
    """Our GRPO preset's default ``loss_aggregation`` (``"seq-mean-token-mean"``)."""
    from agents import GRPO

    return GRPO.default_config().loss_aggregation


def trl_config_kwargs(name: str, settings: dict[str, Any], seed: int, output_dir: str) -> dict[str, Any]:
    """``GRPOConfig`` keywords of a TRL configuration: the shared settings, one optimizer step per rollout.

    ``trl_default`` leaves ``loss_type`` unset (TRL's default); ``trl_ours_aggregation`` sets the one that
    matches our GRPO's default aggregation.

    Args:
        name: a TRL configuration of :data:`CONFIGS`.
        settings: :func:`resolve_settings`.
        seed: TRL's ``seed`` (weights' sampling RNG; the prompt order is fixed by the dataset).
        output_dir: TRL's ``output_dir`` (nothing is saved there: ``save_strategy="no"``).

    Returns:
        Keyword arguments of ``trl.GRPOConfig``.

    Raises:
        ValueError: ``name`` is not a TRL configuration.
    """
    if CONFIGS.get(name, ("",))[0] != "trl":
        raise ValueError(f"{name!r} is not a TRL configuration; use one of "
                         f"{[k for k, v in CONFIGS.items() if v[0] == 'trl']}")
    kwargs = {
        "output_dir": output_dir, "max_steps": settings["steps"],
        "per_device_train_batch_size": settings["n_prompts"] * settings["group_size"],
        "gradient_accumulation_steps": 1, "steps_per_generation": 1, "num_iterations": 1,
        "num_generations": settings["group_size"], "max_completion_length": settings["max_new_tokens"],
        "beta": settings["beta"], "epsilon": settings["clip_range"], "scale_rewards": settings["scale_rewards"],
        "temperature": settings["temperature"], "top_p": settings["top_p"],
        "learning_rate": settings["learning_rate"], "lr_scheduler_type": settings["lr_schedule"],
        "weight_decay": settings["weight_decay"], "max_grad_norm": settings["max_grad_norm"], "seed": seed,
        "use_cpu": True, "bf16": settings["precision"] == "bf16", "fp16": False,
        "gradient_checkpointing": settings["gradient_checkpointing"], "disable_dropout": True,
        "shuffle_dataset": False, "report_to": [], "save_strategy": "no", "logging_steps": 1,
        "disable_tqdm": True, "dataloader_num_workers": 0,
    }
    if name == "trl_ours_aggregation":
        kwargs["loss_type"] = trl_loss_type_for(our_grpo_aggregation())
    return kwargs


def build_trl_config(name: str, settings: dict[str, Any], seed: int, output_dir: str):
    """The ``trl.GRPOConfig`` of a TRL configuration; arguments and errors as :func:`trl_config_kwargs`."""
    from trl import GRPOConfig

    return GRPOConfig(**trl_config_kwargs(name, settings, seed, output_dir))


def train_argv(name: str, seed: int, settings: dict[str, Any], model: str | None, output_dir: Path) -> list[str]:
    """The ``scripts/train.py`` command of one of our configurations (no evaluation inside: ``--eval-n 0``).

    Args:
        name: ``"ours_grpo"`` or ``"ours_best"`` (:data:`BEST_PRESET`: rollout / 4 sequences per minibatch).
        seed: ``--seed``.
        settings: :func:`resolve_settings`.
        model: base model folder, or None for the default model.
        output_dir: ``--output-dir``; the run writes ``<output_dir>/<name>/{results.json,hf_model,model.zip}``.

    Returns:
        The argv, starting with this Python interpreter.

    Raises:
        ValueError: ``name`` is not one of our configurations.
    """
    if name not in ("ours_grpo", "ours_best"):
        raise ValueError(f"{name!r} is not one of our configurations (ours_grpo, ours_best)")
    rollout = settings["n_prompts"] * settings["group_size"]
    argv = [sys.executable, str(SCRIPTS / "train.py"), "--algo", "grpo", "--seed", str(seed),
            "--env", settings["env"], "--total-timesteps", str(settings["responses"]),
            "--n-prompts", str(settings["n_prompts"]), "--group-size", str(settings["group_size"]),
            "--max-new-tokens", str(settings["max_new_tokens"]), "--learning-rate", repr(settings["learning_rate"]),
            "--beta", repr(settings["beta"]), "--kl-estimator", settings["kl_estimator"],
            "--clip-range", repr(settings["clip_range"]), "--scale-rewards", settings["scale_rewards"],
            "--temperature", repr(settings["temperature"]), "--top-p", repr(settings["top_p"]),
            "--max-grad-norm", repr(settings["max_grad_norm"]),
            "--mixed-precision", "bf16" if settings["precision"] == "bf16" else "no",
            "--no-gradient-checkpointing", "--device", settings["device"], "--eval-n", "0", "--no-eval-before",
            "--tensorboard-log", "", "--output-dir", str(output_dir), "--run-name", name, "--no-progress-bar"]
    if name == "ours_best":
        argv[3] = BEST_PRESET["algo"]
        argv += ["--batch-size", str(max(1, rollout // BEST_PRESET["minibatches"]))]
    if model is not None:
        argv += ["--model", model]
    return argv


# ------------------------------------------------------------------------------------------ TRL worker
def load_script(name: str):
    """Import ``scripts/<name>.py`` by path (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"llm_gym_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def train_trl(spec: dict[str, Any]) -> dict[str, Any]:
    """One TRL training run (a worker subprocess): train, save the model and tokenizer, return the figures.

    Args:
        spec: ``config`` (name), ``seed``, ``settings`` (:func:`resolve_settings`), ``model_path`` (None = the
            default model) and ``model_out`` (folder the trained model and the base tokenizer are saved to).

    Returns:
        ``train_seconds`` (wall seconds of ``trainer.train()``), ``responses`` and ``generated_tokens`` (counted
        from every rollout's completion mask), ``optimizer_steps``, ``loss_type``, the recorded ``GRPOConfig``
        fields, the mixed precision, the parameter dtype and the logged mean reward per step.
    """
    import gymnasium as gym
    import torch
    from datasets import Dataset
    from trl import GRPOTrainer

    import llm_gym  # noqa: F401  (registers the envs)
    from llm_gym.rewards import math_answer_reward

    vs_trl, settings, seed = load_script("benchmark_trl"), spec["settings"], spec["seed"]
    torch.manual_seed(seed)
    env = gym.make(settings["env"], model=spec["model_path"], split="train",
                   max_new_tokens=settings["max_new_tokens"], device="cpu")
    base = env.unwrapped
    draws = argparse.Namespace(seed=seed, warmup=0, steps=settings["steps"], n_prompts=settings["n_prompts"])
    order = vs_trl.same_problems(draws, base.n_problems)  # the prompts our GRPO draws with this seed, in order
    dataset = Dataset.from_dict({"prompt": [base.prompts[k] for k in order],
                                 "answer": [base.problems[k].answer for k in order]})

    def math_accuracy(prompts, completions, answer, **kwargs):
        """llm-gym's ``math_answer_reward`` in TRL's signature (the ``answer`` column arrives as a kwarg)."""
        return math_answer_reward(prompts, completions, answer)

    with tempfile.TemporaryDirectory(prefix="vs-trl-learning-") as out_dir:
        config = build_trl_config(spec["config"], settings, seed, out_dir)
        trainer = GRPOTrainer(model=base.lm.load_model(), reward_funcs=[math_accuracy], args=config,
                              train_dataset=dataset, processing_class=vs_trl.trl_tokenizer(base.lm.tokenizer,
                                                                                           base.prompts[0]))
        counts = {"responses": 0, "generated_tokens": 0}
        score = trainer._generate_and_score_completions

        def counted(*a, **kw):
            out = score(*a, **kw)
            counts["responses"] += int(out["completion_mask"].shape[0])
            counts["generated_tokens"] += int(out["completion_mask"].sum())
            return out

        trainer._generate_and_score_completions = counted
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
    trainer.model.save_pretrained(spec["model_out"], safe_serialization=True)
    base.lm.tokenizer.save_pretrained(spec["model_out"])  # the tokenizer our side exports too
    return {"train_seconds": train_seconds, **counts, "optimizer_steps": trainer.state.global_step,
            "loss_type": trainer.loss_type, "trl_config": {k: v for k, v in config.to_dict().items()
                                                           if k in TRL_RECORDED},
            "accelerate_mixed_precision": trainer.accelerator.mixed_precision,
            "param_dtype": str(next(trainer.model.parameters()).dtype),
            "train_reward": [h["reward"] for h in trainer.state.log_history if "reward" in h]}


#: GRPOConfig fields copied into the report (what the comparison depends on).
TRL_RECORDED = ("loss_type", "beta", "epsilon", "epsilon_high", "scale_rewards", "learning_rate", "lr_scheduler_type",
                "weight_decay", "max_grad_norm", "temperature", "top_p", "top_k", "num_generations",
                "per_device_train_batch_size", "max_completion_length", "num_iterations", "bf16", "max_steps", "seed")


# ------------------------------------------------------------------------------------------ parent
@dataclasses.dataclass
class Context:
    """What every run of one invocation shares: settings, folders, subprocess limits."""

    settings: dict[str, Any]
    work_dir: Path
    user_model: str | None
    tiny: bool
    threads: int | None
    timeout: float
    keep_models: bool

    @functools.cached_property
    def model_path(self) -> str | None:
        """The base model: ``--model``, None (the default model) or the tiny model, built on first use."""
        if not self.tiny:
            return self.user_model
        from llm_gym.models import build_tiny_model

        return str(build_tiny_model(self.work_dir / "tiny_model"))


def spawn_measured(argv: list[str], log: Path, ctx: Context) -> dict[str, float]:
    """Run one subprocess (output to ``log``); its wall seconds and its own peak RSS (``os.wait4``).

    Args:
        argv: the command.
        log: file that receives its stdout and stderr.
        ctx: ``threads`` (``OMP_NUM_THREADS``) and ``timeout`` (seconds, then it is killed).

    Returns:
        ``{"seconds": wall seconds, "peak_rss_gb": the child's own ru_maxrss in GB (1e9 bytes)}``.

    Raises:
        RuntimeError: it failed or timed out (the message carries the log's tail and the command).
    """
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    if ctx.threads:
        env["OMP_NUM_THREADS"] = str(ctx.threads)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=SCRIPTS.parent)
        timer = threading.Timer(ctx.timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-30:])
        raise RuntimeError(f"{shlex.join(argv[1:])} exited with {proc.returncode} (killed after "
                           f"--timeout {ctx.timeout:.0f} s if negative); log {log}:\n{tail}")
    return {"seconds": time.perf_counter() - start, "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9}


def evaluate_model(model: str | None, out: Path, ctx: Context) -> dict[str, Any]:
    """Greedy accuracy of a model folder (None: the default model) with ``scripts/evaluate.py``, in a subprocess.

    Args:
        model: HF model folder, or None for the default model.
        out: where evaluate.py writes its JSON (its log goes beside it).
        ctx: the settings (env, ``eval_n`` test problems, ``max_new_tokens`` in tokens, device).

    Returns:
        evaluate.py's metrics: ``accuracy``, ``reward_mean``, ``response_length`` (tokens), ``n``, ...

    Raises:
        RuntimeError: evaluate.py failed (:func:`spawn_measured`).
    """
    s = ctx.settings
    argv = [sys.executable, str(SCRIPTS / "evaluate.py"), "--env", s["env"], "--split", s["eval_split"],
            "--n", str(s["eval_n"]), "--max-new-tokens", str(s["max_new_tokens"]), "--batch-size", "50",
            "--device", s["device"], "--out", str(out)]
    if model is not None:
        argv += ["--model", model]
    spawn_measured(argv, out.with_suffix(".log"), ctx)
    return json.loads(out.read_text())


def evaluate_base(ctx: Context) -> dict[str, Any]:
    """The base model's held-out accuracy (the "before" of every run; greedy, so the same for every seed)."""
    return evaluate_model(ctx.model_path, ctx.work_dir / "eval_before.json", ctx)


def run_one(name: str, seed: int, ctx: Context) -> dict[str, Any]:
    """Train one configuration with one seed in its own subprocess, evaluate it; the report entry.

    Args:
        name: a key of :data:`CONFIGS`.
        seed: the training seed (both sides: weights' RNG and the prompt draws).
        ctx: settings and folders; the run's files go to ``<work_dir>/<name>_s<seed>/``, the trained model is
            deleted after its evaluation unless ``keep_models``.

    Returns:
        ``config``, ``seed``, ``side``, ``accuracy_after``, ``response_length_after`` (tokens), ``responses``,
        ``generated_tokens``, ``optimizer_steps``, ``train_seconds``, ``process_seconds`` (the training
        subprocess's wall time), ``peak_rss_gb`` (its peak RSS) and the side's own details.

    Raises:
        RuntimeError: the training or the evaluation subprocess failed (its log's tail in the message).
    """
    run_dir = ctx.work_dir / f"{name}_s{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a run interrupted before it was recorded starts over
    run_dir.mkdir(parents=True)
    if CONFIGS[name][0] == "trl":
        model_dir, result_path = run_dir / "model", run_dir / "trl_result.json"
        spec = {"config": name, "seed": seed, "settings": ctx.settings, "model_path": ctx.model_path,
                "model_out": str(model_dir), "result": str(result_path)}
        (run_dir / "spec.json").write_text(json.dumps(spec, indent=2))
        proc = spawn_measured([sys.executable, str(Path(__file__).resolve()), "--worker-spec",
                               str(run_dir / "spec.json")], run_dir / "train.log", ctx)
        detail = json.loads(result_path.read_text())
    else:
        model_dir = run_dir / name / "hf_model"
        proc = spawn_measured(train_argv(name, seed, ctx.settings, ctx.model_path, run_dir), run_dir / "train.log",
                              ctx)
        results = json.loads((run_dir / name / "results.json").read_text())
        keep = ("loss_aggregation", "advantage_estimator", "batch_size", "mixed_precision", "learning_rate", "beta")
        detail = {"train_seconds": results["train_seconds"], "responses": results["timesteps"],
                  "generated_tokens": results["generated_tokens"], "optimizer_steps": results["optimizer_steps"],
                  "algorithm": results["algorithm"],
                  "algorithm_config": {k: results["algorithm_config"][k] for k in keep}}
    after = evaluate_model(str(model_dir), run_dir / "eval_after.json", ctx)
    if not ctx.keep_models:  # 0.5 GB each for the default model; the logs and JSONs stay
        shutil.rmtree(model_dir, ignore_errors=True)
        (run_dir / name / "model.zip").unlink(missing_ok=True)
    return {"config": name, "seed": seed, "side": CONFIGS[name][0], "accuracy_after": after["accuracy"],
            "response_length_after": after["response_length"], "process_seconds": proc["seconds"],
            "peak_rss_gb": proc["peak_rss_gb"], **detail}


def spread(values: list[float]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (n - 1; None for one value), min and max of ``values``.

    >>> round(spread([0.4, 0.45, 0.5])["std"], 6)
    0.05
    """
    return {"n": len(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None, "min": min(values), "max": max(values)}


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per configuration (in :data:`CONFIGS` order): its seeds and the :func:`spread` of every metric.

    Args:
        runs: report entries (``config``, ``seed`` and the :data:`METRICS`), in any order.

    Returns:
        ``{config: {"seeds": sorted seeds, metric: spread, ...}}``; a metric missing from a run is left out.
    """
    out = {}
    for name in CONFIGS:
        rows = sorted((r for r in runs if r["config"] == name), key=lambda r: r["seed"])
        if rows:
            out[name] = {"seeds": [r["seed"] for r in rows]} | {
                m: spread([float(r[m]) for r in rows]) for m in METRICS if all(r.get(m) is not None for r in rows)}
    return out


def format_markdown(summary: dict[str, dict[str, Any]]) -> str:
    """The markdown table: per configuration the mean +- std and min-max of the accuracy after, and means.

    Args:
        summary: :func:`summarize`'s output.

    Returns:
        A header, a separator and one row per configuration (std "n/a" for one seed).
    """

    def pm(s: dict[str, Any], digits: int = 3) -> str:
        std = "n/a" if s["std"] is None else f"{s['std']:.{digits}f}"
        return f"{s['mean']:.{digits}f} ± {std}"

    lines = ["| configuration | seeds | accuracy before | accuracy after, mean ± std | after, min-max | "
             "responses | generated tokens | training s, mean ± std | peak RSS GB, mean |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        acc = s["accuracy_after"]
        lines.append(f"| {CONFIGS[name][1]} (`{name}`) | {' '.join(map(str, s['seeds']))} | "
                     f"{s['accuracy_before']['mean']:.3f} | {pm(acc)} | {acc['min']:.3f}-{acc['max']:.3f} | "
                     f"{s['responses']['mean']:.0f} | {s['generated_tokens']['mean']:,.0f} | "
                     f"{pm(s['train_seconds'], 0)} | {s['peak_rss_gb']['mean']:.2f} |")
    return "\n".join(lines)


def load_report(out: Path | None, settings: dict[str, Any], command: str) -> dict[str, Any]:
    """The report to continue (``out`` if it exists) or a new one, with ``command`` appended to its commands.

    Args:
        out: the JSON path, or None (no resume).
        settings: :func:`resolve_settings`; must equal the saved ones.
        command: this invocation's command line.

    Raises:
        ValueError: ``out`` was written with other settings (the message names them).
    """
    fresh = {"settings": settings, "commands": [], "before": None, "runs": [], "summary": {}}
    report = json.loads(out.read_text()) if out is not None and out.exists() else fresh
    if report.get("settings") != settings:
        old = report.get("settings") or {}
        diff = sorted(k for k in settings.keys() | old.keys() if old.get(k) != settings.get(k))
        raise ValueError(f"{out} holds runs with other settings (differing: {', '.join(diff)}); pass the flags "
                         f"it was written with to continue it, or another --out to start a new comparison")
    report["commands"].append(command)
    return report


def write_report(out: Path | None, report: dict[str, Any]) -> None:
    """Write the JSON atomically (a kill never leaves half a file); nothing when ``out`` is None."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)


@contextlib.contextmanager
def work_folder(args: argparse.Namespace) -> Iterator[Path]:
    """``--work-dir``, or a temporary folder with ``--tiny`` and none given (removed afterwards)."""
    if args.work_dir or not args.tiny:
        path = Path(args.work_dir or DEFAULT_WORK_DIR).resolve()
        path.mkdir(parents=True, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="vs-trl-learning-") as tmp:
            yield Path(tmp)


def run(args: argparse.Namespace, command: str, runner: Callable[[str, int, Context], dict] = run_one,
        before: Callable[[Context], dict] = evaluate_base) -> dict[str, Any]:
    """Every (seed, configuration) not yet in the report, one at a time; the report (written after each).

    Args:
        args: parsed flags; ``--configs`` x ``--seeds`` run seed by seed, skipping entries the JSON holds.
        command: recorded in the report's ``commands``.
        runner: trains and evaluates one entry (:func:`run_one`; replaceable in tests).
        before: evaluates the base model, once per JSON (:func:`evaluate_base`).

    Returns:
        The report (``settings``, ``commands``, ``before``, ``runs``, ``summary``, ``machine``) plus ``out``.

    Raises:
        ValueError: a size flag below 1, or a JSON written with other settings.
        RuntimeError: a subprocess failed (the entries done so far are saved).
    """
    settings = resolve_settings(args)
    path = (None if args.tiny else DEFAULT_OUT) if args.out is None else args.out
    out = Path(path) if path else None
    report = load_report(out, settings, command)
    with work_folder(args) as work:
        ctx = Context(settings, work, args.model, args.tiny, args.threads, args.timeout, args.keep_models)
        done = {(r["config"], r["seed"]) for r in report["runs"]}
        todo = [(name, seed) for seed in args.seeds for name in args.configs if (name, seed) not in done]
        for name, seed in sorted(done & {(n, s) for s in args.seeds for n in args.configs}):
            print(f"[vs-trl-learning] {name} seed {seed}: already in {out}, skipped", file=sys.stderr)
        if todo and report["before"] is None:
            print("[vs-trl-learning] evaluating the base model ...", file=sys.stderr, flush=True)
            report["before"] = before(ctx)
            write_report(out, report)
        for name, seed in todo:
            print(f"[vs-trl-learning] {name} seed {seed} ...", file=sys.stderr, flush=True)
            entry = runner(name, seed, ctx)
            report["runs"].append({**entry, "accuracy_before": report["before"]["accuracy"]})
            report["summary"] = summarize(report["runs"])
            report["machine"] = load_script("benchmark_trl").versions()
            write_report(out, report)
    report["summary"] = summarize(report["runs"])
    write_report(out, report)  # also when every entry was there: the command is recorded
    return report | {"out": None if out is None else str(out)}


def main(argv: list[str] | None = None, command: str | None = None) -> int:
    """Run the comparison (or, with ``--worker-spec``, one TRL training), print the table. Returns 0, or 2 on
    bad arguments or a JSON of other settings."""
    raw = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(raw)
    if args.worker_spec:
        spec = json.loads(Path(args.worker_spec).read_text())
        Path(spec["result"]).write_text(json.dumps(train_trl(spec), indent=2))
        return 0
    try:
        report = run(args, command or shlex.join([sys.executable, "scripts/benchmark_trl_learning.py", *raw]))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_markdown(report["summary"]))
    if report.get("out"):
        print(f"wrote {report['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
