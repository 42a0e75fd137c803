"""scripts/compare_process.py: commands per variant, aggregation by hand, step statistics, resume, end to end."""

from __future__ import annotations

import json

import pytest

from tests.test_scripts import load_script


@pytest.fixture(scope="module")
def cp():
    return load_script("compare_process")


def test_train_commands_differ_only_in_the_reward(cp):
    args = cp.build_parser().parse_args(["--prm", "prm_dir", "--difficulty", "3", "--train-args", "--eval-n", "4"])
    outcome = cp.train_command(args, "outcome", 1, first=True)
    assert outcome[outcome.index("--seed") + 1] == "1" and "--no-eval-before" not in outcome
    assert outcome[-2:] == ["--eval-n", "4"] and outcome[outcome.index("--run-name") + 1] == "outcome_L3_s1"
    grounded = cp.train_command(args, "grounded", 1, first=False)
    assert grounded[-1] == "--no-eval-before"
    assert grounded[grounded.index("--process-reward") + 1] == "grounded" and "--advantage" in grounded
    iterative = cp.train_command(args, "iterative_prm", 2, first=False)
    assert iterative[iterative.index("--process-reward-model") + 1] == "prm_dir" and "--iterative" in iterative
    least = cp.train_command(args, "grounded_min", 0, first=False)
    assert least[least.index("--process-credit") + 1] == "min" and "--process-credit" not in grounded
    assert "grounded_min" not in args.variants and "prm_min" not in args.variants  # opt-in
    prm_least = cp.train_command(args, "prm_min", 0, first=False)
    assert prm_least[prm_least.index("--process-credit") + 1] == "min" and "prm_dir" in prm_least
    tagged = cp.build_parser().parse_args(["--suffix", "lines", "--difficulty", "2", "3"])
    cmd = cp.train_command(tagged, "outcome", 0, first=False)
    assert cmd[cmd.index("--run-name") + 1] == "outcome_L23lines_s0"
    with pytest.raises(SystemExit, match="needs --prm"):
        cp.train_command(cp.build_parser().parse_args([]), "prm", 0, first=False)


def test_aggregate_by_hand(cp):
    runs = [{"accuracy_after": a, "zero_std_groups": z, "generated_tokens": t, "train_seconds": 10.0,
             "response_length_after": 5.0, "timesteps": 320} for a, z, t in
            [(0.10, 0.5, 100), (0.20, 0.3, 200), (0.15, None, 300)]]
    agg = cp.aggregate(runs)
    assert agg["accuracy_mean"] == pytest.approx(0.15) and agg["accuracy_std"] == pytest.approx(0.05)
    assert (agg["accuracy_min"], agg["accuracy_max"], agg["n_seeds"]) == (0.10, 0.20, 3)
    assert agg["zero_std_groups"] == pytest.approx(0.4) and agg["generated_tokens"] == pytest.approx(200)
    assert cp.aggregate(runs[:1])["accuracy_std"] == 0.0


def test_step_statistics_by_hand(cp):
    samples = [("What is 4 + 10 + 10?", "4 + 10 = 14\n\n14 + 10 = 24", "24", 1.0),   # grounded, grounded
               ("What is 4 + 10 + 10?", "4 + 10 = 14", "24", 0.0),                   # stops short
               ("What is 4 + 10 + 10?", "First add.\n2 + 2 = 5", "24", 0.0)]          # prose, false
    stats = cp.step_statistics(samples)
    assert stats["steps_per_response"] == pytest.approx(5 / 3)
    assert stats["grounded_fraction"] == pytest.approx(3 / 5) and stats["false_fraction"] == pytest.approx(1 / 5)
    assert stats["prose_fraction"] == pytest.approx(1 / 5) and stats["ungrounded_fraction"] == 0.0
    assert stats["stops_short_fraction"] == pytest.approx(1 / 3)


@pytest.mark.usefixtures("one_thread")
def test_runs_variants_once_and_summarizes(cp, tiny_model_dir, tmp_path, monkeypatch, capsys):
    argv = ["--variants", "outcome", "grounded", "--seeds", "0", "--output-dir", str(tmp_path / "runs"),
            "--out", str(tmp_path / "summary.json"), "--train-args", "--model", str(tiny_model_dir), "--device",
            "cpu", "--max-new-tokens", "8", "--n-prompts", "2", "--group-size", "2", "--total-timesteps", "4",
            "--eval-n", "4", "--eval-batch-size", "4", "--tensorboard-log", str(tmp_path / "tb"), "--verbose", "0"]
    assert cp.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["variants"]) == {"outcome", "grounded"}
    outcome = summary["runs"]["outcome"]["0"]
    assert outcome["timesteps"] == 4 and outcome["accuracy_before"] is not None  # the first run evaluates before
    assert summary["runs"]["grounded"]["0"]["accuracy_before"] is None
    assert 0.0 <= outcome["zero_std_groups"] <= 1.0 and outcome["accuracy_after"] * 4 in (0, 1, 2, 3, 4)
    assert "steps_per_response" in outcome["steps"]
    calls = []
    monkeypatch.setattr(cp.subprocess, "run", lambda *a, **k: calls.append(a))
    assert cp.main(argv) == 0 and calls == []  # finished runs are not run again
    assert "| outcome |" in capsys.readouterr().out


def test_summary_keeps_recorded_runs_whose_folders_are_gone(cp, tmp_path):
    out, runs = tmp_path / "summary.json", tmp_path / "runs"
    recorded = {"accuracy_before": 0.1, "accuracy_after": 0.30, "timesteps": 320, "generated_tokens": 10,
                "train_seconds": 1.0, "response_length_after": 5.0, "zero_std_groups": None}
    out.write_text(json.dumps({"runs": {"prm": {"0": recorded, "1": dict(recorded, accuracy_after=0.9)}}}))
    (runs / "prm_L3_s1").mkdir(parents=True)  # seed 1 rerun on disk replaces the recorded 0.9
    (runs / "prm_L3_s1" / "results.json").write_text(json.dumps(
        {"after": {"accuracy": 0.10}, "timesteps": 320, "generated_tokens": 30, "train_seconds": 2.0}))
    args = cp.build_parser().parse_args(["--variants", "prm", "--seeds", "1", "2", "--output-dir", str(runs)])
    summary = cp.summarize(args, out)
    assert list(summary["runs"]["prm"]) == ["0", "1"] and summary["accuracy_before"] == 0.1
    agg = summary["variants"]["prm"]
    assert agg["n_seeds"] == 2 and agg["accuracy_mean"] == pytest.approx(0.20)
    assert agg["generated_tokens"] == pytest.approx(20)
    assert cp.summarize(args, tmp_path / "none.json")["variants"]["prm"]["n_seeds"] == 1
