"""Issue 14's CLI fixes: ``evaluate.py --n`` caps at the split's size, a missing ``--model`` path is a clear
error, and ``train.py --help`` quotes the README's duration of the main job."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llm_gym.tasks import get_problems
from tests.test_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def five_problem_env(tmp_path):
    """A registered sequence env whose task is a .jsonl file of 5 problems (the whole split)."""
    import gymnasium as gym

    import llm_gym  # noqa: F401  (registers the envs)

    path = tmp_path / "five.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {k} + 1?", "answer": str(k + 1)}) + "\n"
                            for k in range(5)))
    env_id = "Issue14FiveProblems-v0"
    gym.register(env_id, entry_point="llm_gym.envs:SequenceEnv", kwargs={"task": str(path), "max_prompt_length": 256})
    yield env_id
    del gym.registry[env_id]


@pytest.mark.usefixtures("one_thread")
def test_evaluate_n_beyond_the_split_is_capped_with_one_note(five_problem_env, tiny_model_dir, tmp_path, capsys):
    """--n 9 on a 5-problem split evaluates those 5 and says so in one line (it used to exit with an error)."""
    evaluate = load_script("evaluate")
    out = tmp_path / "five.json"
    code = evaluate.main(["--model", str(tiny_model_dir), "--env", five_problem_env, "--device", "cpu", "--n", "9",
                          "--batch-size", "5", "--max-new-tokens", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert json.loads(out.read_text())["n"] == 5
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: the test split of {five_problem_env} holds 5 problems; evaluating all 5 (--n 9)"]


def test_split_size_is_exact():
    """The cap is what the split really holds: n = size loads, n = size + 1 is refused by the task."""
    evaluate = load_script("evaluate")
    assert evaluate.split_size("LLMGSM8K-v0", "test") == 100
    size = evaluate.split_size("LLMMath-v0", "test")  # arithmetic levels 1 and 2 (the env's registration)
    assert len(get_problems("arithmetic", split="test", n=size, difficulty=(1, 2))) == size
    with pytest.raises(ValueError, match=rf"hold only {size} distinct problems"):
        get_problems("arithmetic", split="test", n=size + 1, difficulty=(1, 2))


@pytest.mark.parametrize(("n", "expected"), [(3, 3), (100, 100), (101, 100)])
def test_problem_count_uses_min(n, expected, capsys):
    evaluate = load_script("evaluate")
    args = evaluate.build_parser().parse_args(["--env", "LLMGSM8K-v0", "--n", str(n)])
    assert evaluate.problem_count(args) == expected
    assert ("note:" in capsys.readouterr().err) == (n > 100)


def test_evaluate_missing_model_path_is_a_clear_error(capsys):
    evaluate = load_script("evaluate")
    assert evaluate.main(["--model", "path/to/model", "--device", "cpu", "--n", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Model folder not found: path/to/model") and "HFValidationError" not in err


def test_train_help_quotes_the_readme_duration(capsys):
    """README's ``make train`` line and ``train.py --help`` give the same minutes for the main job."""
    readme = (ROOT / "README.md").read_text()
    (readme_minutes,) = re.findall(r"make train .*?~(\d+) min", readme)
    with pytest.raises(SystemExit) as done:
        load_script("train").main(["--help"])
    assert done.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    (help_minutes,) = re.findall(r"whole GRPO job, both evaluations included, takes about (\d+) minutes", help_text)
    assert help_minutes == readme_minutes
