"""Write the defaults table of every algorithm page in docs/algorithms/ from the one source, AlgorithmConfig.

Each page holds its table between the lines ``<!-- BEGIN CONFIG TABLE -->`` and ``<!-- END CONFIG TABLE -->``;
``tests/test_docs_tables.py`` fails when a page is out of date. Run after changing a field or a preset::

    python scripts/docs_tables.py            # rewrite the tables
    python scripts/docs_tables.py --check    # exit 1 if a table is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents import ALGORITHMS, AlgorithmConfig
from agents.common.config import field_docs

BEGIN, END = "<!-- BEGIN CONFIG TABLE -->", "<!-- END CONFIG TABLE -->"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "algorithms"
#: page -> the ``--algo`` name whose preset it documents.
PAGES = {"grpo.md": "grpo", "dapo.md": "dapo", "gspo.md": "gspo", "ppo.md": "ppo", "rloo.md": "rloo",
         "reinforce_pp.md": "reinforce_pp", "cispo.md": "cispo", "dr_grpo.md": "drgrpo", "rft.md": "rft"}


def config_table(algo: str) -> str:
    """The markdown defaults table of ``algo``: every config field, its default, its meaning; bold = preset."""
    cls = ALGORITHMS[algo]
    preset, base, docs = cls.default_config(), AlgorithmConfig(), field_docs()
    rows = [f"Every keyword of `{cls.__name__}(policy, env, ...)` (generated from `agents.AlgorithmConfig` by "
            "`scripts/docs_tables.py`). **Bold**: where this preset differs from the base defaults (GRPO's). "
            "SB3's `policy_kwargs`, `tensorboard_log`, `verbose`, `seed`, `device` and `stats_window_size` "
            "follow, then `doctor` (the training doctor, [troubleshooting](../troubleshooting.md)) and "
            "`peft_config` (LoRA, [scaling](../scaling.md)). `scripts/train.py --algo " + algo + "` takes each field as a flag (`--field-name`).",
            "", "| Field | Default | Meaning |", "|---|---|---|"]
    for name in AlgorithmConfig.field_names():
        value = getattr(preset, name)
        shown = f"`{value!r}`"
        if value != getattr(base, name):
            shown = f"**{shown}**"
        rows.append(f"| `{name}` | {shown} | {docs[name].replace('|', '/')} |")
    return "\n".join(rows)


def render(page: Path, algo: str) -> str:
    """``page``'s text with its table regenerated.

    Raises:
        ValueError: the page lacks the BEGIN/END marker lines.
    """
    text = page.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{page} has no {BEGIN} / {END} lines to hold the defaults table")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{config_table(algo)}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or ``--check``) every page; returns a process exit code."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="Only report stale pages (exit 1 if any).")
    args = p.parse_args(argv)
    stale = []
    for name, algo in PAGES.items():
        page = DOCS / name
        new = render(page, algo)
        if new != page.read_text():
            stale.append(name)
            if not args.check:
                page.write_text(new)
    print(("stale: " if args.check else "rewrote: ") + (", ".join(stale) or "none"))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
