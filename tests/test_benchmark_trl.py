"""scripts/benchmark.py --vs-trl (scripts/benchmark_trl.py) on the tiny model: both sides timed, ratios of medians."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"llm_gym_script_{name}_vs_trl_test", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_vs_trl_tiny_reports_both_sides_and_ratios_of_the_medians(tmp_path, capsys):
    pytest.importorskip("trl")
    bench = load_script("benchmark")
    out = tmp_path / "vs_trl.json"
    code = bench.main(["--vs-trl", "--tiny", "--steps", "1", "--rounds", "1", "--precisions", "fp32",
                       "--threads", "1", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["config"]["n_prompts"] == 2 and report["config"]["group_size"] == 2  # the tiny shape
    assert report["config"]["max_new_tokens"] == 8 and report["config"]["beta"] == 0.04
    assert "--vs-trl" in report["command"]
    assert [(r["side"], r["precision"], r["round"]) for r in report["runs"]] == [("trl", "fp32", 0),
                                                                                 ("ours", "fp32", 0)]
    for run in report["runs"]:
        assert len(run["step_seconds"]) == len(run["rollout_seconds"]) == len(run["train_seconds"]) == 1
        assert all(s > 0 for s in run["step_seconds"] + run["rollout_seconds"] + run["generate_seconds"])
        assert len(run["warmup_step_seconds"]) == 1  # one untimed step before
        assert run["median_step_seconds"] == statistics.median(run["step_seconds"])
        assert run["rollout_seconds"][0] <= run["step_seconds"][0]
        assert run["tokens"][0] > 0 and run["torch_threads"] == 1
        assert run["peak_rss_kib"] > 0 and run["peak_rss_gb"] == pytest.approx(run["peak_rss_kib"] * 1024 / 1e9)
        assert run["reference_is_copy"]  # beta > 0: a real second model on both sides
        assert run["param_dtype"] == "torch.float32"
    trl, ours = report["runs"]
    assert trl["accelerate_mixed_precision"] == "no"
    s = report["summary"]["fp32"]
    assert s["trl"]["median_step_seconds"] == trl["median_step_seconds"]
    assert s["ours"]["median_step_seconds"] == ours["median_step_seconds"]
    assert s["step_time_ratio"] == pytest.approx(ours["median_step_seconds"] / trl["median_step_seconds"])
    assert s["peak_rss_ratio"] == pytest.approx(ours["peak_rss_gb"] / trl["peak_rss_gb"])
    assert s["step_time_target"] == s["peak_rss_target"] == 0.5
    assert s["step_time_met"] == (s["step_time_ratio"] <= 0.5)
    assert s["peak_rss_met"] == (s["peak_rss_ratio"] <= 0.5)
    per_1k = {side: 1000 * r["step_seconds"][0] / r["tokens"][0] for side, r in (("trl", trl), ("ours", ours))}
    assert s["per_token_step_time_ratio"] == pytest.approx(per_1k["ours"] / per_1k["trl"])
    assert report["machine"]["trl"] and report["machine"]["torch"] and report["machine"]["cpu_count"]
    printed = capsys.readouterr().out
    assert "ours/TRL" in printed and f"wrote {out}" in printed


def test_trl_tokenizer_never_adds_a_second_bos(tiny_lm):
    """TRL tokenises plain-string prompts with special tokens; the copy it gets must add none."""
    vs_trl = load_script("benchmark_trl")
    prompt = tiny_lm.format_prompt("What is 2 + 3?")
    tok = tiny_lm.tokenizer
    assert vs_trl.trl_tokenizer(tok, prompt) is tok  # adds nothing already: used as is

    class AddsBos:
        """A tokenizer that prepends id 1 unless told not to (like the GGUF-converted SmolLM2 one)."""

        add_bos_token = True

        def __call__(self, text, add_special_tokens=True):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            return {"input_ids": ([1] if add_special_tokens and self.add_bos_token else []) + ids}

    fixed = vs_trl.trl_tokenizer(AddsBos(), prompt)
    assert fixed(prompt)["input_ids"] == tok(prompt, add_special_tokens=False)["input_ids"]


def test_same_problems_are_the_draws_of_our_grpo(tiny_model_dir):
    """TRL's dataset order is exactly the problems agents.GRPO draws with the same seed."""
    import argparse

    import gymnasium as gym

    import llm_gym  # noqa: F401
    from agents import GRPO

    vs_trl = load_script("benchmark_trl")
    env = gym.make("LLMMath-v0", model=str(tiny_model_dir), max_new_tokens=8, n_problems=40, device="cpu")
    algo = GRPO("LLMPolicy", env, n_prompts=3, group_size=2, seed=7, device="cpu")
    args = argparse.Namespace(seed=7, warmup=1, steps=2, n_prompts=3)
    expected = [int(k) for _ in range(3) for k in algo._sample_problems()[::2]]
    assert vs_trl.same_problems(args, 40) == expected


def test_variants_tiny_reports_each_switch(tmp_path, capsys):
    """--variants runs only llm-gym's GRPO, once per switch set, with ratios to the first."""
    vs_trl = load_script("benchmark_trl")
    out = tmp_path / "variants.json"
    assert vs_trl.main(["--tiny", "--steps", "1", "--threads", "1", "--variants", "fp32", "fp32+gc+lora4",
                        "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["variants"]
    assert list(rows) == ["fp32", "fp32+gc+lora4"]
    assert rows["fp32"]["step_ratio_to_first"] == 1.0 and rows["fp32"]["rss_ratio_to_first"] == 1.0
    full, lora = rows["fp32"]["trainable_parameters"], rows["fp32+gc+lora4"]["trainable_parameters"]
    assert 0 < lora < full  # only the adapters train
    assert rows["fp32"]["reference_is_copy"] and not rows["fp32+gc+lora4"]["reference_is_copy"]
    assert "fp32+gc+lora4" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown part"):
        vs_trl.parse_variant("bf16+foo")
