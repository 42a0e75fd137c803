"""The ``llm-gym`` command: ``llm-gym train``, ``llm-gym eval`` and ``llm-gym check`` (pyproject ``[project.scripts]``).

Each command is a module with ``main(argv, prog) -> int``: :mod:`agents.cli.train` (= ``scripts/train.py``),
:mod:`agents.cli.evaluate` (= ``scripts/evaluate.py``) and :mod:`agents.cli.check` (docs/check.md). The CLI lives
in ``agents`` because training needs the algorithms, and ``agents`` depends on ``llm_gym``, not the reverse.

>>> main(["--help"])  # doctest: +ELLIPSIS
usage: llm-gym <command> [flags]
...
0
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["COMMANDS", "main"]

#: command -> (module with main(argv, prog), one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("agents.cli.train", "train a model with RL on an env (= scripts/train.py; the README's main job)"),
    "eval": ("agents.cli.evaluate", "evaluate a checkpoint or model folder on an env (= scripts/evaluate.py)"),
    "check": ("agents.cli.check", "conformance and learnability report of any env (docs/check.md)"),
}


def usage() -> str:
    """The top-level help text: the commands and how to get each one's flags."""
    lines = ["usage: llm-gym <command> [flags]", "", "commands:"]
    lines += [f"  {name:<7} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "llm-gym <command> --help lists the command's flags. Env ids: llm-gym's, a plugin's (an "
              "llm_gym.envs entry point) or module:EnvId."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``llm-gym <command> [flags]``; returns the command's exit code (2 for an unknown command).

    Args:
        argv: The arguments after ``llm-gym`` (default: ``sys.argv[1:]``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"llm-gym: unknown command {command!r}; choose one of {', '.join(COMMANDS)}.\n\n{usage()}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest, prog=f"llm-gym {command}")


if __name__ == "__main__":
    sys.exit(main())
