"""Fast tests of scripts/benchmark.py, scripts/evaluate.py and scripts/plot_curves.py on the tiny model."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from agents import ALGORITHMS

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """Import ``scripts/<name>.py`` as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"llm_gym_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained_run(tiny_model_dir, tmp_path_factory):
    """A tiny GRPO trained for 16 timesteps with TensorBoard on: its run dir, zip and exported HF folder."""
    import gymnasium as gym

    import llm_gym  # noqa: F401
    from agents import GRPO

    tmp = tmp_path_factory.mktemp("grpo_run")
    env = gym.make("LLMMath-v0", model=str(tiny_model_dir), max_new_tokens=8, n_problems=20, device="cpu")
    algo = GRPO("LLMPolicy", env, n_prompts=2, group_size=4, learning_rate=1e-3, seed=0, device="cpu",
                tensorboard_log=str(tmp / "tb"))
    algo.learn(16)
    algo.save(tmp / "grpo.zip")
    export = algo.policy.save_pretrained(tmp / "export")
    run_dirs = sorted((tmp / "tb").iterdir())
    return {"run_dir": run_dirs[0], "zip": tmp / "grpo.zip", "export": export}


def test_benchmark_writes_consistent_json(tiny_model_dir, tmp_path, capsys):
    bench = load_script("benchmark")
    out = tmp_path / "rollout.json"
    code = bench.main(["--model", str(tiny_model_dir), "--device", "cpu", "--repeats", "2", "--n-prompts", "2",
                       "--group-size", "2", "--max-new-tokens", "8", "--n-problems", "20", "--warmup", "0", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    med = report["median"]
    assert med["bare_tokens_per_second"] > 0 and med["env_tokens_per_second"] > 0
    assert report["ratio"] == pytest.approx(med["env_tokens_per_second"] / med["bare_tokens_per_second"])
    assert len(report["bare"]) == len(report["env"]) == 2
    assert report["passed"] == (report["ratio"] >= report["target"])
    assert report["same_token_counts"]  # same prompts, weights and seed: the same sampled responses
    assert report["machine"]["torch_threads"] >= 1
    assert "ratio env/bare" in capsys.readouterr().out


def test_benchmark_levers_times_both_orders_and_restores_the_engine(tiny_model_dir, tmp_path, capsys):
    import agents.common.preparation as preparation
    import agents.common.update as update
    from agents.common.buffers import length_grouped_order

    bench = load_script("benchmark")
    out = tmp_path / "levers.json"
    code = bench.main(["--levers", "--model", str(tiny_model_dir), "--device", "cpu", "--repeats", "2",
                       "--n-prompts", "2", "--group-size", "4", "--max-new-tokens", "8", "--n-problems", "20",
                       "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert len(report["seconds"]["grouped"]) == len(report["seconds"]["rollout_order"]) == 2
    assert report["ratio_grouped_to_rollout_order"] == pytest.approx(
        report["median"]["grouped"] / report["median"]["rollout_order"])
    assert len(report["response_lengths"]) == 8
    assert preparation.length_grouped_order is update.length_grouped_order is length_grouped_order  # undone
    assert "grouped / rollout order" in capsys.readouterr().out


def test_benchmark_multi_turn_compares_the_same_episodes_with_and_without_the_cache(tmp_path, capsys):
    bench = load_script("benchmark")
    out = tmp_path / "multi_turn.json"
    code = bench.main(["--multi-turn", "--tiny", "--device", "cpu", "--repeats", "2", "--n-prompts", "2",
                       "--group-size", "2", "--max-new-tokens", "8", "--max-turns", "3", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["same_episodes"] is True  # greedy: the cache changes the cost, not the episodes
    reuse, prefill = report["runs"]["reuse"][0], report["runs"]["prefill"][0]
    assert reuse["turns"] == prefill["turns"] and len(reuse["turns"]) == 4 and max(reuse["turns"]) >= 2
    assert len(reuse["turn_seconds"]) == max(reuse["turns"])
    assert reuse["prefilled_tokens"] < prefill["prefilled_tokens"]  # only the new tokens of each turn
    assert report["ratio_reuse_to_prefill"] == pytest.approx(
        report["median_seconds"]["reuse"] / report["median_seconds"]["prefill"])
    assert "reuse / prefill" in capsys.readouterr().out


def test_train_multi_turn_tool_env_evaluates_with_and_without_the_tool(tiny_model_dir, tmp_path):
    """scripts/train.py --env LLMToolMath-v0: batched multi-turn GRPO; held-out accuracy with the tool and on
    the same problems in the single-turn env (results.json "without_tool")."""
    train = load_script("train")
    argv = ["--env", "LLMToolMath-v0", "--model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "8",
            "--max-prompt-length", "512", "--max-turns", "2", "--n-prompts", "2", "--group-size", "2",
            "--total-timesteps", "8", "--eval-n", "4", "--eval-batch-size", "4", "--tensorboard-log", "",
            "--output-dir", str(tmp_path), "--no-progress-bar", "--verbose", "0", "--run-name", "run"]
    assert train.main(argv) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["timesteps"] == 8 and results["config"]["max_turns"] == 2
    for when in ("before", "after"):
        with_tool, without = results[when], results[when]["without_tool"]
        assert with_tool["n"] == without["n"] == 4 and 1 <= with_tool["num_turns"] <= 2
        assert "tool_call_fraction" in with_tool and "num_turns" not in without
        assert [e[0] for e in with_tool["examples"]] == [e[0] for e in without["examples"]]  # the same questions


def test_evaluate_model_folder(tiny_model_dir, tmp_path):
    evaluate = load_script("evaluate")
    out = tmp_path / "results.json"
    code = evaluate.main(["--model", str(tiny_model_dir), "--device", "cpu", "--n", "6", "--batch-size", "4",
                          "--max-new-tokens", "8", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert 0.0 <= result["accuracy"] <= 1.0
    assert result["n"] == 6
    assert result["response_length"] > 0
    assert "samples" not in result


def test_evaluate_checkpoint_matches_export(trained_run, tmp_path):
    evaluate = load_script("evaluate")
    common = ["--device", "cpu", "--n", "6", "--batch-size", "3", "--max-new-tokens", "8", "--samples", "6"]
    ckpt, export = tmp_path / "ckpt.json", tmp_path / "export.json"
    assert evaluate.main(["--checkpoint", str(trained_run["zip"]), *common, "--out", str(ckpt)]) == 0
    assert evaluate.main(["--model", str(trained_run["export"]), *common, "--out", str(export)]) == 0
    a, b = json.loads(ckpt.read_text()), json.loads(export.read_text())
    assert a["accuracy"] == b["accuracy"]
    assert [s["response"] for s in a["samples"]] == [s["response"] for s in b["samples"]]


def test_evaluate_missing_checkpoint(tmp_path, capsys):
    evaluate = load_script("evaluate")
    assert evaluate.main(["--checkpoint", str(tmp_path / "nope.zip")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_plot_curves_writes_png(trained_run, tmp_path, capsys):
    plot = load_script("plot_curves")
    assert plot.main(["--logdir", str(trained_run["run_dir"]), "--list"]) == 0
    assert "rollout/accuracy" in capsys.readouterr().out
    out = tmp_path / "curves.png"
    assert plot.main(["--logdir", str(trained_run["run_dir"]), "--tags", "rollout/accuracy", "train/kl",
                      "no/such_tag", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "no/such_tag" in capsys.readouterr().err
    assert plot.main(["--logdir", str(trained_run["run_dir"]), "--tags", "rollout/accuracy", "--out", str(out),
                      "--json", str(tmp_path / "c.json")]) == 0
    points = json.loads((tmp_path / "c.json").read_text())[Path(trained_run["run_dir"]).name]
    expected = plot.load_scalars(trained_run["run_dir"])["rollout/accuracy"]
    assert list(points) == ["rollout/accuracy"] and points["rollout/accuracy"] == [list(p) for p in expected]


def test_plot_curves_several_runs_side_by_side(trained_run, tmp_path, capsys):
    plot = load_script("plot_curves")
    run = str(trained_run["run_dir"])
    out = tmp_path / "cmp.png"
    assert plot.main(["--logdir", run, run, "--labels", "A", "B", "--tags", "rollout/accuracy", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.main(["--logdir", run, run, "--list"]) == 0
    listed = capsys.readouterr().out
    assert "A: rollout/accuracy" not in listed and listed.count("rollout/accuracy") == 2  # default labels: names
    assert plot.main(["--logdir", run, run, "--labels", "only-one"]) == 2


def test_plot_curves_empty_dir(tmp_path, capsys):
    plot = load_script("plot_curves")
    assert plot.main(["--logdir", str(tmp_path)]) == 1
    assert "no TensorBoard event files" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["benchmark", "evaluate", "plot_curves", "train", "compare_process",
                                  "train_reward_model", "benchmark_trl_learning"])
def test_help_documents_every_flag(name):
    parser = load_script(name).build_parser()
    for action in parser._actions:
        assert action.help, f"{name}: {action.option_strings} has no help text"


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("algo", "extra", "steps"), [
    ("grpo", [], 2),                                            # 2 rollouts x 1 step
    ("gspo", ["--batch-size", "2"], 4),                         # 2 rollouts x 2 minibatches
    ("rft", [], 2),
    ("dapo", ["--max-sampling-rounds", "1"], None),            # steps depend on how many groups were kept
    ("grpo", ["--process-reward", "arithmetic", "--advantage", "process"], 2),
    ("grpo", ["--process-reward", "grounded", "--step-penalty", "-0.5", "--advantage", "process"], 2),
    ("rloo", [], 2),
    ("reinforce_pp", ["--batch-size", "2"], 4),
    ("reinforce_pp_baseline", [], 2),
    ("cispo", ["--batch-size", "2"], 4),
    ("drgrpo", [], 2),
])
def test_train_script_runs_each_algorithm(tiny_model_dir, tmp_path, algo, extra, steps):
    """The main job end to end on the tiny model: results.json records the algorithm's config and counts."""
    train = load_script("train")
    argv = ["--algo", algo, "--model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "8",
            "--n-prompts", "2", "--group-size", "2", "--total-timesteps", "8", "--eval-n", "4",
            "--eval-batch-size", "4", "--tensorboard-log", "", "--output-dir", str(tmp_path),
            "--no-progress-bar", "--verbose", "0", "--run-name", "run", *extra]
    assert train.main(argv) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["timesteps"] == 8 and results["config"]["algo"] == algo
    assert results["after"]["n"] == 4 and results["before"]["accuracy"] * 4 in (0, 1, 2, 3, 4)  # k of 4 right
    assert results["algorithm"] == ALGORITHMS[algo].__name__
    if steps is not None:
        assert results["optimizer_steps"] == steps
    assert (tmp_path / "run" / "model.zip").is_file() and (tmp_path / "run" / "hf_model").is_dir()


def test_train_reward_flags_build_the_training_rewards(tmp_path):
    """--process-reward grounded carries --step-penalty; conflicting or incomplete reward flags name the fix."""
    train = load_script("train")
    rewards = train.reward_kwargs(train.parse_args(["--process-reward", "grounded", "--step-penalty", "-0.25"]))
    fn = rewards["process_reward_fn"]
    assert fn(["What is 4 + 10 + 10?"], [["2 + 2 = 4", "4 + 10 + 10 = 24"]], ["24"]) == [[-0.25, 1.0]]
    with pytest.raises(SystemExit, match="one source of step rewards"):
        train.reward_kwargs(train.parse_args(["--process-reward", "grounded", "--process-reward-model", "x"]))
    with pytest.raises(SystemExit, match="--iterative retrains a reward model"):
        train.reward_kwargs(train.parse_args(["--iterative"]))
    with pytest.raises(SystemExit, match="add --iterative"):
        train.reward_kwargs(train.parse_args(["--reward-model", "rm", "--replay-from", "rm_dir"]))


def test_train_prompt_template_reaches_train_and_held_out_envs(tiny_model_dir):
    train = load_script("train")
    args = train.parse_args(["--model", str(tiny_model_dir), "--device", "cpu", "--difficulty", "3",
                             "--prompt-template", "{question}\nOne operation per line."])
    train_env, eval_env = train.make_envs(args)
    for env in (train_env, eval_env):
        base = env.unwrapped
        assert f"{base.problems[0].question}\nOne operation per line." in base.prompts[0]
        assert "boxed" not in base.prompts[0]


def test_train_iterative_flags_reach_the_retraining(tmp_path):
    """--iterative-epochs and --iterative-balance-classes become the callback's train_reward_model arguments
    (default: 1 epoch, unweighted loss); --replay-from seeds the replay store with a reward model's training
    samples (default: empty)."""
    from types import SimpleNamespace

    train = load_script("train")
    scorer = SimpleNamespace(kind="outcome", batch_size=16, max_length=512)
    for argv, expected in (([], (1, False)), (["--iterative-epochs", "3", "--iterative-balance-classes"], (3, True))):
        args = train.parse_args(["--reward-model", "rm", "--iterative", *argv])
        (callback,) = train.build_callbacks(args, {"reward_fn": scorer}, tmp_path)
        kwargs = callback.train_kwargs
        assert (kwargs["epochs"], kwargs["balance_classes"]) == expected and kwargs["batch_size"] == 16
        assert callback.replay_store == []
    from llm_gym.reward_models import write_labelled_samples

    write_labelled_samples(tmp_path / "train_samples.jsonl", [("p1", "r1"), ("p2", "r2")], [1, 0], "outcome")
    args = train.parse_args(["--reward-model", "rm", "--iterative", "--replay-from", str(tmp_path)])
    (callback,) = train.build_callbacks(args, {"reward_fn": scorer}, tmp_path)
    assert callback.replay_store == [(("p1", "r1"), 1), (("p2", "r2"), 0)]
    with pytest.raises(FileNotFoundError, match="train_samples.jsonl"):
        train.build_callbacks(train.parse_args(["--reward-model", "rm", "--iterative", "--replay-from",
                                                str(tmp_path / "nowhere")]), {"reward_fn": scorer}, tmp_path)


@pytest.mark.usefixtures("one_thread")
def test_train_iterative_process_reward_model(tiny_model_dir, tmp_path):
    """--process-reward-model with --iterative: the PRM scores the steps and is retrained every rollout on
    grounded step labels (its weights change, the retrained folder is written, the run finishes)."""
    from llm_gym.reward_models import (
        ProcessRewardModelScorer,
        build_tiny_reward_backbone,
        train_reward_model,
    )

    backbone = build_tiny_reward_backbone(tmp_path / "bert")
    train_reward_model([("What is 1 + 2?", ["1 + 2 = 3", "a"])] * 2, [[1, 0]] * 2, backbone=backbone,
                       kind="process", output_dir=tmp_path / "prm", epochs=1, device="cpu")
    before = {k: v.clone() for k, v in ProcessRewardModelScorer(tmp_path / "prm").model.state_dict().items()}
    train = load_script("train")
    argv = ["--model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "8", "--n-prompts", "2",
            "--group-size", "2", "--total-timesteps", "8", "--eval-n", "0", "--tensorboard-log", "",
            "--output-dir", str(tmp_path), "--no-progress-bar", "--verbose", "0", "--run-name", "run",
            "--process-reward-model", str(tmp_path / "prm"), "--advantage", "process", "--iterative"]
    assert train.main(argv) == 0
    retrained = ProcessRewardModelScorer(tmp_path / "run" / "iterative" / "reward_model").model.state_dict()
    assert any(not torch.equal(before[k], retrained[k]) for k in before)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["timesteps"] == 8


@pytest.mark.usefixtures("one_thread")
def test_train_save_freq_and_resume_finish_bit_identical(tiny_model_dir, tmp_path):
    """--save-freq 1 writes a checkpoint per iteration; --resume from the first finishes as the full run did.

    The resumed command leaves out the algorithm flags: the checkpoint's values run, and results.json records them
    (it used to record the flags' defaults, e.g. learning_rate 2e-05, which did not run); --no-doctor applies."""
    import torch

    train = load_script("train")
    common = ["--model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "8", "--total-timesteps", "12",
              "--eval-n", "0", "--tensorboard-log", "", "--no-progress-bar", "--verbose", "0"]
    config = ["--algo", "grpo", "--n-prompts", "2", "--group-size", "2", "--learning-rate", "1e-3"]
    assert train.main([*common, *config, "--output-dir", str(tmp_path / "full"), "--run-name", "r",
                       "--save-freq", "1"]) == 0
    checkpoints = sorted(p.name for p in (tmp_path / "full" / "r" / "checkpoints").iterdir())
    assert checkpoints == ["model_4_steps.zip", "model_8_steps.zip", "model_last.zip"]
    resume = tmp_path / "full" / "r" / "checkpoints" / "model_4_steps.zip"
    assert train.main([*common, "--output-dir", str(tmp_path / "resumed"), "--run-name", "r", "--no-doctor",
                       "--resume", str(resume)]) == 0
    recorded = json.loads((tmp_path / "resumed" / "r" / "results.json").read_text())["config"]
    assert (recorded["algo"], recorded["learning_rate"], recorded["n_prompts"], recorded["group_size"]) == (
        "grpo", 1e-3, 2, 2)
    assert recorded["no_doctor"] is True
    full = ALGORITHMS["grpo"].load(tmp_path / "full" / "r" / "model.zip", device="cpu")
    resumed = ALGORITHMS["grpo"].load(tmp_path / "resumed" / "r" / "model.zip", device="cpu")
    assert resumed.num_timesteps == full.num_timesteps == 12 and resumed._n_updates == full._n_updates == 3
    for (key, a), b in zip(full.policy.state_dict().items(), resumed.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


@pytest.mark.usefixtures("one_thread")
def test_train_lora_bf16_exports_adapter_and_merged_model(tiny_model_dir, tmp_path):
    """--lora-r and --mixed-precision reach the algorithm; the job exports the adapter and the merged model."""
    train = load_script("train")
    argv = ["--model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "8", "--n-prompts", "2",
            "--group-size", "2", "--total-timesteps", "4", "--eval-n", "0", "--tensorboard-log", "",
            "--output-dir", str(tmp_path), "--no-progress-bar", "--verbose", "0", "--run-name", "run",
            "--lora-r", "4", "--lora-target-modules", "c_attn", "--mixed-precision", "bf16",
            "--gradient-checkpointing"]
    assert train.main(argv) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["world_size"] == 1 and results["peft_config"]["r"] == 4
    assert results["peft_config"]["target_modules"] == ["c_attn"] and results["peft_config"]["lora_alpha"] == 8
    config = results["algorithm_config"]
    assert config["mixed_precision"] == "bf16" and config["gradient_checkpointing"] is True
    assert (tmp_path / "run" / "hf_adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "run" / "hf_model" / "model.safetensors").is_file()
    with pytest.raises(SystemExit) as done:  # refused by the parser, before anything loads
        train.main([*argv, "--lora-r", "-1"])
    assert done.value.code == 2


@pytest.mark.parametrize("sharding,launcher", [("ddp", "torchrun"), ("fsdp", "torchrun"), ("fsdp", "accelerate")])
def test_train_under_torchrun_two_processes(tiny_model_dir, tmp_path, sharding, launcher):
    """torchrun --nproc_per_node 2 scripts/train.py (DDP, and --fsdp) and accelerate launch --use_fsdp: rank 0
    evaluates and saves once, results.json records world_size 2 and the env steps of both ranks; the FSDP
    export loads as a plain model."""
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SCRIPTS.parent), os.environ.get("PYTHONPATH", "")])}
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
              if launcher == "torchrun" else
              [sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--num_processes", "2",
               "--main_process_port", "0"])
    sharding_flag = ["--fsdp"] if sharding == "fsdp" and launcher == "torchrun" else []  # accelerate: its env var
    cmd = [*launch, str(SCRIPTS / "train.py"), "--model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "8",
           "--n-prompts", "2", "--group-size", "2", "--total-timesteps", "16", "--eval-n", "4",
           "--eval-batch-size", "4", "--tensorboard-log", str(tmp_path / "tb"), "--output-dir", str(tmp_path),
           "--no-progress-bar", "--verbose", "0", "--run-name", "run", "--mixed-precision", "no", *sharding_flag]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["world_size"] == 2
    assert results["timesteps"] == 16 and results["optimizer_steps"] == 2  # 2 iterations of 2 ranks x 4 responses
    assert results["before"]["n"] == results["after"]["n"] == 4
    assert results["algorithm_config"]["fsdp"] is bool(sharding_flag) and results["data_parallel"] == sharding
    assert len(list((tmp_path / "tb").iterdir())) == 1  # one TensorBoard run: rank 0 logs
    from transformers import AutoModelForCausalLM

    from agents import GRPO

    loaded = GRPO.load(tmp_path / "run" / "model.zip", device="cpu")  # full tensors, whichever the sharding
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "hf_model")
    ids = torch.randint(3, 50, (2, 7))
    torch.testing.assert_close(exported(input_ids=ids).logits, loaded.policy.model(input_ids=ids).logits)
