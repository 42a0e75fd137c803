"""scripts/train_reward_model.py end to end: tiny GPT-2 policy, tiny BERT backbone, no downloads."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from test_scripts import load_script  # tests/ is on sys.path (pytest's rootdir-relative import)

from llm_gym.reward_models import (
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


def scripted_samples(env, n, args, seed):
    """Three-step responses (the tiny random policy rarely writes a newline); even problems right."""
    base = env.unwrapped
    samples = []
    for k in range(n):
        _, info = env.reset(options={"problem_id": k})
        value = info["answer"] if k % 2 == 0 else str(int(info["answer"]) + 1)
        text = f"first step\nthen {value}\n\\boxed{{{value}}}"
        ids = base.lm.tokenizer(text, add_special_tokens=False)["input_ids"] + [base.lm.eos_token_id]
        samples.append({"problem_id": k, "prompt": info["prompt_text"], "response": text, "response_ids": ids,
                        "answer": info["answer"], "accuracy": int(k % 2 == 0)})
    return samples


def test_process_run_with_shepherd_labels(tiny_model_dir, bert_backbone, tmp_path, capsys, monkeypatch):
    from llm_gym.rewards import grounded_arithmetic_step_reward
    from llm_gym.rewards.shepherd import step_label_agreement

    script = load_script("train_reward_model")
    monkeypatch.setattr(script, "sample_responses", scripted_samples)
    out = tmp_path / "prm_shepherd"
    args = [*common_args(tiny_model_dir, bert_backbone, out), "--kind", "process", "--labels", "shepherd",
            "--difficulty", "3", "--shepherd-k", "2", "--shepherd-estimation", "soft"]
    assert script.main(args) == 0
    results = json.loads((out / "results.json").read_text())
    train_rows, rows = read_jsonl(out / "train_samples.jsonl"), read_jsonl(out / "eval_samples.jsonl")
    assert len(train_rows) == 8 and len(rows) == 6 and all(len(r["steps"]) == 3 for r in train_rows + rows)
    # Labels are 0/1 (soft labels thresholded at 0.5); the last step is the response's own correctness.
    assert all(v in (0, 1) for r in train_rows + rows for v in r["labels"])
    assert [r["labels"][-1] for r in rows] == [1, 0, 1, 0, 1, 0]
    # Cost: k = 2 completions for each of the 2 non-last steps of 8 + 6 responses.
    shepherd = results["shepherd"]
    assert shepherd["n_completions"] == 2 * 2 * 14 and shepherd["k"] == 2 and shepherd["estimation"] == "soft"
    assert shepherd["train"]["n_completions"] == 32 and shepherd["test"]["n_completions"] == 24
    assert 56 <= shepherd["completion_tokens"] <= 56 * 8  # at most --max-new-tokens each
    assert results["labels"] == "shepherd" and results["config"]["difficulty"] == [3]
    assert results["step_label_accuracy"] == results["eval_accuracy"]

    # The agreement figures are recomputable from the saved model, the held-out samples and the checker.
    assert results["agreement_checker"] == "llm_gym.rewards.grounded_arithmetic_step_reward"
    test_env = gym.make("LLMMath-v0", model=str(tiny_model_dir), split="test", device="cpu", difficulty=(3,))
    answer_of = {p: q.answer for p, q in zip(test_env.unwrapped.prompts, test_env.unwrapped.problems,
                                                strict=True)}
    prompts, steps = [r["prompt"] for r in rows], [r["steps"] for r in rows]
    checks = grounded_arithmetic_step_reward(prompts, steps, [answer_of[p] for p in prompts])
    scorer = ProcessRewardModelScorer(out / "model", device="cpu")
    prm = step_label_agreement(scorer(prompts, steps, [""] * len(rows)), checks)
    labels = step_label_agreement([r["labels"] for r in rows], checks)
    assert prm["n"] == results["prm_checker_agreement_n"] >= 6  # the checker judges every last step
    assert results["prm_checker_agreement"] == pytest.approx(prm["agreement"])
    assert results["label_checker_agreement"] == pytest.approx(labels["agreement"])
    assert results["label_checker_agreement_n"] == labels["n"]
    printed = capsys.readouterr().out
    assert "Agreement with llm_gym.rewards.grounded_arithmetic_step_reward" in printed
    assert "Math-Shepherd labels (soft, k=2): 56 completions" in printed


def test_shepherd_flags_are_checked_before_sampling(tiny_model_dir, bert_backbone, tmp_path, capsys):
    script = load_script("train_reward_model")
    base = common_args(tiny_model_dir, bert_backbone, tmp_path / "x")
    cases = [(["--labels", "shepherd"], "add --kind process"),
             (["--kind", "process", "--labels", "shepherd", "--shepherd-k", "0"], "--shepherd-k"),
             (["--kind", "process", "--agreement-checker", "llm_gym.rewards.nope"], "not an importable")]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            script.main([*base, *extra])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_checker_falls_back_to_the_rule_checker(monkeypatch):
    import llm_gym.rewards

    script = load_script("train_reward_model")
    rule_name, rule = "llm_gym.rewards.arithmetic_step_reward", llm_gym.rewards.arithmetic_step_reward
    assert script.resolve_checker(rule_name) == (rule_name, rule)
    monkeypatch.delattr(llm_gym.rewards, "grounded_arithmetic_step_reward", raising=False)
    assert script.resolve_checker(None) == (rule_name, rule)


def test_soft_shepherd_labels_are_trained_as_one_from_one_half(monkeypatch):
    import argparse
    from types import SimpleNamespace

    import llm_gym.rewards.shepherd as shepherd

    seen = {}

    def fake_labels(lm, prompts, steps, answers, **kwargs):
        seen.update(kwargs, lm=lm)
        return shepherd.ShepherdLabels([[0.25, 0.5, 0.75], [1.0]], 8, 2, 40, 0.1)

    monkeypatch.setattr(shepherd, "shepherd_step_labels", fake_labels)
    script = load_script("train_reward_model")
    args = argparse.Namespace(shepherd_k=4, shepherd_estimation="soft", max_new_tokens=16, temperature=0.7,
                              gen_batch_size=32, seed=3)
    env, costs = SimpleNamespace(unwrapped=SimpleNamespace(lm="policy")), []
    label = script.shepherd_step_label_fn(args, env, costs)
    assert label(["p", "q"], [["a", "b", "c"], ["d"]], ["1", "2"]) == [[0.0, 1.0, 1.0], [1.0]]
    assert seen == {"lm": "policy", "k": 4, "estimation": "soft", "max_new_tokens": 16, "temperature": 0.7,
                    "batch_size": 32, "seed": 3}
    assert costs == [{"n_completions": 8, "n_sampling_calls": 2, "completion_tokens": 40, "seconds": 0.1,
                      "mean_label": 0.625}]
    label(["p"], [["a"]], ["1"])
    assert seen["seed"] == 4  # the test split's labelling gets the next seed
