"""Plot the TensorBoard scalars of one or more training runs to a PNG (one subplot per tag, x = timesteps).

Every ``events.out.tfevents.*`` file under ``--logdir`` (recursively) is read with TensorBoard's
``EventAccumulator``; points of the same tag from several files are merged and sorted by step. Tags the
run does not have are skipped with a note; ``--list`` prints the tags that are there. Several ``--logdir``
values draw the runs side by side (one colour each, labelled by ``--labels`` or the folder names).

Example:
    python scripts/plot_curves.py --logdir runs/GRPO_1 --tags rollout/ep_rew_mean rollout/accuracy \
        --out docs/img/grpo_reward.png
    python scripts/plot_curves.py --logdir runs/GRPO_1 --list
    python scripts/plot_curves.py --logdir runs/GRPO_1 runs/DAPO_1 --labels GRPO DAPO --out cmp.png
    python scripts/plot_curves.py --logdir runs/GRPO_1 --json curves.json   # the plotted points as JSON too
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

DEFAULT_TAGS = ("rollout/ep_rew_mean", "rollout/accuracy", "rollout/response_length", "train/kl",
                "train/policy_loss", "train/grad_norm")


class NoEventsError(FileNotFoundError):
    """No TensorBoard event files (or no scalars) under the run folder."""


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags (each documented in ``--help``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--logdir", required=True, nargs="+",
                   help="run folder(s) holding TensorBoard event files, e.g. runs/GRPO_1 (several: side by side)")
    p.add_argument("--labels", nargs="+", default=None, help="legend label of each run (default: folder names)")
    p.add_argument("--tags", nargs="+", default=list(DEFAULT_TAGS), help="scalar tags to plot, one subplot each")
    p.add_argument("--out", default=None, help="PNG path (default: <first logdir>/curves.png)")
    p.add_argument("--list", action="store_true", help="print the scalar tags of the run and exit")
    p.add_argument("--smooth", type=float, default=0.0,
                   help="exponential moving average weight in [0, 1) drawn over the raw curve (0 = off)")
    p.add_argument("--title", default=None, help="figure title (default: the logdir)")
    p.add_argument("--cols", type=int, default=2, help="subplots per row")
    p.add_argument("--dpi", type=int, default=120, help="PNG resolution")
    p.add_argument("--json", default=None,
                   help="also write the plotted points as JSON: {label: {tag: [[step, value], ...]}}")
    return p


def load_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` from every event file under ``logdir``, sorted by step.

    Raises:
        NoEventsError: the folder is missing or holds no event files.
    """
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    root = Path(logdir)
    files = sorted(root.rglob("events.out.tfevents.*")) if root.is_dir() else []
    if not files:
        raise NoEventsError(f"no TensorBoard event files (events.out.tfevents.*) under {root}; pass the run "
                            "folder written by tensorboard_log=..., e.g. runs/GRPO_1")
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in files:
        acc = EventAccumulator(str(path), size_guidance={SCALARS: 0})  # 0 = keep every point
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(points) for tag, points in sorted(scalars.items())}


def ema(values: list[float], weight: float) -> list[float]:
    """TensorBoard-style exponential moving average (debiased)."""
    out, last = [], 0.0
    for i, v in enumerate(values, start=1):
        last = weight * last + (1 - weight) * v
        out.append(last / (1 - weight**i))
    return out


def plot(runs: dict[str, dict[str, list[tuple[int, float]]]], tags: list[str], out: Path, args) -> None:
    """One subplot per tag (x = timesteps), one line per run, saved as a PNG with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(1, min(args.cols, len(tags)))
    rows = math.ceil(len(tags) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, tags, strict=False):
        for i, (label, scalars) in enumerate(runs.items()):
            if tag in scalars:
                _plot_line(ax, scalars[tag], f"C{i}", label if len(runs) > 1 else None, args.smooth)
        if len(runs) > 1:
            ax.legend(fontsize=8)
        ax.set_title(tag)
        ax.set_xlabel("timesteps")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tags):]:
        ax.set_visible(False)
    fig.suptitle(args.title or ", ".join(args.logdir))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=args.dpi)
    plt.close(fig)


def _plot_line(ax, points: list[tuple[int, float]], color: str, label: str | None, smooth: float) -> None:
    steps, values = zip(*points, strict=True)
    if smooth > 0 and len(values) > 1:
        ax.plot(steps, values, color=color, alpha=0.3, linewidth=1)
        ax.plot(steps, ema(list(values), smooth), color=color, linewidth=1.5, label=label)
    else:
        ax.plot(steps, values, color=color, linewidth=1.5, marker="o" if len(values) < 20 else None, label=label)


def main(argv: list[str] | None = None) -> int:
    """List tags or plot them. Returns 0, 1 when there is nothing to plot, 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    if not 0 <= args.smooth < 1:
        print("error: --smooth must be in [0, 1)", file=sys.stderr)
        return 2
    labels = args.labels or [Path(d).name for d in args.logdir]
    if len(labels) != len(args.logdir):
        print(f"error: {len(labels)} --labels for {len(args.logdir)} --logdir values", file=sys.stderr)
        return 2
    try:
        runs = {label: load_scalars(d) for label, d in zip(labels, args.logdir, strict=True)}
    except NoEventsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.list:
        for label, scalars in runs.items():
            for tag, points in scalars.items():
                print(f"{label}: {tag}  ({len(points)} points, steps {points[0][0]}..{points[-1][0]})")
        return 0
    tags = [t for t in args.tags if any(t in scalars for scalars in runs.values())]
    for tag in args.tags:
        if tag not in tags:
            print(f"note: tag {tag!r} not in the run(s), skipped", file=sys.stderr)
    if not tags:
        print(f"error: none of the tags {args.tags} are in {args.logdir}; available: {sorted({t for s in runs.values() for t in s})}",
              file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else Path(args.logdir[0]) / "curves.png"
    plot(runs, tags, out, args)
    print(f"wrote {out} ({len(tags)} plots: {', '.join(tags)})")
    if args.json:
        points = {label: {t: [list(p) for p in scalars[t]] for t in tags if t in scalars}
                  for label, scalars in runs.items()}
        Path(args.json).write_text(json.dumps(points, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
