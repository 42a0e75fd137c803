"""What ``llm-gym check`` finds: :class:`CheckResult` per check, :class:`EnvReport` per env, the table and the JSON.

Exit codes (:attr:`EnvReport.exit_code`, the largest over the envs checked): 0 every conformance check and probe
passed (learnability warnings allowed), 1 a conformance check failed (or the env could not be built), 3 a
reward-hack probe earned more than its baseline and every conformance check passed. 2 is a usage error (bad
flags, an unknown env id), from the command line.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CONFORMANCE", "EXIT_CONFORMANCE", "EXIT_OK", "EXIT_REWARD_HACK", "LEARNABILITY", "REWARD_HACK",
           "STATUSES", "CheckResult", "EnvReport", "print_reports", "write_json"]

#: The kinds of check: a failed conformance check exits 1, a failed probe 3, learnability only warns.
CONFORMANCE, REWARD_HACK, LEARNABILITY = "conformance", "reward_hack", "learnability"
#: ``pass``, ``fail``, ``warn`` (learnability: little or no signal) and ``skip`` (does not apply; the detail says why).
STATUSES = ("pass", "fail", "warn", "skip")
EXIT_OK, EXIT_CONFORMANCE, EXIT_REWARD_HACK = 0, 1, 3
_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}


@dataclass
class CheckResult:
    """One check's outcome.

    Attributes:
        name: The check (``gymnasium_check_env``, ``reward_determinism``, ``probe_empty_answer``, ``grpo_run``...).
        kind: :data:`CONFORMANCE`, :data:`REWARD_HACK` or :data:`LEARNABILITY`.
        status: One of :data:`STATUSES`.
        detail: One line for the table: what was measured, or why it failed or was skipped.
        data: The numbers behind it (rewards, baselines, per-iteration metrics...), written to the JSON.

    Raises:
        ValueError: an unknown ``status``.
    """

    name: str
    kind: str
    status: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"CheckResult status must be one of {STATUSES}, got {self.status!r}.")


@dataclass
class EnvReport:
    """Every check of one env.

    Attributes:
        env_id: The id as given (``module:EnvId`` kept).
        env_kwargs: The keywords the env was made with (the model as a string).
        checks: The results, in the order run.
        seconds: Wall time of the whole report.
        error: Why the env could not be checked at all (it could not be built), else None.
        skipped: Why it was not checked (``--all``: a missing optional extra, arguments it needs), else None.
    """

    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    skipped: str | None = None

    def failed(self, kind: str) -> list[CheckResult]:
        """The failed checks of ``kind``."""
        return [c for c in self.checks if c.kind == kind and c.status == "fail"]

    @property
    def exit_code(self) -> int:
        """:data:`EXIT_CONFORMANCE` (an error or a failed conformance check), :data:`EXIT_REWARD_HACK` (a failed
        probe), else :data:`EXIT_OK` (warnings and skips included)."""
        if self.error is not None or self.failed(CONFORMANCE):
            return EXIT_CONFORMANCE
        return EXIT_REWARD_HACK if self.failed(REWARD_HACK) else EXIT_OK

    @property
    def status(self) -> str:
        """``skip``, ``fail`` (exit code not 0), ``warn`` (a learnability warning) or ``pass``."""
        if self.skipped is not None:
            return "skip"
        if self.exit_code != EXIT_OK:
            return "fail"
        return "warn" if any(c.status == "warn" for c in self.checks) else "pass"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the attributes plus ``status`` and ``exit_code``."""
        return {"env_id": self.env_id, "status": self.status, "exit_code": self.exit_code,
                "seconds": round(self.seconds, 2), "error": self.error, "skipped": self.skipped,
                "env_kwargs": {k: _plain(v) for k, v in self.env_kwargs.items()},
                "checks": [dataclasses.asdict(c) for c in self.checks]}


def _plain(value: Any) -> Any:
    """``value`` if JSON can hold it, else its ``str`` (a model handle, a path)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def write_json(reports: list[EnvReport], path: str | Path, model: str | None) -> Path:
    """Write the reports as JSON (``{"model", "exit_code", "envs": [EnvReport.to_dict()...]}``); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"model": model, "exit_code": max((r.exit_code for r in reports), default=EXIT_OK),
            "envs": [r.to_dict() for r in reports]}
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return out


def print_reports(reports: list[EnvReport], console: Any = None) -> None:
    """Print one table per env (check, kind, status, detail) and, for several envs, a summary table.

    Args:
        reports: The reports.
        console: A ``rich.console.Console`` (default: a new one on stdout).
    """
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for report in reports:
        title = f"{report.env_id}: {report.status} (exit code {report.exit_code}, {report.seconds:.0f} s)"
        if report.skipped or report.error:
            console.print(f"[{_STYLE[report.status]}]{title}[/]: {report.skipped or report.error}")
            continue
        table = Table(title=title, title_justify="left")
        for column in ("check", "kind", "status", "detail"):
            table.add_column(column, overflow="fold")
        for c in report.checks:
            table.add_row(c.name, c.kind, f"[{_STYLE[c.status]}]{c.status}[/]", c.detail)
        console.print(table)
    if len(reports) > 1:
        summary = Table(title="llm-gym check: summary", title_justify="left")
        for column in ("env", "status", "exit", "conformance", "reward hacks", "learnability"):
            summary.add_column(column)
        for r in reports:
            counts = [_count(r, kind) for kind in (CONFORMANCE, REWARD_HACK, LEARNABILITY)]
            summary.add_row(r.env_id, f"[{_STYLE[r.status]}]{r.status}[/]", str(r.exit_code), *counts)
        console.print(summary)


def _count(report: EnvReport, kind: str) -> str:
    """``"4/4 pass"``, ``"1 fail"``, ``"warn"``... for the summary table."""
    checks = [c for c in report.checks if c.kind == kind]
    if not checks:
        return "-"
    bad = [c for c in checks if c.status in ("fail", "warn")]
    if bad:
        return ", ".join(f"{c.name} {c.status}" for c in bad)
    passed = sum(c.status == "pass" for c in checks)
    return f"{passed}/{len(checks)} pass"
