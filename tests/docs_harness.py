"""Run the code blocks of README.md and docs/ as tests, through Sybil (conventions in docs/docs-tests.md).

- ``python`` blocks run top to bottom, one namespace per document (Sybil's default). A block directly under
  ``<!-- docs-test: compile-only -->`` is only compiled.
- ``bash`` / ``sh`` / ``shell`` / ``console`` blocks never run. Each command in them that names
  ``scripts/<name>.py`` has its arguments parsed by that script's own argparse parser, in-process; each
  ``llm-gym <command> ...`` by that command's parser (``agents.cli.main``); each ``make <target>`` must name
  a target of the Makefile.
- Blocks in any other language (or none) are not run.

The root ``conftest.py`` builds the :class:`sybil.Sybil` with :func:`make_sybil` and provides the
``docs_workspace`` fixture (tiny model, temporary folder, sample files).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

from sybil import Document, Example, Region, Sybil
from sybil.evaluators.python import pad
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser

COMPILE_ONLY_MARKER = "<!-- docs-test: compile-only -->"
SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
DOC_PATTERNS = ("README.md", "docs/*.md", "docs/*/*.md", "docs/*/*/*.md")
# A documentation placeholder such as <DIR> or <run-name>: any value is fine.
_ANGLE_PLACEHOLDER = re.compile(r"<([A-Za-z][\w-]*)>")
_SCRIPT = re.compile(r"^(?:\./)?scripts/([\w-]+)\.py$")
_MAKE_RULE = re.compile(r"^([^\s:=#][^:=#]*?)\s*::?(?!=)", re.MULTILINE)
_SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;"}


class DocsCheckError(AssertionError):
    """A documented shell command that its script or the Makefile would reject."""


# --------------------------------------------------------------------------------------------- python


def compile_only(example: Example) -> None:
    """Sybil evaluator: compile a Python block (syntax check) without running it.

    Raises:
        SyntaxError: the block is not valid Python; the message names the document and line.
    """
    source = pad(example.parsed, example.line + example.parsed.line_offset)
    compile(source, example.path, "exec", dont_inherit=True)


def _marked_compile_only(document: Document, region: Region) -> bool:
    """True when the last non-blank line before the block's fence is :data:`COMPILE_ONLY_MARKER`."""
    before = document.text[:region.start].rstrip().rsplit("\n", 1)[-1]
    return before.strip() == COMPILE_ONLY_MARKER


class PythonBlockParser(PythonCodeBlockParser):
    """Sybil's markdown ``python`` block parser, plus the compile-only marker."""

    def __call__(self, document: Document) -> Iterable[Region]:
        """Yield the document's python regions; marked ones get the :func:`compile_only` evaluator."""
        for region in super().__call__(document):
            if _marked_compile_only(document, region):
                region.evaluator = compile_only
            yield region


# ---------------------------------------------------------------------------------------------- shell


def command_lines(source: str, console: bool = False) -> Iterator[tuple[int, str]]:
    """Logical command lines of a shell block: ``\\``-continuations joined.

    Args:
        source: the block's text.
        console: a ``console`` block: only lines starting with ``$ `` are commands (the rest is output).

    Yields:
        ``(index, line)``: the 0-based index in ``source`` of the line's first physical line, and the line.
    """
    start, parts = 0, []
    for i, raw in enumerate(source.splitlines()):
        if not parts:
            start = i
            if console:
                if not raw.lstrip().startswith("$ "):
                    continue
                raw = raw.lstrip()[2:]
        if raw.rstrip().endswith("\\"):
            parts.append(raw.rstrip()[:-1])
            continue
        parts.append(raw)
        yield start, " ".join(parts)
        parts = []
    if parts:
        yield start, " ".join(parts)


def split_commands(line: str) -> list[list[str]]:
    """Split one shell line into simple commands (at ``&&``, ``||``, ``;``, ``|``), comments dropped.

    ``<NAME>`` placeholders become ``$NAME`` first, so that ``<`` is not read as a redirection.

    Raises:
        ValueError: unbalanced quotes (from :mod:`shlex`).
    """
    lexer = shlex.shlex(_ANGLE_PLACEHOLDER.sub(r"$\1", line), posix=True, punctuation_chars=True)
    lexer.wordchars += "$:{},@%+"
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in _SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def _is_placeholder(token: str) -> bool:
    return "$" in token


def _strip_redirections(args: list[str]) -> list[str]:
    """Arguments up to the first redirection (``>``, ``2>``, ``<`` ...)."""
    for i, token in enumerate(args):
        if token and set(token) <= set("<>&"):
            return args[:i - 1] if i and args[i - 1].isdigit() else args[:i]
    return args


def _stand_in_placeholders(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """``args`` with each placeholder value (``$VAR``, ``<NAME>``) after an option of ``parser`` replaced by
    a value that option accepts (its first choice, or the first of 1, 0, 0.5, -1 its ``type`` takes, for a
    number checked by a range-checking ``type=`` too): the real value is unknown."""
    args = list(args)
    for i in range(1, len(args)):
        action = parser._option_string_actions.get(args[i - 1])
        if _is_placeholder(args[i]) and action is not None:
            if action.choices:
                args[i] = str(next(iter(action.choices)))
            elif action.type not in (None, str):
                args[i] = next((v for v in ("1", "0", "0.5", "-1") if _accepts(action.type, v)), args[i])
    return args


def _accepts(kind, value: str) -> bool:
    """Whether an argparse ``type=`` callable takes ``value``."""
    try:
        kind(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        return False
    return True


@contextlib.contextmanager
def _stop_after_parse() -> Iterator[None]:
    """Make ``ArgumentParser.parse_args`` raise :class:`_Parsed` once it succeeds (no training starts);
    ``parse_known_args`` (also used by two-pass parsers) gets placeholders replaced first."""
    original_args = argparse.ArgumentParser.parse_args
    original_known = argparse.ArgumentParser.parse_known_args

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else args
        return original_known(self, _stand_in_placeholders(self, args), namespace)

    def parse_args(self, args=None, namespace=None):
        raise _Parsed(original_args(self, args, namespace))

    argparse.ArgumentParser.parse_args = parse_args
    argparse.ArgumentParser.parse_known_args = parse_known_args
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original_args
        argparse.ArgumentParser.parse_known_args = original_known


class _Parsed(Exception):
    """Raised by the patched ``parse_args`` with the parsed namespace."""


_SCRIPT_MODULES: dict[Path, ModuleType] = {}


def load_script(path: Path) -> ModuleType:
    """Import ``scripts/<name>.py`` as a module (cached; importing a script never trains)."""
    path = path.resolve()
    if path not in _SCRIPT_MODULES:
        name = f"llm_gym_docs_script_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        _SCRIPT_MODULES[path] = module
    return _SCRIPT_MODULES[path]


def check_script_args(script: Path, argv: list[str]) -> str | None:
    """Parse ``argv`` with the script's own parser, through its ``main(argv)``; nothing else runs.

    ``main`` is called with ``ArgumentParser.parse_args`` patched to stop right after a successful parse,
    so the script's own dispatch (two-pass ``--algo`` parsing, ``--vs-trl-learning``...) is followed.

    Returns:
        None when the arguments parse (``--help`` included), else argparse's error message.
    """
    if not script.is_file():
        return f"no such script: {script.name}"
    module = load_script(script)
    if not callable(getattr(module, "main", None)):
        return f"{script.name} has no main(argv) to parse the arguments with"
    return _parse_through(module.main, argv, script.name)


def check_cli_args(argv: list[str]) -> str | None:
    """Parse an ``llm-gym <command> ...`` line's ``argv`` with the command's own parser (``agents.cli.main``).

    Returns:
        None when the arguments parse (``--help`` included), else the error message.
    """
    import agents.cli

    return _parse_through(agents.cli.main, argv, "llm-gym")


def _parse_through(main, argv: list[str], name: str) -> str | None:
    """Call ``main(argv)`` under :func:`_stop_after_parse`: None once a parse succeeds, else the error."""
    err = io.StringIO()
    with _stop_after_parse(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except _Parsed:
            return None
        except SystemExit as stop:
            if stop.code in (0, None):  # --help
                return None
            return err.getvalue().strip() or f"exit status {stop.code}"
    if code == 0:  # llm-gym --help: no parser involved
        return None
    return err.getvalue().strip() or f"{name}'s main() returned without parsing its arguments"


def make_targets(makefile: Path) -> set[str]:
    """Targets defined in a Makefile (rule lines ``target ...:``), special targets such as .PHONY included."""
    targets: set[str] = set()
    for match in _MAKE_RULE.finditer(makefile.read_text()):
        targets.update(match.group(1).split())
    return targets


def _strip_env_prefix(command: list[str]) -> list[str]:
    """Drop leading ``VAR=value`` assignments and an ``env`` program."""
    i = 0
    while i < len(command) and (re.match(r"^[A-Za-z_]\w*=", command[i]) or command[i] == "env"):
        i += 1
    return command[i:]


def check_command(command: list[str], root: Path) -> str | None:
    """Check one simple command: a ``scripts/<name>.py`` or ``llm-gym`` invocation or a ``make`` line; others pass.

    The script may be run by any program (``python``, ``.venv/bin/python``, ``torchrun``,
    ``accelerate launch``...): the tokens after the script path are its arguments.

    Returns:
        None when fine, else a message naming the problem.
    """
    command = _strip_env_prefix(command)
    if command and command[0] in ("do", "then", "else"):
        command = command[1:]
    if command and command[0] == "make":
        known = make_targets(root / "Makefile")
        wanted = [t for t in command[1:] if not t.startswith("-") and "=" not in t]
        missing = [t for t in wanted if t not in known]
        return f"no make target {', '.join(missing)} in Makefile" if missing else None
    if command and Path(command[0]).name == "llm-gym":
        error = check_cli_args(_strip_redirections(command[1:]))
        return None if error is None else f"llm-gym: {error}"
    for i, token in enumerate(command):
        match = _SCRIPT.match(token)
        if match:
            error = check_script_args(root / "scripts" / f"{match.group(1)}.py", _strip_redirections(command[i + 1:]))
            return None if error is None else f"{token}: {error}"
    return None


def check_shell_block(source: str, root: Path, console: bool = False) -> list[tuple[int, str]]:
    """Every problem in a shell block.

    Args:
        source: the block's text.
        root: repository root (``scripts/`` and ``Makefile`` are looked up there).
        console: ``$ ``-prompted block (:func:`command_lines`).

    Returns:
        ``(line index in source, message)`` per rejected command; empty when all pass.
    """
    problems = []
    for index, line in command_lines(source, console):
        try:
            commands = split_commands(line)
        except ValueError as err:
            problems.append((index, f"cannot split {line!r}: {err}"))
            continue
        for command in commands:
            error = check_command(command, root)
            if error:
                problems.append((index, f"{shlex.join(command)}\n    {error}"))
    return problems


class ShellFlagChecker:
    """Sybil evaluator for shell blocks: :func:`check_shell_block`, failing with file and line."""

    def __init__(self, root: Path, console: bool = False) -> None:
        self.root = root
        self.console = console

    def __call__(self, example: Example) -> None:
        """Raise :class:`DocsCheckError` listing every rejected command with its ``path:line``.

        Raises:
            DocsCheckError: a ``scripts/*.py`` or ``llm-gym`` command its parser rejects, or a missing make target.
        """
        first = example.line + example.parsed.line_offset + 1  # the fence is on example.line
        problems = check_shell_block(str(example.parsed), self.root, self.console)
        if problems:
            raise DocsCheckError("\n".join(f"{example.path}:{first + i}: {msg}" for i, msg in problems))


def shell_parsers(root: Path) -> list[CodeBlockParser]:
    """One Sybil code-block parser per shell language in :data:`SHELL_LANGUAGES`."""
    return [CodeBlockParser(lang, ShellFlagChecker(root, console=lang == "console")) for lang in SHELL_LANGUAGES]


def make_sybil(root: Path, fixtures: tuple[str, ...] = ("docs_workspace",)) -> Sybil:
    """The Sybil that collects README.md and every docs/ page (up to three folders deep).

    Args:
        root: repository root.
        fixtures: pytest fixtures each document's examples request (put in the document namespace).
    """
    return Sybil(parsers=[PythonBlockParser(), *shell_parsers(root)], path=str(root),
                 patterns=list(DOC_PATTERNS), fixtures=list(fixtures))
