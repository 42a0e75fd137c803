"""A structural change must not change a number: seeded runs against ``tests/golden/seeded_runs.json``.

The fingerprint (final weights' bytes, float checksums and every logged scalar but wall-clock ones) of six
short seeded runs on the tiny model: GRPO through the built-in reward wrappers and on a group vector env,
token-level PPO, DAPO with dynamic sampling, multi-turn GRPO on ``LLMGuessNumber-v0`` and ``LLMToolMath-v0``.
See ``tests/seeded_runs.py`` for how to regenerate it when a change is meant to change the numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.seeded_runs import compare, run_all

GOLDEN = Path(__file__).parent / "golden" / "seeded_runs.json"


def test_seeded_runs_match_the_golden_fingerprint(tiny_model_dir):
    golden = json.loads(GOLDEN.read_text())
    problems = compare(golden, run_all(str(tiny_model_dir)))
    assert not problems, "\n".join(problems[:20])


def test_compare_sees_a_changed_weight_and_a_changed_scalar():
    golden = json.loads(GOLDEN.read_text())
    tampered = json.loads(GOLDEN.read_text())
    run = next(iter(tampered["runs"].values()))
    run["weights_sha256"] = "0" * 64
    run["scalars"][0]["train/loss"] = run["scalars"][0]["train/loss"] + 1e-12
    problems = compare(golden, tampered)
    assert any("weights differ" in p for p in problems) and any("train/loss" in p for p in problems)
