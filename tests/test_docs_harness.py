"""The docs harness (tests/docs_harness.py) can fail: bad flags, missing make targets, broken python blocks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import docs_harness  # noqa: E402


def examples_of(tmp_path: Path, text: str, root: Path = ROOT) -> list:
    """Sybil examples of a markdown file holding ``text``, parsed as the docs are."""
    page = tmp_path / "page.md"
    page.write_text(text)
    sybil = docs_harness.make_sybil(root, fixtures=())
    return list(sybil.parse(page).examples())


def test_unknown_flag_is_rejected_with_file_and_line(tmp_path):
    text = "# t\n\n```bash\npython scripts/plot_curves.py --logdir runs/x \\\n    --no-such-flag 3\n```\n"
    (example,) = examples_of(tmp_path, text)
    with pytest.raises(docs_harness.DocsCheckError) as err:
        example.evaluate()
    message = str(err.value)
    assert f"{tmp_path / 'page.md'}:4:" in message  # the command starts on line 4 of the page
    assert "unrecognized arguments: --no-such-flag 3" in message


def test_valid_flags_pass_and_nothing_runs(tmp_path):
    # plot_curves.py would exit 1 on a missing logdir if it ran past argument parsing.
    text = "```bash\nLLM_GYM_CACHE=/tmp/x python scripts/plot_curves.py --logdir missing_dir --list  # tags\n```\n"
    (example,) = examples_of(tmp_path, text)
    example.evaluate()


def test_bad_choice_in_a_chain_is_rejected():
    problems = docs_harness.check_shell_block(
        "cd . && .venv/bin/python scripts/train.py --algo nope\n", ROOT)
    assert len(problems) == 1
    index, message = problems[0]
    assert index == 0
    assert "--algo" in message and "invalid choice: 'nope'" in message


def test_placeholders_stand_for_valid_values():
    source = ("for algo in grpo dapo; do\n"
              "  python scripts/train.py --algo $algo --seed <SEED> --run-name ${algo}_s1\n"
              "done\n")
    assert docs_harness.check_shell_block(source, ROOT) == []


def test_missing_make_target_is_rejected(tmp_path):
    (tmp_path / "Makefile").write_text(".PHONY: test\ntest: setup\n\tpytest\nVENV ?= .venv\n")
    problems = docs_harness.check_shell_block("make test\nmake docs   # build the site\n", tmp_path)
    assert problems == [(1, "make docs\n    no make target docs in Makefile")]


def test_make_targets_read_rules_not_assignments(tmp_path):
    (tmp_path / "Makefile").write_text("VENV ?= .venv\nPY := $(VENV)/bin/python\nsetup: $(VENV)/.installed\n"
                                       "train test: setup\n\t$(PY) x.py\n")
    assert docs_harness.make_targets(tmp_path / "Makefile") == {"setup", "train", "test"}


def test_failing_python_block_fails(tmp_path):
    text = "Intro.\n\n```python\nx = 1\n```\n\nMore.\n\n```python\ny = x + undefined_name\n```\n"
    first, second = examples_of(tmp_path, text)
    first.evaluate()
    assert first.namespace["x"] == 1  # one namespace per document
    with pytest.raises(NameError) as err:
        second.evaluate()
    assert err.traceback[-1].lineno + 1 == 10  # the failing line is line 10 of the page (0-based lineno)
    assert str(err.traceback[-1].path) == str(tmp_path / "page.md")


def test_compile_only_marker_compiles_without_running(tmp_path):
    text = ("```python\nraise RuntimeError('ran')\n```\n\n"
            f"{docs_harness.COMPILE_ONLY_MARKER}\n```python\nraise RuntimeError('ran')\n```\n\n"
            f"{docs_harness.COMPILE_ONLY_MARKER}\n```python\ndef broken(:\n```\n")
    plain, marked, broken = examples_of(tmp_path, text)
    with pytest.raises(RuntimeError):
        plain.evaluate()
    marked.evaluate()
    with pytest.raises(SyntaxError):
        broken.evaluate()


def test_other_languages_and_mkdocstrings_lines_are_not_collected(tmp_path):
    text = ("::: agents.grpo\n    options:\n      show_source: false\n\n"
            "```text\nnot code\n```\n\n```json\n{\"a\": 1}\n```\n\n```\nraise SystemExit\n```\n")
    assert examples_of(tmp_path, text) == []


def test_every_docs_page_is_collected():
    sybil = docs_harness.make_sybil(ROOT)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    assert [p for p in pages if not sybil.should_parse(p)] == []
    assert not sybil.should_parse(ROOT / "benchmarks" / "notes.md")


def test_console_blocks_check_prompted_lines_only():
    source = "$ python scripts/evaluate.py --bogus\nusage: evaluate.py ...\n$ make test\n"
    problems = docs_harness.check_shell_block(source, ROOT, console=True)
    assert [index for index, _ in problems] == [0]
    assert "unrecognized arguments: --bogus" in problems[0][1]


def test_command_lines_join_continuations():
    source = "a --x 1 \\\n  --y 2\n# comment\nb\n"
    assert list(docs_harness.command_lines(source)) == [(0, "a --x 1    --y 2"), (2, "# comment"), (3, "b")]
    assert docs_harness.split_commands("X=1 python s.py --a 'b c' && make t  # note") == [
        ["X=1", "python", "s.py", "--a", "b c"], ["make", "t"]]


def test_failing_blocks_fail_a_pytest_run_naming_page_and_line(tmp_path):
    """End to end: a pytest run over a page with a broken python block and a missing make target fails."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "Makefile").write_text("test:\n\tpytest\n")
    (tmp_path / "conftest.py").write_text(
        f"import sys\nfrom pathlib import Path\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "import docs_harness\n"
        "pytest_collect_file = docs_harness.make_sybil(Path(__file__).parent, fixtures=()).pytest()\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        "# Page\n\n```python\nx = 1\n```\n\n```python\nprint(x + y)\n```\n\n```bash\nmake test\nmake docs\n```\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "docs"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 failed, 1 passed" in run.stdout
    assert "page.md:8: NameError" in run.stdout  # print(x + y) is on line 8
    assert "page.md:13: make docs" in run.stdout and "no make target docs in Makefile" in run.stdout
