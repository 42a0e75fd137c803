"""Evaluate a saved checkpoint (any algorithm), a Hugging Face model folder or the default model on an llm-gym env.

Prints the accuracy and mean response length over the first ``--n`` problems of the env's split
(greedy decoding unless ``--sample``) and optionally writes them to JSON. Scoring goes through the
env's own ``step`` (:func:`agents.common.evaluation.evaluate_accuracy`), so it matches training rewards.
``llm-gym eval ...`` and ``python scripts/evaluate.py ...`` run this module (:mod:`agents.cli.script`).

Example:
    python scripts/evaluate.py --checkpoint checkpoints/grpo_math.zip --env LLMMath-v0 --split test \
        --n 200 --out results.json
    LLM_GYM_CACHE=/tmp/llmgym_cache python scripts/evaluate.py --model default --n 50 --samples 5
    llm-gym eval --env my_package.envs:MyGame-v0 --env-kwargs '{"level": 2}' --n 20
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from agents.cli.script import write_json
from agents.env_ids import (
    check_env_id,
    entry_point_class,
    fit_kwargs,
    parse_env_kwargs,
    require_llm_env,
    split_dataset,
)


def number(kind: type, minimum: float, *, exclusive: bool = False) -> Callable[[str], int | float]:
    """An argparse ``type=``: an int (whole numbers only) or a finite float, ``>= minimum`` (``>`` if ``exclusive``).

    argparse names the flag in front of the message and exits with status 2 before anything loads:
    ``argument --batch-size: must be an integer >= 1, got 0``.

    >>> number(int, 1)("3"), number(float, 0, exclusive=True)("0.7")
    (3, 0.7)
    """
    what = "an integer" if kind is int else "a finite number"
    bound = f"{'>' if exclusive else '>='} {minimum}"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what} {bound}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {what} {bound}, got {text!r}")
        return value

    parse.__name__ = "integer" if kind is int else "number"
    return parse


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """Command-line flags (each documented in ``--help``; each number checked by :func:`number`).

    Args:
        prog: The program name in usage lines (``"llm-gym eval"``); None = argparse's (the script's name).
    """
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None,
                   help=".zip saved by model.save() (any algorithm); its policy weights are evaluated")
    p.add_argument("--model", default=None,
                   help="HF model folder, .gguf file or 'default' (unset = SmolLM2-135M-Instruct). With "
                        "--checkpoint: the base model whose tokenizer the env uses (default: the one recorded "
                        "in the checkpoint)")
    p.add_argument("--env", default="LLMMath-v0",
                   help="env id: llm-gym's, a plugin's (an llm_gym.envs entry point) or module:EnvId (importing "
                        "module registers EnvId), built on llm-gym's env bases (default: %(default)s)")
    p.add_argument("--env-kwargs", default=None,
                   help="more keywords of the env, a JSON object, e.g. '{\"game\": \"Wordle-v0\"}'; your "
                        "problems with their splits: '{\"dataset\": {\"train\": \"train.jsonl\", \"test\": "
                        "\"test.jsonl\"}}' (a dataset without splits is read with --split train only)")
    p.add_argument("--split", default="test", help="problem split: 'train' or 'test' (default: %(default)s)")
    p.add_argument("--n", type=number(int, 1), default=200,
                   help="number of problems: the first n of the split, capped at what the split holds "
                        "(default: %(default)s)")
    p.add_argument("--batch-size", type=number(int, 1), default=32, help="sequences per generate call (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=number(int, 1), default=None,
                   help="response budget in tokens (None = the env's registered default)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--greedy", dest="greedy", action="store_true", default=True,
                      help="greedy decoding (the default)")
    mode.add_argument("--sample", dest="greedy", action="store_false",
                      help="sample at --temperature instead of greedy decoding")
    p.add_argument("--temperature", type=number(float, 0, exclusive=True), default=1.0, help="sampling temperature with --sample (default: %(default)s)")
    p.add_argument("--seed", type=number(int, 0), default=0, help="torch seed, matters with --sample (default: %(default)s)")
    p.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda' (default: %(default)s)")
    p.add_argument("--out", default=None, help="write the metrics (no samples unless --samples) to this JSON file")
    p.add_argument("--samples", type=number(int, 0), default=0,
                   help="also print and write the first N (question, response, answer, correct) samples "
                        "(default: %(default)s)")
    p.add_argument("--progress", action="store_true", help="show a progress bar over batches")
    return p


def checkpoint_base_model(path: str | Path) -> str | None:
    """The ``model_name_or_path`` recorded in a checkpoint zip (its JSON metadata), or None."""
    from agents.common.checkpoint import META, peek_meta

    with zipfile.ZipFile(path) as archive:
        has_meta = META in archive.namelist()
    data = peek_meta(path) if has_meta else {}  # within the member's size cap and nesting limit
    value = data.get("model_name_or_path")
    return value if isinstance(value, str) else None


def split_size(env_id: str, split: str, env_kwargs: dict[str, Any] | None = None) -> int | None:
    """How many problems ``split`` of a registered env's task holds; None when unbounded or not known.

    Exact for the ``gsm8k`` and ``.jsonl`` tasks and the enumerated arithmetic levels 1-2
    (:func:`llm_gym.tasks.arithmetic.split_capacity`); arithmetic levels 3-4, the other tasks and ``dataset=``
    envs generate or read problems on demand (None). ``env_kwargs`` (``--env-kwargs``) override the registration's.

    Raises:
        EnvError: ``env_id`` is not registered. ValueError: a split the task does not have.
    """
    from llm_gym.tasks import get_problems
    from llm_gym.tasks.arithmetic import split_capacity

    kwargs = {**check_env_id(env_id).kwargs, **(env_kwargs or {})}
    if kwargs.get("dataset") is not None:
        return None
    task = kwargs.get("task", "arithmetic")
    if task == "arithmetic":
        levels = kwargs.get("difficulty", 1)
        levels = set(levels) if isinstance(levels, (list, tuple, set, frozenset)) else {levels}
        total = sum(split_capacity(level, split) for level in levels)
        return None if total == float("inf") else int(total)
    if task == "gsm8k" or str(task).endswith(".jsonl"):
        return len(get_problems(task, split=split))
    return None


def env_kwargs_of(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--env-kwargs`` object of ``args`` (parsed once; a dict afterwards).

    Raises:
        EnvError: not a JSON object.
    """
    if not isinstance(args.env_kwargs, dict):
        args.env_kwargs = parse_env_kwargs(args.env_kwargs)
    return args.env_kwargs


def problem_count(args: argparse.Namespace) -> int:
    """``--n`` capped at what the split holds (:func:`split_size`), with a one-line note when capped."""
    size = split_size(args.env, args.split, env_kwargs_of(args))
    n = args.n if size is None else min(args.n, size)
    if n < args.n:
        print(f"note: the {args.split} split of {args.env} holds {size} problems; evaluating all {size} "
              f"(--n {args.n})", file=sys.stderr)
    return n


def env_kwargs(model: str | None, args: argparse.Namespace, notes: bool = True) -> dict[str, Any]:
    """The ``gym.make`` keywords of the env to evaluate: the model, split, problem count, budget and ``--env-kwargs``.

    Keywords the env does not take are left out (:func:`~agents.env_ids.fit_kwargs`; an env without ``split=``
    is evaluated on its only problems, with a note); a ``dataset=`` without splits is refused for a split
    other than train (:func:`~agents.env_ids.split_dataset`). ``notes=False`` only checks: no note is printed
    and ``n_problems`` is left out.

    Raises:
        EnvError: an unknown env id, a ``--max-new-tokens`` or ``--env-kwargs`` keyword the env does not take,
            or a split the env's dataset does not have.
    """
    spec = check_env_id(args.env)
    require_llm_env(entry_point_class(spec), args.env)
    extra = env_kwargs_of(args)
    kwargs: dict[str, Any] = {"model": model, "split": args.split, "device": args.device, **extra}
    given = dict.fromkeys(extra, "--env-kwargs")
    if args.max_new_tokens is not None:
        kwargs["max_new_tokens"], given["max_new_tokens"] = args.max_new_tokens, "--max-new-tokens"
    kwargs = split_dataset(spec, fit_kwargs(spec, kwargs, given), args.split)
    if notes and "split" not in kwargs:
        print(f"note: {args.env} takes no split= keyword; evaluating its only problems (--split {args.split} "
              f"does not apply)", file=sys.stderr)
    if notes and "n_problems" in fit_kwargs(spec, {"n_problems": 1}, {}):
        kwargs["n_problems"] = problem_count(args)
    return kwargs


def make_env(model: str | None, args: argparse.Namespace):
    """``gym.make`` the env on ``model`` with the split, problem count and response budget asked for.

    ``--n`` is capped at what the split holds (:func:`problem_count`); an env that refuses ``n_problems=`` (it
    sets its own problems, as ``LLMGuessNumber-v0`` does) is made without it.

    Raises:
        EnvError: see :func:`env_kwargs`; or the env is not an llm-gym env.
    """
    import gymnasium as gym

    kwargs = env_kwargs(model, args)
    try:
        env = gym.make(args.env, **kwargs)
    except ValueError as exc:
        if "n_problems" not in kwargs or "n_problems" not in str(exc):
            raise
        env = gym.make(args.env, **{k: v for k, v in kwargs.items() if k != "n_problems"})
    require_llm_env(env, args.env)
    return env


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


def _writable_parent(path: Path) -> bool:
    """Whether ``path``'s nearest existing ancestor is a writable folder (so the file can be made)."""
    parent = next((p for p in path.parents if p.exists()), Path("."))
    return parent.is_dir() and os.access(parent, os.W_OK)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Evaluate, print, and write ``--out``. Returns 0, or 2 on missing files or an env id, keyword or split the env
    cannot take (bad flags exit with status 2). ``prog``: the command's name (``"llm-gym eval"``)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.out and (Path(args.out).is_dir() or not _writable_parent(Path(args.out))):
        parser.error(f"--out {args.out}: not a writable file path (a folder, or its folder cannot be made); the "
                     f"results could not be written after the evaluation. Choose another path.")
    try:
        env_kwargs(None, args, notes=False)  # the env id, keywords and split, before any model loads
        result = evaluate(args)
    except (FileNotFoundError, ValueError) as err:  # missing model or checkpoint, a split the task lacks; EnvError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_result(result)
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
