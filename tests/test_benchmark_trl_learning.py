"""scripts/benchmark.py --vs-trl-learning (scripts/benchmark_trl_learning.py): TRL vs our GRPO, accuracy over seeds."""

from __future__ import annotations

import json
import math

import pytest

from tests.test_scripts import load_script


@pytest.fixture(scope="module")
def learning():
    return load_script("benchmark_trl_learning")


def full_settings(learning, *flags: str) -> dict:
    return learning.resolve_settings(learning.build_parser().parse_args(list(flags)))


def test_tiny_end_to_end_writes_every_figure_and_resumes(tmp_path, capsys):
    """Two configurations (one per side), one seed, on the tiny model; a second call skips both."""
    pytest.importorskip("trl")
    bench = load_script("benchmark")
    out, work = tmp_path / "learning.json", tmp_path / "work"
    argv = ["--vs-trl-learning", "--tiny", "--configs", "trl_default", "ours_best", "--seeds", "0", "--threads", "1",
            "--out", str(out), "--work-dir", str(work)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    s = report["settings"]
    assert (s["n_prompts"], s["group_size"], s["max_new_tokens"], s["steps"], s["eval_n"]) == (2, 2, 8, 2, 4)
    assert s["responses"] == 2 * 2 * 2 and s["precision"] == "bf16" and s["model"] == "tiny"
    assert "--vs-trl-learning" in report["commands"][0]
    assert report["before"]["n"] == 4 and report["before"]["greedy"] and report["before"]["split"] == "test"
    assert [(r["config"], r["seed"], r["side"]) for r in report["runs"]] == [("trl_default", 0, "trl"),
                                                                             ("ours_best", 0, "ours")]
    for r in report["runs"]:
        assert r["responses"] == 8  # the equal budget: 2 rollouts x 2 prompts x 2 responses
        assert 8 <= r["generated_tokens"] <= 8 * 8
        assert 0 < r["train_seconds"] < r["process_seconds"] and r["peak_rss_gb"] > 0.1
        assert 0.0 <= r["accuracy_after"] <= 1.0 and r["accuracy_before"] == report["before"]["accuracy"]
        assert not (work / f"{r['config']}_s0" / "model").exists()  # trained models are deleted after evaluation
    trl, ours = report["runs"]
    assert trl["loss_type"] == trl["trl_config"]["loss_type"] == "dapo" and trl["optimizer_steps"] == 2
    assert trl["trl_config"]["temperature"] == 0.7 and trl["trl_config"]["bf16"] is True
    assert trl["accelerate_mixed_precision"] == "bf16" and trl["param_dtype"] == "torch.float32"
    assert ours["algorithm"] == "RLOO" and ours["algorithm_config"]["batch_size"] == 1  # 4 minibatches of 1
    assert ours["optimizer_steps"] == 2 * 4 and ours["algorithm_config"]["mixed_precision"] == "bf16"
    assert not (work / "ours_best_s0" / "ours_best" / "hf_model").exists()
    assert list(report["summary"]) == ["trl_default", "ours_best"]
    assert report["summary"]["trl_default"]["accuracy_after"]["mean"] == trl["accuracy_after"]
    printed = capsys.readouterr().out
    assert "| TRL GRPOTrainer, TRL's default loss_type (`trl_default`) | 0 |" in printed

    assert bench.main(argv) == 0  # resume: both entries are there, nothing runs again
    again = json.loads(out.read_text())
    assert again["runs"] == report["runs"] and len(again["commands"]) == 2
    assert capsys.readouterr().err.count("skipped") == 2


def test_summary_and_table_are_mean_std_and_range_over_seeds(learning):
    def row(config, seed, acc, seconds):
        return {"config": config, "seed": seed, "accuracy_before": 0.31, "accuracy_after": acc, "responses": 320,
                "generated_tokens": 6000, "train_seconds": seconds, "peak_rss_gb": 5.0}

    runs = [row("ours_grpo", 2, 0.50, 600.0), row("trl_default", 0, 0.30, 100.0), row("ours_grpo", 0, 0.40, 100.0),
            row("ours_grpo", 1, 0.45, 200.0)]
    summary = learning.summarize(runs)
    assert list(summary) == ["trl_default", "ours_grpo"]  # the CONFIGS order, not the order of the runs
    acc = summary["ours_grpo"]["accuracy_after"]
    # mean (0.40 + 0.45 + 0.50) / 3 = 0.45; sample std sqrt((0.05^2 + 0 + 0.05^2) / 2) = 0.05
    assert summary["ours_grpo"]["seeds"] == [0, 1, 2]
    assert acc["n"] == 3 and acc["mean"] == pytest.approx(0.45) and acc["std"] == pytest.approx(0.05)
    assert (acc["min"], acc["max"]) == (0.40, 0.50)
    sec = summary["ours_grpo"]["train_seconds"]  # mean 300; std sqrt((200^2 + 100^2 + 300^2) / 2) = sqrt(70000)
    assert sec["mean"] == pytest.approx(300.0) and sec["std"] == pytest.approx(math.sqrt(70000.0))
    assert summary["trl_default"]["accuracy_after"]["std"] is None  # one seed: no spread
    table = learning.format_markdown(summary).splitlines()
    assert table[2] == ("| TRL GRPOTrainer, TRL's default loss_type (`trl_default`) | 0 | 0.310 | 0.300 ± n/a | "
                        "0.300-0.300 | 320 | 6,000 | 100 ± n/a | 5.00 |")
    assert table[3] == ("| llm-gym GRPO (train.py --algo grpo) (`ours_grpo`) | 0 1 2 | 0.310 | 0.450 ± 0.050 | "
                        "0.400-0.500 | 320 | 6,000 | 300 ± 265 | 5.00 |")


def test_resume_runs_only_missing_entries_and_refuses_other_settings(learning, tmp_path, capsys):
    out = tmp_path / "learning.json"
    flags = ["--tiny", "--configs", "ours_grpo", "ours_best", "--seeds", "0", "1", "--out", str(out)]
    args = learning.build_parser().parse_args(flags)
    done = {"config": "ours_best", "seed": 0, "accuracy_after": 0.5}
    out.write_text(json.dumps({"settings": learning.resolve_settings(args), "commands": ["first"],
                               "before": {"accuracy": 0.25}, "runs": [done], "summary": {}}))
    calls = []

    def fake_runner(name, seed, ctx):
        calls.append((name, seed))
        assert json.loads(out.read_text())["runs"][-1]["config"] == (calls[-2][0] if len(calls) > 1 else "ours_best")
        return {"config": name, "seed": seed, "accuracy_after": 0.1 * len(calls)}

    def no_before(ctx):
        raise AssertionError("the base model's accuracy is in the JSON already")

    report = learning.run(args, "second", runner=fake_runner, before=no_before)
    assert calls == [("ours_grpo", 0), ("ours_grpo", 1), ("ours_best", 1)]  # seed by seed; (ours_best, 0) skipped
    saved = json.loads(out.read_text())
    assert [(r["config"], r["seed"]) for r in saved["runs"]] == [("ours_best", 0), *calls]
    assert [r.get("accuracy_before") for r in saved["runs"][1:]] == [0.25] * 3
    assert saved["commands"] == ["first", "second"] and report["summary"]["ours_grpo"]["seeds"] == [0, 1]
    calls.clear()
    learning.run(args, "third", runner=fake_runner, before=no_before)
    assert calls == []
    capsys.readouterr()
    assert learning.main([*flags, "--learning-rate", "1e-5"]) == 2  # another config: refused, not mixed in
    err = capsys.readouterr().err
    assert "learning_rate" in err and "another --out" in err
    assert len(json.loads(out.read_text())["runs"]) == 4


def test_trl_configs_carry_trls_default_and_our_matching_loss_type(learning, tmp_path):
    trl = pytest.importorskip("trl")
    settings = full_settings(learning)
    # TRL 1.16's grpo_config.py: `loss_type: str = field(default="dapo", ...)`; our GRPO: seq-mean-token-mean,
    # which is TRL's "grpo": ((per_token_loss * mask).sum(-1) / mask.sum(-1)).mean().
    assert learning.trl_default_loss_type() == "dapo"
    assert learning.our_grpo_aggregation() == "seq-mean-token-mean"
    default = learning.build_trl_config("trl_default", settings, 1, str(tmp_path))
    matching = learning.build_trl_config("trl_ours_aggregation", settings, 1, str(tmp_path))
    assert default.loss_type == trl.GRPOConfig(output_dir=str(tmp_path), use_cpu=True).loss_type == "dapo"
    assert "loss_type" not in learning.trl_config_kwargs("trl_default", settings, 1, str(tmp_path))
    assert matching.loss_type == "grpo"
    for config in (default, matching):
        assert (config.per_device_train_batch_size, config.num_generations, config.max_completion_length) == (32, 8, 64)
        assert (config.max_steps, config.num_iterations, config.steps_per_generation) == (10, 1, 1)  # 320 responses
        assert (config.learning_rate, config.beta, config.temperature, config.epsilon) == (2e-5, 0.04, 0.7, 0.2)
        assert config.lr_scheduler_type == "constant" and config.weight_decay == 0.01 and config.seed == 1
        assert config.bf16 is True and config.gradient_checkpointing is False and config.shuffle_dataset is False
    fp32 = learning.build_trl_config("trl_default", full_settings(learning, "--precision", "fp32"), 0, str(tmp_path))
    assert fp32.bf16 is False
    with pytest.raises(ValueError, match="seq-mean-token-sum"):
        learning.trl_loss_type_for("seq-mean-token-sum")
    with pytest.raises(ValueError, match="not a TRL configuration"):
        learning.trl_config_kwargs("ours_grpo", settings, 0, str(tmp_path))


def test_our_commands_carry_the_same_settings(learning, tmp_path):
    train = load_script("train")
    settings = full_settings(learning)
    grpo = train.parse_args(learning.train_argv("ours_grpo", 2, settings, None, tmp_path)[2:])
    best = train.parse_args(learning.train_argv("ours_best", 2, settings, "/m", tmp_path)[2:])
    for a in (grpo, best):
        assert (a.total_timesteps, a.n_prompts, a.group_size, a.max_new_tokens) == (320, 4, 8, 64)
        assert (a.learning_rate, a.beta, a.temperature, a.clip_range, a.top_p) == (2e-5, 0.04, 0.7, 0.2, 1.0)
        assert (a.mixed_precision, a.gradient_checkpointing, a.device, a.seed, a.eval_n) == ("bf16", False, "cpu", 2, 0)
        assert a.kl_estimator == "k3" and a.scale_rewards == "group" and a.tensorboard_log == ""
    assert (grpo.algo, grpo.batch_size, grpo.model, grpo.run_name) == ("grpo", None, None, "ours_grpo")
    assert (best.algo, best.batch_size, best.model) == ("rloo", 8, "/m")  # the issue-9 preset: 4 minibatches of 8
    fp32 = full_settings(learning, "--precision", "fp32")
    assert train.parse_args(learning.train_argv("ours_grpo", 0, fp32, None, tmp_path)[2:]).mixed_precision == "no"
    with pytest.raises(ValueError, match="not one of our configurations"):
        learning.train_argv("trl_default", 0, settings, None, tmp_path)
