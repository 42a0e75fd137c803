"""scripts/benchmark.py --scoring on the tiny model and a tiny reward model: per-row DummyVecEnv steps vs one
batched SequenceVecEnv step (one reward-model call per rollout), same rewards."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


def test_scoring_benchmark_reports_one_batched_call_and_equal_rewards(tiny_model_dir, tmp_path, capsys):
    from llm_gym.reward_models import build_tiny_reward_backbone

    spec = importlib.util.spec_from_file_location("llm_gym_script_benchmark_scoring", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    out = tmp_path / "scoring.json"
    code = bench.main(["--scoring", "--model", str(tiny_model_dir), "--device", "cpu", "--repeats", "2",
                       "--n-prompts", "2", "--group-size", "3", "--max-new-tokens", "8", "--n-problems", "20",
                       "--reward-model", str(build_tiny_reward_backbone(tmp_path / "rm")), "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["config"]["n_responses"] == 6
    assert report["reward_model_calls_per_rollout"] == {"per_row": 6, "batched": 1}
    for name in ("reward_model", "math_rule"):
        r = report[name]
        assert len(r["seconds"]["per_row"]) == len(r["seconds"]["batched"]) == 2
        assert r["ratio"] == pytest.approx(r["median_seconds"]["per_row"] / r["median_seconds"]["batched"])
        assert r["same_rewards"] and r["max_reward_difference"] <= 1e-6  # reward model: padding rounding
    assert report["math_rule"]["max_reward_difference"] == 0.0  # rules see the same text either way
    assert "reward-model calls per rollout: per-row 6, batched 1" in capsys.readouterr().out
