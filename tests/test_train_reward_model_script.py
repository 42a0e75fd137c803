"""scripts/train_reward_model.py end to end: tiny GPT-2 policy, tiny BERT backbone, no downloads."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from test_scripts import load_script  # tests/ is on sys.path (pytest's rootdir-relative import)

from llm_gym.rewards.models import (
    ProcessRewardModelScorer,
    RewardModelScorer,
    binary_metrics,
    build_tiny_reward_backbone,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bert_backbone(tmp_path_factory):
    return build_tiny_reward_backbone(tmp_path_factory.mktemp("tiny_bert"))


def common_args(tiny_model_dir, backbone, out) -> list[str]:
    return ["--model", str(tiny_model_dir), "--backbone", str(backbone), "--device", "cpu", "--n-train", "8",
            "--n-test", "6", "--max-new-tokens", "8", "--gen-batch-size", "4", "--epochs", "2",
            "--batch-size", "4", "--learning-rate", "1e-3", "--output-dir", str(out), "--no-progress-bar"]


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_outcome_run_saves_a_loadable_model_and_honest_figures(tiny_model_dir, bert_backbone, tmp_path,
                                                               capsys):
    script = load_script("train_reward_model")
    out = tmp_path / "rm"
    assert script.main(common_args(tiny_model_dir, bert_backbone, out)) == 0
    results = json.loads((out / "results.json").read_text())
    for key in ("eval_accuracy", "eval_balanced_accuracy", "eval_base_rate", "majority_accuracy",
                "policy_accuracy_train", "policy_accuracy_test"):
        assert 0.0 <= results[key] <= 1.0, key
    assert results["n_train"] == 8 and results["n_test"] == results["eval_n"] == 6
    assert results["majority_accuracy"] == max(results["eval_base_rate"], 1 - results["eval_base_rate"])
    assert "held-out accuracy" in capsys.readouterr().out

    # The held-out figure is recomputable from the saved model and the saved samples.
    scorer = RewardModelScorer(out / "model", device="cpu")
    rows = read_jsonl(out / "eval_samples.jsonl")
    scores = scorer([r["prompt"] for r in rows], [r["response"] for r in rows], [""] * len(rows))
    recomputed = binary_metrics(scores, [r["label"] for r in rows], scorer.threshold)
    assert recomputed["accuracy"] == results["eval_accuracy"]
    assert recomputed["balanced_accuracy"] == results["eval_balanced_accuracy"]
    assert recomputed["base_rate"] == results["eval_base_rate"] == np.mean([r["label"] for r in rows])

    # Held-out samples come from the test split, training samples from the train split.
    test_env = gym.make("LLMMath-v0", model=str(tiny_model_dir), split="test", device="cpu")
    test_prompts = set(test_env.unwrapped.prompts)
    assert all(r["prompt"] in test_prompts for r in rows)
    assert not any(r["prompt"] in test_prompts for r in read_jsonl(out / "train_samples.jsonl"))


def test_samples_from_reuses_the_labelled_samples(tiny_model_dir, bert_backbone, tmp_path):
    script = load_script("train_reward_model")
    first, second = tmp_path / "first", tmp_path / "second"
    assert script.main(common_args(tiny_model_dir, bert_backbone, first)) == 0
    args = [*common_args(tiny_model_dir, bert_backbone, second), "--samples-from", str(first), "--balance-classes"]
    assert script.main(args) == 0
    for name in ("train_samples.jsonl", "eval_samples.jsonl"):  # the same samples, not new ones
        assert read_jsonl(second / name) == read_jsonl(first / name)
    results = json.loads((second / "results.json").read_text())
    assert results["policy_accuracy_train"] is None and results["training"]["balance_classes"] is True
    with pytest.raises(FileNotFoundError, match="samples-from"):
        script.main([*common_args(tiny_model_dir, bert_backbone, tmp_path / "x"), "--samples-from", str(tmp_path)])


def test_process_run_with_a_stub_step_labeller(tiny_model_dir, bert_backbone, tmp_path):
    def stub_labels(prompts, steps, answers, **fields):
        """1 for steps of even length, 0 for odd, no label for every second step."""
        return [[None if k % 2 else float(len(s) % 2 == 0) for k, s in enumerate(row)] for row in steps]

    script = load_script("train_reward_model")
    out = tmp_path / "prm"
    args = [*common_args(tiny_model_dir, bert_backbone, out), "--kind", "process"]
    assert script.main(args, step_label_fn=stub_labels) == 0
    results = json.loads((out / "results.json").read_text())
    rows = read_jsonl(out / "eval_samples.jsonl")
    assert all(r["labels"] == [None if k % 2 else int(len(s) % 2 == 0) for k, s in enumerate(r["steps"])]
               for r in rows)
    scorer = ProcessRewardModelScorer(out / "model", device="cpu")
    scores = scorer([r["prompt"] for r in rows], [r["steps"] for r in rows], [""] * len(rows))
    pairs = [(v, y) for r, row in zip(rows, scores, strict=True)
             for v, y in zip(row, r["labels"], strict=True) if y is not None]
    recomputed = binary_metrics([v for v, _ in pairs], [y for _, y in pairs])
    assert results["eval_n"] == len(pairs) and recomputed["accuracy"] == results["eval_accuracy"]


def test_help_documents_every_flag():
    parser = load_script("train_reward_model").build_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help text"
    assert "--backbone" in parser.format_help()
