"""Plot the TensorBoard scalars of a training run to a PNG (one subplot per tag, x = timesteps).

Every ``events.out.tfevents.*`` file under ``--logdir`` (recursively) is read with TensorBoard's
``EventAccumulator``; points of the same tag from several files are merged and sorted by step. Tags the
run does not have are skipped with a note; ``--list`` prints the tags that are there.

Example:
    python scripts/plot_curves.py --logdir runs/GRPO_1 --tags rollout/ep_rew_mean rollout/accuracy \
        --out docs/img/grpo_reward.png
    python scripts/plot_curves.py --logdir runs/GRPO_1 --list
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--logdir", required=True, help="run folder holding TensorBoard event files, e.g. runs/GRPO_1")
    p.add_argument("--tags", nargs="+", default=list(DEFAULT_TAGS), help="scalar tags to plot, one subplot each")
    p.add_argument("--out", default=None, help="PNG path (default: <logdir>/curves.png)")
    p.add_argument("--list", action="store_true", help="print the scalar tags of the run and exit")
    p.add_argument("--smooth", type=float, default=0.0,
                   help="exponential moving average weight in [0, 1) drawn over the raw curve (0 = off)")
    p.add_argument("--title", default=None, help="figure title (default: the logdir)")
    p.add_argument("--cols", type=int, default=2, help="subplots per row")
    p.add_argument("--dpi", type=int, default=120, help="PNG resolution")
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


def plot(scalars: dict[str, list[tuple[int, float]]], tags: list[str], out: Path, args) -> None:
    """One subplot per tag (x = timesteps), saved as a PNG with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(1, min(args.cols, len(tags)))
    rows = math.ceil(len(tags) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, tags, strict=False):
        steps, values = zip(*scalars[tag], strict=True)
        if args.smooth > 0 and len(values) > 1:
            ax.plot(steps, values, color="C0", alpha=0.3, linewidth=1)
            ax.plot(steps, ema(list(values), args.smooth), color="C0", linewidth=1.5)
        else:
            ax.plot(steps, values, color="C0", linewidth=1.5, marker="o" if len(values) < 20 else None)
        ax.set_title(tag)
        ax.set_xlabel("timesteps")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tags):]:
        ax.set_visible(False)
    fig.suptitle(args.title or str(args.logdir))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=args.dpi)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """List tags or plot them. Returns 0, 1 when there is nothing to plot, 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    if not 0 <= args.smooth < 1:
        print("error: --smooth must be in [0, 1)", file=sys.stderr)
        return 2
    try:
        scalars = load_scalars(args.logdir)
    except NoEventsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.list:
        for tag, points in scalars.items():
            print(f"{tag}  ({len(points)} points, steps {points[0][0]}..{points[-1][0]})")
        return 0
    tags = [t for t in args.tags if t in scalars]
    for tag in args.tags:
        if tag not in scalars:
            print(f"note: tag {tag!r} not in the run, skipped", file=sys.stderr)
    if not tags:
        print(f"error: none of the tags {args.tags} are in {args.logdir}; available: {sorted(scalars)}",
              file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else Path(args.logdir) / "curves.png"
    plot(scalars, tags, out, args)
    print(f"wrote {out} ({len(tags)} plots: {', '.join(tags)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
