"""The ``llm-gym`` command (train, eval, check) and the env ids it accepts: llm-gym's, a user's registered env,
Gymnasium's ``module:EnvId`` form; a dataset without splits is never evaluated as if it were held out."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest

import agents.cli
from agents.cli import train
from tests.test_scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import docs_harness  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

USER_ENVS = '''
import gymnasium as gym

from llm_gym.envs.multiturn import GuessNumberEnv
from llm_gym.envs.sequence import SequenceEnv


class UserGuessEnv(GuessNumberEnv):
    """Guess a number in 1..3 (a user's multi-turn env)."""

    def __init__(self, **kwargs):
        super().__init__(low=1, high=3, **kwargs)


class NarrowEnv(SequenceEnv):
    """A sequence env that takes only a few keywords (no **kwargs)."""

    def __init__(self, model=None, device="auto", split="train", max_new_tokens=8):
        super().__init__(model=model, device=device, split=split, max_new_tokens=max_new_tokens,
                         max_prompt_length=128, n_problems=8)


gym.register("UserGuess-v0", entry_point=UserGuessEnv, kwargs={"max_prompt_length": 256, "max_turns": 2})
gym.register("UserNarrow-v0", entry_point=NarrowEnv)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module ``user_envs`` on sys.path that registers UserGuess-v0 and UserNarrow-v0 when imported."""
    (tmp_path / "user_envs.py").write_text(USER_ENVS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_envs"
    sys.modules.pop("user_envs", None)
    for env_id in ("UserGuess-v0", "UserNarrow-v0"):
        gym.registry.pop(env_id, None)


@pytest.fixture
def problem_files(tmp_path):
    """train.jsonl and test.jsonl with different questions."""
    for split, offset in (("train", 0), ("test", 50)):
        rows = [{"question": f"What is {k + offset} + 1?", "answer": str(k + offset + 1)} for k in range(3)]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def tiny(tiny_model_dir) -> list[str]:
    return ["--model", str(tiny_model_dir), "--device", "cpu"]


# ----------------------------------------------------------------------------- the command and the scripts
def test_console_script_lists_the_commands():
    exe = Path(sys.executable).with_name("llm-gym")
    proc = subprocess.run([str(exe), "eval", "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: llm-gym eval"), proc.stderr
    assert agents.cli.main(["--help"]) == 0 and agents.cli.main([]) == 2


def test_unknown_command(capsys):
    assert agents.cli.main(["tran"]) == 2
    assert "unknown command 'tran'; choose one of train, eval, check" in capsys.readouterr().err


def test_scripts_run_the_package_code():
    """scripts/train.py and scripts/evaluate.py are the CLI's modules, run in the script's namespace."""
    for name, module in (("train", "agents/cli/train.py"), ("evaluate", "agents/cli/evaluate.py")):
        script = load_script(name)
        assert script.main.__code__.co_filename.endswith(module)
        assert script.build_parser().format_help() == load_script(name).build_parser().format_help()
    assert "llm-gym train" in train.build_parser(prog="llm-gym train").format_usage()


# ----------------------------------------------------------------------------- env ids
@pytest.mark.parametrize("command", ["train", "eval"])
def test_unknown_env_id_lists_the_known_ones(command, capsys):
    code = None
    try:
        code = agents.cli.main([command, "--env", "NoSuchEnv-v0", "--device", "cpu"])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown env id 'NoSuchEnv-v0'. Known: LLMMath-v0" in err and "LLMTextArena-v0" in err
    assert "module:EnvId" in err


def test_module_env_id_whose_module_cannot_be_imported(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--env", "no_such_module_xyz:Foo-v0"])
    assert "cannot import module 'no_such_module_xyz'" in capsys.readouterr().err


def test_eval_and_train_a_users_env_by_module_id(user_module, tiny_model_dir, tmp_path):
    """`module:EnvId` imports the module (which registers the id); the env is evaluated and trained on."""
    out = tmp_path / "eval.json"
    assert agents.cli.main(["eval", "--env", f"{user_module}:UserGuess-v0", *tiny(tiny_model_dir), "--n", "2",
                            "--batch-size", "2", "--max-new-tokens", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 2 and result["env"] == f"{user_module}:UserGuess-v0"
    argv = ["train", "--env", f"{user_module}:UserGuess-v0", *tiny(tiny_model_dir), "--max-new-tokens", "4",
            "--n-prompts", "1", "--group-size", "2", "--total-timesteps", "2", "--eval-n", "2",
            "--eval-batch-size", "2", "--tensorboard-log", "", "--output-dir", str(tmp_path), "--no-progress-bar",
            "--verbose", "0", "--run-name", "run"]
    assert agents.cli.main(argv) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["command"].startswith("llm-gym train --env user_envs:UserGuess-v0")
    assert results["timesteps"] >= 2 and results["after"]["n"] == 2  # one step per turn


def test_a_flag_the_env_does_not_take_is_refused(user_module, capsys):
    env = f"{user_module}:UserNarrow-v0"
    args = train.parse_args(["--env", env, "--max-new-tokens", "4"])  # taken; device, split, model too
    assert args.env_kwargs == {}
    for flags, named in ((["--difficulty", "2"], "--difficulty (difficulty=)"),
                         (["--env-kwargs", '{"game": "x"}'], "--env-kwargs (game=)")):
        with pytest.raises(SystemExit) as done:
            train.parse_args(["--env", env, *flags])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert f"does not take {named}" in err and "its keywords: device, max_new_tokens, model, split" in err


def test_an_env_that_is_not_an_llm_env_is_refused(capsys):
    gym.register("CliNotLLM-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv")
    try:
        with pytest.raises(SystemExit):
            train.parse_args(["--env", "CliNotLLM-v0"])
        assert "CartPoleEnv, not an llm-gym env" in capsys.readouterr().err
    finally:
        del gym.registry["CliNotLLM-v0"]


def test_token_env_by_module_id_trains_on_tokens_and_evaluates_the_sequence_env(tiny_model_dir, capsys):
    """The bare id decides the family (token: a GroupVecEnv, held out on the sequence twin); gym.make gets the
    full `module:EnvId`."""
    from llm_gym import GroupVecEnv, SequenceEnv

    args = train.parse_args(["--env", "llm_gym:LLMMathToken-v0", *tiny(tiny_model_dir), "--n-prompts", "1",
                             "--group-size", "2", "--max-new-tokens", "4"])
    train_env, eval_env = train.make_envs(args)
    assert isinstance(train_env, GroupVecEnv) and train_env.num_envs == 2
    assert type(eval_env.unwrapped) is SequenceEnv and eval_env.unwrapped.split == "test"
    with pytest.raises(SystemExit):
        train.parse_args(["--env", "llm_gym:LLMGSM8K-v0"])
    assert "The GSM8K originals are test-only" in capsys.readouterr().err


# ----------------------------------------------------------------------------- held-out splits of dataset= envs
def test_eval_split_test_on_a_dataset_without_splits_is_an_error(problem_files, tiny_model_dir, capsys):
    dataset = json.dumps({"dataset": str(problem_files / "train.jsonl")})
    assert agents.cli.main(["eval", "--env-kwargs", dataset, *tiny(tiny_model_dir), "--n", "2"]) == 2
    err = capsys.readouterr().err
    assert "has no splits: split='test' would be the training problems again" in err
    assert '{"dataset": {"train": "train.jsonl", "test": "test.jsonl"}}' in err


def test_eval_reads_the_test_entry_of_a_dataset_mapping(problem_files, tiny_model_dir, tmp_path):
    dataset = {"train": str(problem_files / "train.jsonl"), "test": str(problem_files / "test.jsonl")}
    out = tmp_path / "eval.json"
    common = [*tiny(tiny_model_dir), "--n", "3", "--batch-size", "3", "--max-new-tokens", "4", "--samples", "3"]
    assert agents.cli.main(["eval", "--env-kwargs", json.dumps({"dataset": dataset}), *common, "--out", str(out)]) == 0
    assert [s["question"] for s in json.loads(out.read_text())["samples"]] == [f"What is {k} + 1?" for k in (50, 51, 52)]
    # A file without splits may be read as it is, with the train split.
    single = json.dumps({"dataset": dataset["train"]})
    assert agents.cli.main(["eval", "--env-kwargs", single, "--split", "train", *common, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["samples"][0]["question"] == "What is 0 + 1?"


def test_train_holds_out_the_test_split_of_a_dataset(problem_files, tiny_model_dir, capsys):
    single = json.dumps({"dataset": str(problem_files / "train.jsonl")})
    with pytest.raises(SystemExit) as done:
        train.parse_args(["--env-kwargs", single])
    assert done.value.code == 2 and "has no splits" in capsys.readouterr().err
    assert train.parse_args(["--env-kwargs", single, "--eval-n", "0"]).env_kwargs["dataset"].endswith("train.jsonl")
    both = {"train": str(problem_files / "train.jsonl"), "test": str(problem_files / "test.jsonl")}
    args = train.parse_args(["--env-kwargs", json.dumps({"dataset": both}), *tiny(tiny_model_dir),
                             "--max-prompt-length", "128"])
    train_env, eval_env = train.make_envs(args)
    assert train_env.unwrapped.problems[0].question == "What is 0 + 1?"
    assert eval_env.unwrapped.problems[0].question == "What is 50 + 1?"


# ----------------------------------------------------------------------------- the docs harness
def test_docs_harness_parses_llm_gym_lines():
    good = textwrap.dedent("""\
        llm-gym --help
        llm-gym check LLMMath-v0 --model default --grpo-iterations 2 --out report.json
        llm-gym check --all --model default --out benchmarks/check/all_envs.json
        llm-gym train --algo dapo --env LLMMath-v0 --batch-size 8
        .venv/bin/llm-gym eval --env LLMGSM8K-v0 --n 50
        """)
    assert docs_harness.check_shell_block(good, ROOT) == []
    bad = "llm-gym check LLMMath-v0 --no-such-flag\nllm-gym tran --algo grpo\nllm-gym train --eval-batch-size 0\n"
    problems = docs_harness.check_shell_block(bad, ROOT)
    assert [index for index, _ in problems] == [0, 1, 2]
    assert "unrecognized arguments: --no-such-flag" in problems[0][1] and "unknown command 'tran'" in problems[1][1]


def test_env_kwargs_reach_an_env_that_checks_its_own_keywords():
    """LLMReasoningGym-v0 takes its dataset's config keywords through **kwargs: --env-kwargs passes them on,
    and the env itself refuses one the dataset does not know."""
    kw = '{"task": "chain_sum", "max_terms": 2, "max_digits": 1}'
    args = train.parse_args(["--env", "LLMReasoningGym-v0", "--env-kwargs", kw])
    assert args.env_kwargs == {"task": "chain_sum", "max_terms": 2, "max_digits": 1}
