"""Process vs outcome supervision over several seeds at equal budget: run, then summarise.

Each (variant, seed) is one ``scripts/train.py`` job in its own subprocess, run one at a time, with the main
job's settings (GRPO 4 x 8, 320 responses, lr 2e-5, beta 0.04, temperature 0.7, 64 tokens) on
``--difficulty``; only the reward differs:

==================  ============================================================================================
variant             training reward
==================  ============================================================================================
``outcome``         the answer check only (DeepSeekMath 4.1.2 advantages)
``grounded``        ``--process-reward grounded``: grounded_arithmetic_step_reward per step (4.1.3 advantages)
``prm``             ``--process-reward-model PRM``: a PRM's P(good step) per step (4.1.3 advantages)
``iterative_prm``   ``prm`` plus ``--iterative``: the PRM retrained every rollout on grounded step labels with
                    10 % replay, and the reference reset (DeepSeekMath 4.1.4)
``grounded_min``    ``grounded`` with ``--process-credit min``: a token's advantage is the minimum, not the sum,
                    of the later steps' normalised rewards (PURE, arXiv:2504.15275); opt-in
``prm_min``         ``prm`` with ``--process-credit min``; opt-in
==================  ============================================================================================

In the process variants the answer check is one more step at the last token. Every run is evaluated greedily
on the same held-out problems (the first ``--eval-n`` of the level's test split). The summary reads each
run's ``results.json`` and TensorBoard scalars: held-out accuracy (mean, sample std, min, max over seeds),
the fraction of rollouts' groups with zero reward variance (``rollout/zero_std_groups``), generated tokens,
training time, and step statistics of the held-out responses (:func:`classify_arithmetic_steps`).

Runs already finished (a ``results.json`` in their folder) are skipped, so an interrupted comparison
continues where it stopped; ``--summarize-only`` runs nothing. The summary JSON accumulates: runs it already
records stay when their folders are gone, so seeds added later (or on another machine) join the earlier ones. Examples::

    python scripts/compare_process.py --difficulty 3 --prm outputs/prm_shepherd_L3/model
    python scripts/compare_process.py --difficulty 3 --variants outcome grounded --seeds 0 1 2
    python scripts/compare_process.py --summarize-only --out benchmarks/process_supervision/process_vs_outcome_L3.json
    python scripts/compare_process.py --variants outcome grounded --suffix lines \
        --train-args --prompt-template "$TEMPLATE"      # another prompt, runs named <variant>_L3lines_s<seed>
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS.parent), str(SCRIPTS)]  # the repository (llm_gym) and plot_curves

from llm_gym.rewards.grounded import GROUNDED_STEP_KINDS, classify_arithmetic_steps  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "outcome": [],
    "grounded": ["--process-reward", "grounded", "--advantage", "process"],
    "prm": ["--process-reward-model", "{prm}", "--advantage", "process"],
    "iterative_prm": ["--process-reward-model", "{prm}", "--advantage", "process", "--iterative"],
    "grounded_min": ["--process-reward", "grounded", "--advantage", "process", "--process-credit", "min"],
    "prm_min": ["--process-reward-model", "{prm}", "--advantage", "process", "--process-credit", "min"],
}
#: The variants run when ``--variants`` is not given (DeepSeekMath's four); the ``*_min`` ones are opt-in.
DEFAULT_VARIANTS: list[str] = ["outcome", "grounded", "prm", "iterative_prm"]


def build_parser() -> argparse.ArgumentParser:
    """Every flag with its meaning; the same text is ``--help``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--difficulty", type=int, nargs="+", default=[3], help="Arithmetic level(s) of train and test.")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds of every variant.")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS),
                   help=f"Variants to run (default: {' '.join(DEFAULT_VARIANTS)}).")
    p.add_argument("--prm", default=None, help="PRM folder (scripts/train_reward_model.py --kind process ...: "
                   "<output-dir>/model); needed by prm, prm_min and iterative_prm.")
    p.add_argument("--output-dir", default="outputs/process_vs_outcome", help="Root of the runs' folders.")
    p.add_argument("--out", default=None, help="Summary JSON (default "
                   "benchmarks/process_supervision/process_vs_outcome_L<levels>.json).")
    p.add_argument("--suffix", default="", help="Added to every run name after the level, to tell apart comparisons "
                   "that differ only in --train-args (e.g. 'lines' for a --prompt-template).")
    p.add_argument("--summarize-only", action="store_true", help="Run nothing; summarise the finished runs.")
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                   help="Everything after this flag goes to every scripts/train.py call (e.g. --model DIR).")
    return p


def run_name(variant: str, levels: list[int], seed: int, suffix: str = "") -> str:
    """The folder / TensorBoard name of one run, e.g. ``grounded_L3_s1`` (``grounded_L3lines_s1`` with a suffix)."""
    return f"{variant}_L{''.join(map(str, levels))}{suffix}_s{seed}"


def train_command(args: argparse.Namespace, variant: str, seed: int, first: bool) -> list[str]:
    """The ``scripts/train.py`` argv of one run (only the first run of the comparison evaluates "before").

    Raises:
        SystemExit: a PRM variant without ``--prm``.
    """
    if "{prm}" in VARIANTS[variant] and not args.prm:
        raise SystemExit(f"Variant {variant} needs --prm <folder of a process reward model>: train one with "
                         "scripts/train_reward_model.py --kind process --labels shepherd.")
    extra = [args.prm if a == "{prm}" else a for a in VARIANTS[variant]]
    cmd = [sys.executable, str(SCRIPTS / "train.py"), "--algo", "grpo", "--difficulty",
           *map(str, args.difficulty), "--seed", str(seed),
           "--run-name", run_name(variant, args.difficulty, seed, args.suffix),
           "--output-dir", args.output_dir, "--no-progress-bar", *extra, *args.train_args]
    return cmd if first else [*cmd, "--no-eval-before"]


def run_all(args: argparse.Namespace) -> None:
    """Run every missing (variant, seed), one subprocess at a time; a failed run stops the comparison."""
    root = Path(args.output_dir)
    first = True
    for seed in args.seeds:
        for variant in args.variants:
            folder = root / run_name(variant, args.difficulty, seed, args.suffix)
            done = (folder / "results.json").is_file()
            if not done:
                print(f"[compare_process] {folder.name}", flush=True)
                subprocess.run(train_command(args, variant, seed, first), check=True)
            first = first and done


def mean_scalar(tensorboard_dir: str | None, tag: str) -> float | None:
    """Mean of a TensorBoard scalar over a run's iterations (None when the run has no such tag or no logs)."""
    if not tensorboard_dir or not Path(tensorboard_dir).is_dir():
        return None
    from plot_curves import load_scalars  # scripts/plot_curves.py

    points = load_scalars(tensorboard_dir).get(tag, [])
    return statistics.fmean(v for _, v in points) if points else None


def step_statistics(samples: list) -> dict[str, float]:
    """Step kinds of held-out responses: steps per response, the share of each kind, answers that stop short.

    Args:
        samples: ``(question, response, answer, correct)`` per held-out problem (train.py's results.json).

    Returns:
        ``steps_per_response``, ``<kind>_fraction`` for every kind of :data:`GROUNDED_STEP_KINDS` (over all
        steps), and ``stops_short_fraction``: wrong answers whose every equation was true and grounded.
    """
    kinds, short = [], 0
    for question, response, _answer, correct in samples:
        row = classify_arithmetic_steps(question, [s.strip() for s in response.split("\n") if s.strip()])
        kinds.extend(row)
        short += bool(row) and not correct and "grounded" in row and set(row) <= {"grounded", "prose"}
    n = max(len(kinds), 1)
    out = {"steps_per_response": len(kinds) / max(len(samples), 1)}
    out |= {f"{kind}_fraction": kinds.count(kind) / n for kind in GROUNDED_STEP_KINDS}
    return out | {"stops_short_fraction": short / max(len(samples), 1)}


def run_summary(folder: Path) -> dict[str, Any] | None:
    """One finished run's figures (None if it has no results.json)."""
    path = folder / "results.json"
    if not path.is_file():
        return None
    res = json.loads(path.read_text())
    after = res.get("after") or {}
    out = {"accuracy_before": (res.get("before") or {}).get("accuracy"), "accuracy_after": after.get("accuracy"),
           "response_length_after": after.get("response_length"), "timesteps": res["timesteps"],
           "generated_tokens": res["generated_tokens"], "train_seconds": res["train_seconds"],
           "zero_std_groups": mean_scalar(res.get("tensorboard_dir"), "rollout/zero_std_groups")}
    return out | ({"steps": step_statistics(after["samples"])} if after.get("samples") else {})


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one run), min and max of held-out accuracy over seeds, and means
    of the other figures."""
    acc = [r["accuracy_after"] for r in runs]
    out = {"n_seeds": len(runs), "accuracy_mean": statistics.fmean(acc),
           "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0, "accuracy_min": min(acc),
           "accuracy_max": max(acc)}
    for key in ("zero_std_groups", "generated_tokens", "train_seconds", "response_length_after", "timesteps"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = statistics.fmean(values) if values else None
    steps = [r["steps"] for r in runs if "steps" in r]
    if steps:
        out["steps"] = {k: statistics.fmean(s[k] for s in steps) for k in steps[0]}
    return out


def markdown(summary: dict[str, Any]) -> str:
    """The summary as a markdown table, one row per variant."""
    lines = ["| variant | held-out accuracy, mean ± std (min-max) | seeds | zero-variance groups | "
             "generated tokens | steps / response | grounded / false / ungrounded / prose steps |",
             "|---|---|---|---|---|---|---|"]
    for variant, agg in summary["variants"].items():
        s = agg.get("steps", {})
        kinds = " / ".join(f"{s[f'{k}_fraction']:.2f}" for k in ("grounded", "false", "ungrounded", "prose")) \
            if s else "-"
        zero = "-" if agg["zero_std_groups"] is None else f"{agg['zero_std_groups']:.2f}"
        lines.append(f"| {variant} | {agg['accuracy_mean']:.3f} ± {agg['accuracy_std']:.3f} "
                     f"({agg['accuracy_min']:.3f}-{agg['accuracy_max']:.3f}) | {agg['n_seeds']} | {zero} | "
                     f"{agg['generated_tokens']:,.0f} | {s.get('steps_per_response', math.nan):.2f} | {kinds} |")
    return "\n".join(lines)


def recorded_runs(out: Path) -> dict[str, dict[str, Any]]:
    """The runs an earlier summary at ``out`` recorded (``{variant: {seed: figures}}``; empty if none)."""
    if not out.is_file():
        return {}
    return json.loads(out.read_text()).get("runs", {})


def summarize(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Every finished run of the chosen variants and seeds, and the per-variant aggregate.

    Runs that the summary already at ``out`` recorded stay in it when their folders are gone (a comparison
    continued on another machine, or with more seeds later); a run found on disk replaces its recorded figures.
    """
    root, runs = Path(args.output_dir), recorded_runs(out)
    for variant in args.variants:
        for seed in args.seeds:
            found = run_summary(root / run_name(variant, args.difficulty, seed, args.suffix))
            if found is not None:
                runs.setdefault(variant, {})[str(seed)] = found
    runs = {v: dict(sorted(seeds.items(), key=lambda kv: int(kv[0]))) for v, seeds in runs.items()}
    befores = [r["accuracy_before"] for v in runs.values() for r in v.values() if r["accuracy_before"] is not None]
    return {"difficulty": args.difficulty, "accuracy_before": befores[0] if befores else None, "runs": runs,
            "variants": {v: aggregate(list(seeds.values())) for v, seeds in runs.items()}}


def main(argv: list[str] | None = None) -> int:
    """Run the missing runs (unless ``--summarize-only``), then write and print the summary."""
    args = build_parser().parse_args(argv)
    if not args.summarize_only:
        run_all(args)
    levels = "".join(map(str, args.difficulty))
    out = Path(args.out or f"benchmarks/process_supervision/process_vs_outcome_L{levels}{args.suffix}.json")
    summary = summarize(args, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"Base model: {summary['accuracy_before']}\n{markdown(summary)}\nWrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
