"""Issue 27, scripts/train.py: every flag is checked before the model loads, no value is silently replaced, the
model is saved before the evaluation after training, and ``--resume`` refuses flags that contradict the checkpoint
and records what ran.

The table of numeric flags and their ranges below is written by hand from the flags' documented meaning (not
read from the script), and a completeness test fails when a numeric flag is added without a row.
"""

from __future__ import annotations

import json
import math
import string
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import ALGORITHMS
from tests.test_scripts import load_script

train = load_script("train")

# flag -> (int or float, minimum, maximum, minimum allowed?, maximum allowed?); None = no bound.
INT, FLOAT = int, float
FLAGS: dict[str, tuple] = {
    # the script's own flags
    "--max-prompt-length": (INT, 1, None), "--max-turns": (INT, 1, None), "--tool-call-cost": (FLOAT, 0, None),
    "--difficulty": (INT, 1, 4), "--max-new-tokens": (INT, 1, None), "--format-weight": (FLOAT, 0, None),
    "--step-penalty": (FLOAT, None, 0), "--iterative-every": (INT, 1, None),
    "--replay-fraction": (FLOAT, 0, 1, True, False), "--iterative-epochs": (INT, 1, None),
    "--total-timesteps": (INT, 1, None), "--eval-n": (INT, 0, None), "--eval-batch-size": (INT, 1, None),
    "--seed": (INT, 0, 2**32 - 1), "--save-freq": (INT, 0, None), "--lora-r": (INT, 0, None),
    "--lora-alpha": (FLOAT, 0, None, False), "--lora-dropout": (FLOAT, 0, 1, True, False), "--verbose": (INT, 0, 2),
    # agents.AlgorithmConfig's numeric fields
    "--n-prompts": (INT, 1, None), "--group-size": (INT, 1, None), "--micro-batch-size": (INT, 1, None),
    "--n-epochs": (INT, 1, None), "--max-sampling-rounds": (INT, 1, None), "--batch-size": (INT, 1, None),
    "--overlong-buffer": (INT, 0, None), "--temperature": (FLOAT, 0, None, False),
    "--clip-range": (FLOAT, 0, None, False), "--max-grad-norm": (FLOAT, 0, None, False),
    "--clip-range-high": (FLOAT, 0, None, False), "--clip-range-vf": (FLOAT, 0, None, False),
    "--target-kl": (FLOAT, 0, None, False), "--beta": (FLOAT, 0, None), "--eps": (FLOAT, 0, None),
    "--overlong-penalty-factor": (FLOAT, 0, None), "--vf-coef": (FLOAT, 0, None), "--ent-coef": (FLOAT, 0, None),
    "--learning-rate": (FLOAT, 0, None), "--top-p": (FLOAT, 0, 1, False, True), "--gamma": (FLOAT, 0, 1),
    "--gae-lambda": (FLOAT, 0, 1), "--reward-threshold": (FLOAT, None, None),
}


def spec(flag: str) -> tuple:
    kind, low, high, *inclusive = FLAGS[flag]
    low_in, high_in = (*inclusive, True, True)[:2]
    return kind, low, high, low_in, high_in


@st.composite
def invalid_values(draw, flag: str) -> str:
    """Text no reading of ``flag`` may accept: non-numbers, non-finite numbers, out-of-range numbers, and
    non-integral numbers for an int flag."""
    kind, low, high, low_in, high_in = spec(flag)
    choices = [st.sampled_from(["nan", "inf", "-inf", "NaN", "Infinity", "abc", "", "1,5", "0x10", "1/2", "True"]),
               st.text(string.ascii_letters + " ,;", min_size=1).filter(lambda t: t.strip().lower() != "none")]
    if kind is INT:
        choices.append(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()).map(repr))
        choices.append(st.sampled_from(["1e3", "2.0"]))
        if low is not None:
            choices.append(st.integers(max_value=low - 1).map(str))
        if high is not None:
            choices.append(st.integers(min_value=high + 1).map(str))
    else:
        if low is not None:
            choices.append(st.floats(max_value=low, exclude_max=low_in, allow_infinity=False).map(repr))
        if high is not None:
            choices.append(st.floats(min_value=high, exclude_min=high_in, allow_infinity=False).map(repr))
    return draw(st.one_of(choices))


@st.composite
def flag_and_bad_value(draw) -> tuple[str, str]:
    flag = draw(st.sampled_from(sorted(FLAGS)))
    return flag, draw(invalid_values(flag))


def test_every_numeric_flag_is_in_the_table():
    parser = train.build_parser()
    numeric = {a.option_strings[0] for a in parser._actions if a.type not in (None, str)}
    assert numeric == set(FLAGS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=flag_and_bad_value())
def test_bad_numeric_flags_exit_before_any_model_loads(case, capsys, monkeypatch):
    """Non-numbers, NaN, infinities, out-of-range and (for int flags) non-integral values are refused by the
    parser with status 2 and a message naming the flag; nothing is loaded."""
    flag, value = case

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(train, "make_envs", no_model)
    monkeypatch.setattr(train, "init_distributed", no_model)
    with pytest.raises(SystemExit) as done:
        train.main(["--device", "cpu", f"{flag}={value}"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert flag in err, err


@pytest.mark.parametrize(("argv", "message"), [
    (["--eval-batch-size", "0"], "argument --eval-batch-size: must be an integer >= 1, got 0."),
    (["--max-new-tokens", "0"], "argument --max-new-tokens: must be an integer >= 1, got 0."),  # used to become 64
    (["--total-timesteps", "-10"], "argument --total-timesteps: must be an integer >= 1, got -10."),
    (["--lora-alpha", "nan"], "argument --lora-alpha: must be a finite number > 0, got nan."),
    (["--learning-rate", "nan"], "error: --learning-rate must be a finite number"),  # the config's own words
    (["--n-prompts", "2", "--group-size", "2", "--batch-size", "5"],
     "error: --batch-size=5 must be in 1..--n-prompts*--group-size=4"),
    (["--algo", "gspo", "--importance-sampling-level", "token"],
     "error: GSPO's --importance-sampling-level must be 'sequence' or 'sequence-token'"),
    (["--batch-size", "1.5"], "argument --batch-size: invalid int or none value: '1.5'"),
])
def test_the_issue_cases_name_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        train.parse_args(argv)
    assert done.value.code == 2
    assert message in capsys.readouterr().err


def test_valid_values_are_passed_as_given():
    """0 is a value, not "unset": --format-weight 0 reaches the env; a flag left out is the env's default."""
    args = train.parse_args(["--format-weight", "0", "--max-new-tokens", "1", "--clip-range-high", "none",
                             "--seed", str(2**32 - 1), "--lora-dropout", "0"])
    assert (args.format_weight, args.max_new_tokens, args.clip_range_high, args.seed) == (0.0, 1, None, 2**32 - 1)
    assert train.parse_args([]).format_weight is None and train.parse_args([]).max_new_tokens is None


# ----------------------------------------------------------------------------- save first, then evaluate
@pytest.mark.usefixtures("one_thread")
def test_an_evaluation_error_after_training_keeps_the_trained_model(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """The evaluation after training raises: model.zip and hf_model are already saved, results.json records the
    error, and the error reaches the caller."""
    real = train.evaluate_all

    def failing_after(model, env, plain_env, args, label):
        if label == "after":
            raise RuntimeError("evaluation exploded")
        return real(model, env, plain_env, args, label)

    monkeypatch.setattr(train, "evaluate_all", failing_after)
    argv = ["--model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "4", "--n-prompts", "2",
            "--group-size", "2", "--total-timesteps", "4", "--eval-n", "2", "--eval-batch-size", "2",
            "--tensorboard-log", "", "--output-dir", str(tmp_path), "--no-progress-bar", "--verbose", "0",
            "--run-name", "run"]
    with pytest.raises(RuntimeError, match="evaluation exploded"):
        train.main(argv)
    run = tmp_path / "run"
    assert (run / "model.zip").is_file() and (run / "hf_model").is_dir()
    results = json.loads((run / "results.json").read_text())
    assert results["after"] is None and results["after_error"] == "RuntimeError: evaluation exploded"
    assert results["timesteps"] == 4 and results["before"]["n"] == 2
    assert ALGORITHMS["grpo"].load(run / "model.zip", device="cpu").num_timesteps == 4
    assert "the trained model is saved in" in capsys.readouterr().err


# ----------------------------------------------------------------------------- resume
def fake_checkpoint(path: Path, algo: str = "ppo", seed: int = 3, lora: dict | None = None,
                    num_timesteps: int = 8) -> Path:
    """A checkpoint's plain-JSON settings alone (what --resume reads before any model loads)."""
    klass = ALGORITHMS[algo]
    config = klass.default_config().to_dict() | {"learning_rate": 1e-3}
    meta = {"format": "llm-gym-checkpoint", "version": 1, "algorithm": klass.__name__, "config": config,
            "sb3": {"seed": seed}, "state": {"num_timesteps": num_timesteps}, "peft_config": lora,
            "model_name_or_path": "tiny-model"}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("llm_gym.json", json.dumps(meta))
    return path


@pytest.mark.parametrize(("flags", "named"), [
    (["--algo", "grpo"], "--algo 'grpo' (the checkpoint has 'ppo')"),
    (["--learning-rate", "0.5"], "--learning-rate 0.5 (the checkpoint has 0.001)"),
    (["--lora-r", "4"], "--lora-r 4 (the checkpoint has 0)"),
    (["--seed", "1"], "--seed 1 (the checkpoint has 3)"),
    (["--model", "other-model"], "--model 'other-model' (the checkpoint has 'tiny-model')"),
    (["--n-prompts", "2", "--seed", "9"], "--n-prompts 2 (the checkpoint has 16); --seed 9 (the checkpoint has 3)"),
])
def test_resume_refuses_flags_that_contradict_the_checkpoint(tmp_path, monkeypatch, flags, named):
    """Before any model loads: each conflicting flag is named with both values."""
    monkeypatch.setattr(train, "make_envs", lambda *a, **k: pytest.fail("the model was loaded"))
    zip_path = fake_checkpoint(tmp_path / "model.zip")
    with pytest.raises(SystemExit) as done:
        train.main(["--resume", str(zip_path), "--device", "cpu", "--total-timesteps", "16", *flags])
    message = str(done.value.code)
    assert named in message and "contradict" in message


def test_resume_with_lora_compares_every_lora_flag(tmp_path):
    lora = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "c_attn"]}
    zip_path = fake_checkpoint(tmp_path / "model.zip", algo="grpo", lora=lora)
    ok = train.parse_args(["--resume", str(zip_path), "--lora-r", "4", "--lora-target-modules", "c_attn", "q_proj",
                           "--total-timesteps", "16"])
    train.resume_settings(ok, ["--resume", str(zip_path), "--lora-r", "4", "--lora-target-modules", "c_attn",
                               "q_proj", "--total-timesteps", "16"])
    assert (ok.lora_r, ok.lora_alpha, ok.lora_target_modules) == (4, 8, ["q_proj", "c_attn"])
    argv = ["--resume", str(zip_path), "--lora-alpha", "16", "--total-timesteps", "16"]
    with pytest.raises(SystemExit, match=r"--lora-alpha 16\.0 \(the checkpoint has 8\)"):
        train.resume_settings(train.parse_args(argv), argv)


def test_resume_records_what_ran_and_needs_more_timesteps(tmp_path):
    """Flags left out take the checkpoint's values (results.json records them); matching flags are fine;
    --total-timesteps is the total, so one at or below the checkpoint's steps has nothing to train."""
    zip_path = fake_checkpoint(tmp_path / "model.zip")
    argv = ["--resume", str(zip_path), "--algo", "ppo", "--total-timesteps", "16", "--learning-rate", "0.001"]
    args = train.parse_args(argv)
    train.resume_settings(args, argv)
    expected = ALGORITHMS["ppo"].default_config().to_dict()
    assert args.algo == "ppo" and args.seed == 3 and args.model == "tiny-model" and args.lora_r == 0
    assert args.learning_rate == 1e-3 and args.n_prompts == expected["n_prompts"] == 16  # PPO preset, not CPU profile
    assert args.total_timesteps == 16  # applied
    argv = ["--resume", str(zip_path), "--total-timesteps", "8"]
    with pytest.raises(SystemExit, match=r"--total-timesteps 8 is the total to reach, and .* is already at 8 env"):
        train.resume_settings(train.parse_args(argv), argv)
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    argv = ["--resume", str(tmp_path / "broken.zip")]
    with pytest.raises(SystemExit, match=r"not a readable llm-gym checkpoint \(CheckpointError: .*BadZipFile"):
        train.resume_settings(train.parse_args(argv), argv)


@pytest.mark.parametrize("value", [math.inf, -1])
def test_as_flag_names_leaves_other_words_alone(value):
    assert train.as_flag_names(f"beta must be >= 0, got {value}; betas and n_epochs_x stay") == (
        f"--beta must be >= 0, got {value}; betas and n_epochs_x stay")


# ----------------------------------------------------------------------------- scripts/evaluate.py, the same rule
EVALUATE = load_script("evaluate")
# flag -> (int or float, minimum, minimum allowed?), by hand from the flags' meaning.
EVALUATE_FLAGS = {"--n": (INT, 1, True), "--batch-size": (INT, 1, True), "--max-new-tokens": (INT, 1, True),
                  "--temperature": (FLOAT, 0, False), "--seed": (INT, 0, True), "--samples": (INT, 0, True)}


def test_every_numeric_evaluate_flag_is_in_the_table():
    parser = EVALUATE.build_parser()
    assert {a.option_strings[0] for a in parser._actions if a.type not in (None, str)} == set(EVALUATE_FLAGS)


@st.composite
def evaluate_flag_and_bad_value(draw) -> tuple[str, str]:
    flag = draw(st.sampled_from(sorted(EVALUATE_FLAGS)))
    kind, low, low_in = EVALUATE_FLAGS[flag]
    below = (st.integers(max_value=low - 1).map(str) if kind is INT else
             st.floats(max_value=low, exclude_max=low_in, allow_infinity=False).map(repr))
    junk = st.sampled_from(["nan", "inf", "-inf", "abc", "", "1e400", "0x10"] + (["1.5", "2.0"] if kind is INT else []))
    return flag, draw(st.one_of(below, junk))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=evaluate_flag_and_bad_value())
def test_bad_evaluate_flags_exit_before_any_model_loads(case, capsys, monkeypatch):
    flag, value = case
    monkeypatch.setattr(EVALUATE, "evaluate", lambda args: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as done:
        EVALUATE.main([f"{flag}={value}"])
    assert done.value.code == 2
    assert f"argument {flag}: must be " in capsys.readouterr().err


def test_resume_compares_models_by_what_they_load(tiny_model_dir, monkeypatch):
    """--model is compared as the folder it loads: a relative spelling of the saved folder is no conflict."""
    monkeypatch.chdir(tiny_model_dir.parent)
    assert train._same("model", tiny_model_dir.name, str(tiny_model_dir))
    assert not train._same("model", "./no-such-folder", str(tiny_model_dir))


@pytest.mark.parametrize("case", ["output_dir_is_a_file", "model_zip_is_a_folder", "tensorboard_log_is_a_file",
                                  "checkpoints_is_a_file"])
def test_unwritable_outputs_are_refused_before_anything_loads(case, tmp_path, capsys):
    """A finished training must never be lost to a path that cannot be written: checked at parse time."""
    from agents.cli import train as cli_train

    afile = tmp_path / "afile"
    afile.write_text("x")
    argv = ["--output-dir", str(tmp_path / "out"), "--run-name", "run"]
    if case == "output_dir_is_a_file":
        argv = ["--output-dir", str(afile)]
    elif case == "model_zip_is_a_folder":
        (tmp_path / "out" / "run" / "model.zip").mkdir(parents=True)
    elif case == "tensorboard_log_is_a_file":
        argv += ["--tensorboard-log", str(afile)]
    else:
        (tmp_path / "out" / "run").mkdir(parents=True)
        (tmp_path / "out" / "run" / "checkpoints").write_text("x")
    with pytest.raises(SystemExit) as done:
        cli_train.parse_args(argv)
    assert done.value.code == 2
    assert "could not be saved after training" in capsys.readouterr().err


def test_eval_out_that_is_a_folder_is_refused_before_evaluating(tmp_path, capsys):
    from agents.cli import evaluate as cli_eval

    with pytest.raises(SystemExit) as done:
        cli_eval.main(["--out", str(tmp_path)])
    assert done.value.code == 2 and "not a writable file path" in capsys.readouterr().err


def test_resume_reads_the_settings_within_the_size_cap(tmp_path):
    """A zip whose llm_gym.json inflates past its cap is refused before it is inflated whole."""
    import zipfile

    from agents.common.checkpoint import META, META_MAX_BYTES

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(META, b"[" + b" " * (META_MAX_BYTES + 10) + b"]")
    argv = ["--resume", str(bomb)]
    with pytest.raises(SystemExit, match="cap"):
        train.resume_settings(train.parse_args(argv), argv)
