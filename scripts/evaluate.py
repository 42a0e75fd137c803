"""Evaluate a saved checkpoint (any algorithm), a Hugging Face model folder or the default model on an llm-gym env.

Prints the accuracy and mean response length over the first ``--n`` problems of the env's split
(greedy decoding unless ``--sample``) and optionally writes them to JSON. Scoring goes through the
env's own ``step`` (:func:`agents.common.evaluation.evaluate_accuracy`), so it matches training rewards.

Example:
    python scripts/evaluate.py --checkpoint checkpoints/grpo_math.zip --env LLMMath-v0 --split test \
        --n 200 --out results.json
    LLM_GYM_CACHE=/tmp/llmgym_cache python scripts/evaluate.py --model default --n 50 --samples 5
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags (each documented in ``--help``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None,
                   help=".zip saved by model.save() (any algorithm); its policy weights are evaluated")
    p.add_argument("--model", default=None,
                   help="HF model folder, .gguf file or 'default' (unset = SmolLM2-135M-Instruct). With "
                        "--checkpoint: the base model whose tokenizer the env uses (default: the one recorded "
                        "in the checkpoint)")
    p.add_argument("--env", default="LLMMath-v0", help="registered llm-gym env id (default: %(default)s)")
    p.add_argument("--split", default="test", help="problem split: 'train' or 'test' (default: %(default)s)")
    p.add_argument("--n", type=int, default=200,
                   help="number of problems: the first n of the split, capped at what the split holds "
                        "(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per generate call (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="response budget in tokens (None = the env's registered default)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--greedy", dest="greedy", action="store_true", default=True,
                      help="greedy decoding (the default)")
    mode.add_argument("--sample", dest="greedy", action="store_false",
                      help="sample at --temperature instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature with --sample (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="torch seed, matters with --sample (default: %(default)s)")
    p.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda' (default: %(default)s)")
    p.add_argument("--out", default=None, help="write the metrics (no samples unless --samples) to this JSON file")
    p.add_argument("--samples", type=int, default=0,
                   help="also print and write the first N (question, response, answer, correct) samples "
                        "(default: %(default)s)")
    p.add_argument("--progress", action="store_true", help="show a progress bar over batches")
    return p


def checkpoint_base_model(path: str | Path) -> str | None:
    """The ``model_name_or_path`` recorded in a checkpoint zip (its JSON metadata), or None."""
    from agents.common.checkpoint import META

    with zipfile.ZipFile(path) as archive:
        data = json.loads(archive.read(META).decode()) if META in archive.namelist() else {}
    value = data.get("model_name_or_path")
    return value if isinstance(value, str) else None


def split_size(env_id: str, split: str) -> int | None:
    """How many problems ``split`` of a registered env's task holds; None when unbounded or not known.

    Exact for the ``gsm8k`` and ``.jsonl`` tasks and the enumerated arithmetic levels 1-2
    (:func:`llm_gym.tasks.arithmetic.split_capacity`); arithmetic levels 3-4 and the other tasks generate
    problems on demand (None).

    Raises:
        gymnasium.error.Error: ``env_id`` is not registered. ValueError: a split the task does not have.
    """
    import gymnasium as gym

    import llm_gym  # noqa: F401  (registers the envs)
    from llm_gym.tasks import get_problems
    from llm_gym.tasks.arithmetic import split_capacity

    kwargs = gym.spec(env_id).kwargs
    task = kwargs.get("task", "arithmetic")
    if task == "arithmetic":
        levels = kwargs.get("difficulty", 1)
        levels = set(levels) if isinstance(levels, (list, tuple, set, frozenset)) else {levels}
        total = sum(split_capacity(level, split) for level in levels)
        return None if total == float("inf") else int(total)
    if task == "gsm8k" or str(task).endswith(".jsonl"):
        return len(get_problems(task, split=split))
    return None


def problem_count(args: argparse.Namespace) -> int:
    """``--n`` capped at what the split holds (:func:`split_size`), with a one-line note when capped."""
    size = split_size(args.env, args.split)
    n = args.n if size is None else min(args.n, size)
    if n < args.n:
        print(f"note: the {args.split} split of {args.env} holds {size} problems; evaluating all {size} "
              f"(--n {args.n})", file=sys.stderr)
    return n


def make_env(model: str | None, args: argparse.Namespace):
    """``gym.make`` the env on ``model`` with the split, problem count and response budget asked for.

    ``--n`` is capped at what the split holds (:func:`problem_count`).
    """
    import gymnasium as gym

    import llm_gym  # noqa: F401  (registers the envs)

    kwargs: dict[str, Any] = {"model": model, "split": args.split, "n_problems": problem_count(args),
                              "device": args.device}
    if args.max_new_tokens is not None:
        kwargs["max_new_tokens"] = args.max_new_tokens
    return gym.make(args.env, **kwargs)


def load_policy_model(args: argparse.Namespace):
    """Return ``(env, hf_model, source)`` for a checkpoint (any algorithm's ``save``) or a model folder."""
    if args.checkpoint:
        from agents import LLMAlgorithm

        if not Path(args.checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint not found: {args.checkpoint}")
        env = make_env(args.model or checkpoint_base_model(args.checkpoint), args)
        # The prompt length L and budget T of the eval env may differ from the training env's; they do not
        # change the weights, so the saved spaces are replaced by the env's (SB3 would refuse the env).
        spaces = {"observation_space": env.observation_space, "action_space": env.action_space}
        algo = LLMAlgorithm.load(args.checkpoint, env=env, device=args.device, custom_objects=spaces)  # any preset
        return env, algo.policy.model, str(args.checkpoint)
    env = make_env(args.model, args)
    lm = env.unwrapped.lm
    return env, lm.load_model(), lm.name_or_path


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`evaluate_accuracy`; returns the metrics plus the configuration (and samples if asked)."""
    from agents.common.evaluation import evaluate_accuracy

    env, model, source = load_policy_model(args)
    n = min(args.n, env.unwrapped.n_problems)  # make_env already capped --n at the split's size
    torch.manual_seed(args.seed)
    result = evaluate_accuracy(model, env, n_problems=n, batch_size=args.batch_size,
                               deterministic=args.greedy, temperature=args.temperature,
                               progress_bar=args.progress)
    samples = result.pop("samples")
    result |= {"source": source, "env": args.env, "split": args.split, "greedy": args.greedy,
               "max_new_tokens": env.unwrapped.max_new_tokens}
    if args.samples > 0:
        keys = ("question", "response", "answer", "correct")
        result["samples"] = [dict(zip(keys, s, strict=True)) for s in samples[: args.samples]]
    return result


def print_result(result: dict[str, Any]) -> None:
    """Human-readable summary (and the samples, if any)."""
    for sample in result.get("samples", []):
        print(f"--- Q: {sample['question']}\n    A: {sample['response']!r}\n"
              f"    gold {sample['answer']!r}, correct {sample['correct']}")
    decoding = "greedy" if result["greedy"] else "sampled"
    print(f"{result['source']} on {result['env']} ({result['split']}, n={result['n']}, {decoding})")
    print(f"accuracy {result['accuracy']:.4f}  reward_mean {result['reward_mean']:.4f}  "
          f"response_length {result['response_length']:.1f} tokens  "
          f"truncated {result['truncated_fraction']:.2%}  ({result['seconds']:.1f} s)")


def main(argv: list[str] | None = None) -> int:
    """Evaluate, print, and write ``--out``. Returns 0, or 2 on bad arguments / missing files."""
    args = build_parser().parse_args(argv)
    if args.n < 1 or args.batch_size < 1:
        print("error: --n and --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        result = evaluate(args)
    except (FileNotFoundError, ValueError) as err:  # missing model or checkpoint, a split the task lacks
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_result(result)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
