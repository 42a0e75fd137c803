"""GRPO end to end on the tiny model: learning changes weights, determinism, save/load, callbacks, logs."""

from __future__ import annotations

import glob

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback, EvalCallback
from stable_baselines3.common.logger import configure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import GRPO
from agents.common.buffers import micro_batch_weight
from llm_gym.rewards import RewardFunctionError


def digit_reward(prompts, responses, answers, **fields):
    """Fraction of digits in the response: varies across random samples, so advantages are non-zero."""
    return [sum(c.isdigit() for c in r) / max(len(r), 1) for r in responses]


def make_grpo(make_env, **kwargs):
    params = {"n_prompts": 2, "group_size": 4, "micro_batch_size": 4, "learning_rate": 1e-3, "seed": 0,
              "device": "cpu"}
    params.update(kwargs)
    return GRPO("LLMPolicy", make_env(reward_fn=digit_reward, max_new_tokens=8), **params)


def test_learn_changes_every_trainable_parameter(make_env):
    model = make_grpo(make_env, beta=0.04)
    before = {n: p.detach().clone() for n, p in model.policy.model.named_parameters()}
    model.learn(16)
    assert model.num_timesteps == 16
    unchanged = [n for n, p in model.policy.model.named_parameters() if torch.equal(before[n], p)]
    assert unchanged == []
    ref = dict(model.ref_policy.model.named_parameters())  # the reference model stays frozen
    assert all(torch.equal(before[n], ref[n]) for n in before)


def test_beta_zero_builds_no_reference_model(make_env):
    model = make_grpo(make_env, beta=0.0)
    assert model.ref_policy is None
    model.learn(8)
    assert model.rollout_buffer.samples.ref_log_probs is None


def test_same_seed_same_rollouts_and_weights(make_env):
    runs = []
    for _ in range(2):
        model = make_grpo(make_env, n_epochs=2)
        model.learn(16)
        runs.append((model.rollout_buffer.samples.response_ids.clone(),
                     torch.cat([p.detach().flatten() for p in model.policy.model.parameters()])))
    assert torch.equal(runs[0][0], runs[1][0])
    assert torch.equal(runs[0][1], runs[1][1])
    other = make_grpo(make_env, n_epochs=2, seed=1)
    other.learn(16)
    assert not torch.equal(runs[0][0], other.rollout_buffer.samples.response_ids)


def test_save_load_gives_identical_predictions_and_weights(make_env, tmp_path):
    model = make_grpo(make_env)
    model.learn(8)
    model.save(tmp_path / "grpo")
    assert (tmp_path / "grpo.zip").is_file() and not (tmp_path / "grpo.zip.tmp").exists()
    env = make_env(reward_fn=digit_reward, max_new_tokens=8)
    loaded = GRPO.load(tmp_path / "grpo", env=env, device="cpu")
    assert loaded.config.n_prompts == 2 and loaded.config.group_size == 4 and loaded.config.learning_rate == 1e-3
    for (name, a), b in zip(model.policy.model.named_parameters(), loaded.policy.model.parameters(), strict=True):
        assert torch.equal(a, b), name
    obs, _ = env.reset(options={"problem_id": 3})
    a, _ = model.predict(obs, deterministic=True)
    b, _ = loaded.predict(obs, deterministic=True)
    assert a.shape == (8,) and np.array_equal(a, b)
    opt_a, opt_b = model.policy.optimizer.state_dict(), loaded.policy.optimizer.state_dict()
    assert torch.equal(opt_a["state"][0]["exp_avg"], opt_b["state"][0]["exp_avg"])


def test_save_pretrained_exports_a_plain_hf_folder(make_env, tmp_path):
    from transformers import AutoModelForCausalLM

    model = make_grpo(make_env)
    model.learn(8)
    folder = model.policy.save_pretrained(tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(folder)
    for a, b in zip(model.policy.model.parameters(), hf.parameters(), strict=True):
        assert torch.equal(a, b)
    assert (folder / "tokenizer.json").is_file()


def test_checkpoint_and_eval_callbacks(make_env, tmp_path):
    model = make_grpo(make_env)
    eval_env = make_env(reward_fn=digit_reward, max_new_tokens=8, split="test", n_problems=4)
    checkpoint = CheckpointCallback(save_freq=8, save_path=str(tmp_path / "ckpt"), name_prefix="grpo")
    evaluation = EvalCallback(eval_env, n_eval_episodes=4, eval_freq=8, log_path=str(tmp_path / "eval"),
                              deterministic=True, verbose=0)
    model.learn(16, callback=CallbackList([checkpoint, evaluation]))
    saved = sorted(glob.glob(str(tmp_path / "ckpt" / "grpo_*_steps.zip")), key=lambda s: int(s.rsplit("_", 2)[-2]))
    assert [int(s.rsplit("_", 2)[-2]) for s in saved] == [8, 16]
    GRPO.load(saved[-1], env=make_env(reward_fn=digit_reward, max_new_tokens=8), device="cpu")
    results = np.load(tmp_path / "eval" / "evaluations.npz")
    assert results["timesteps"].tolist() == [8, 16] and results["results"].shape == (2, 4)
    assert np.isfinite(evaluation.last_mean_reward)


DOCUMENTED_SCALARS = [
    "rollout/ep_rew_mean", "rollout/accuracy", "rollout/response_length", "rollout/truncated_fraction",
    "rollout/reward_std", "rollout/zero_std_groups", "train/policy_loss", "train/kl", "train/clip_fraction",
    "train/entropy", "train/approx_kl", "train/grad_norm", "train/learning_rate", "time/tokens_per_second",
    "time/fps",
]


def test_tensorboard_event_files_hold_the_documented_scalars(make_env, tmp_path):
    model = make_grpo(make_env, tensorboard_log=str(tmp_path))
    model.learn(16, tb_log_name="run")
    acc = EventAccumulator(str(tmp_path / "run_1"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert set(DOCUMENTED_SCALARS) <= tags, set(DOCUMENTED_SCALARS) - tags
    steps = [e.step for e in acc.Scalars("rollout/ep_rew_mean")]
    assert steps == [8, 16]


def test_sb3_logger_configure_works_unchanged(make_env, tmp_path):
    model = make_grpo(make_env)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(8)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    assert "rollout/accuracy" in header and "train/policy_loss" in header


def test_reward_function_error_surfaces_during_learn(make_env):
    def broken_reward(prompts, responses, answers, **fields):
        return [None, 1.0, 2.0]

    model = GRPO("LLMPolicy", make_env(reward_fn=broken_reward, max_new_tokens=8), n_prompts=1, group_size=2,
                 device="cpu")
    with pytest.raises(RewardFunctionError, match="broken_reward"):
        model.learn(2)


def test_micro_batch_accumulation_equals_full_batch_gradient(make_env):
    """Gradient accumulation over micro-batches must give the gradient of the minibatch loss."""
    grads = {}
    for mode in ("seq-mean-token-mean", "token-mean"):
        for micro in (8, 3):
            model = make_grpo(make_env, micro_batch_size=micro, loss_aggregation=mode, beta=0.1, learning_rate=0.0)
            model.learn(8)
            grads[mode, micro] = torch.cat([p.grad.flatten() for p in model.policy.model.parameters()])
        torch.testing.assert_close(grads[mode, 8], grads[mode, 3], atol=1e-6, rtol=1e-4)


def test_micro_batch_weight_by_hand():
    mb = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]])
    assert micro_batch_weight(mb[:1], mb, "token-mean") == pytest.approx(2 / 9)
    assert micro_batch_weight(mb[:1], mb, "seq-mean-token-mean") == pytest.approx(1 / 4)


def test_first_step_is_on_policy(make_env, tmp_path):
    """With one optimizer step per rollout, pi_old = pi: the logged ratio is 1, nothing is clipped,
    approx_kl is 0, and no extra forward pass is spent on old log-probs."""
    model = make_grpo(make_env, beta=0.0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(8)
    assert model.rollout_buffer.samples.old_log_probs is None
    rows = (tmp_path / "progress.csv").read_text().splitlines()
    logged = dict(zip(rows[0].split(","), map(float, rows[1].split(",")), strict=True))
    assert logged["train/ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert logged["train/clip_fraction"] == 0.0 and logged["train/approx_kl"] == pytest.approx(0.0, abs=1e-7)


def test_several_epochs_compute_old_log_probs_and_clip(make_env, tmp_path):
    """n_epochs=3 with a large learning rate: old log-probs are stored once, later epochs move off-policy."""
    model = make_grpo(make_env, beta=0.0, n_epochs=3, learning_rate=1e-2)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(8)
    assert model.rollout_buffer.samples.old_log_probs is not None
    rows = (tmp_path / "progress.csv").read_text().splitlines()
    logged = dict(zip(rows[0].split(","), map(float, rows[1].split(",")), strict=True))
    assert logged["train/approx_kl"] > 0 and logged["train/ratio_mean"] != pytest.approx(1.0, abs=1e-6)


def test_invalid_config_errors(make_env):
    with pytest.raises(ValueError, match="loss_aggregation"):
        make_grpo(make_env, loss_aggregation="mean")
    with pytest.raises(ValueError, match="batch_size=100"):
        make_grpo(make_env, batch_size=100)
    with pytest.raises(ValueError, match="kl_estimator"):
        make_grpo(make_env, kl_estimator="k4")
    with pytest.raises(ValueError, match="scale_rewards"):
        make_grpo(make_env, scale_rewards="std")
    with pytest.raises(ValueError, match="temperature"):
        make_grpo(make_env, temperature=0.0)
    with pytest.raises(ValueError, match="beta"):
        make_grpo(make_env, beta=-1.0)


def test_resumed_run_continues_problem_draws(make_env, tmp_path):
    model = make_grpo(make_env)
    model.learn(8)
    model.save(tmp_path / "m")
    expected = model._problem_rng.integers(1000, size=5)
    loaded = GRPO.load(tmp_path / "m", env=make_env(reward_fn=digit_reward, max_new_tokens=8), device="cpu")
    assert loaded._problem_rng.integers(1000, size=5).tolist() == expected.tolist()


def test_on_step_locals_hold_this_steps_infos_only(make_env):
    """As in SB3, ``self.locals["infos"]`` in ``_on_step`` has one info per stepped sub-env, aligned with
    ``dones`` and ``rewards`` (it used to accumulate every info of the rollout so far)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Spy(BaseCallback):
        def __init__(self):
            super().__init__()
            self.lengths = []

        def _on_step(self) -> bool:
            loc = self.locals
            self.lengths.append((len(loc["infos"]), len(loc["dones"]), len(loc["rewards"])))
            return True

    spy = Spy()
    model = make_grpo(make_env)  # one sub-env: 8 steps per rollout of 2 prompts x 4 samples
    model.learn(8, callback=spy)
    assert spy.lengths == [(1, 1, 1)] * 8
    assert len(model.rollout_buffer.samples.rewards) == 8


def test_progress_bar_counts_timesteps_not_calls(tiny_model_dir, monkeypatch):
    """One response is one timestep on the bar: SB3's bar added num_envs (N on a SequenceVecEnv) per call."""
    from agents.common.loop import TimestepProgressBar

    seen = []
    original = TimestepProgressBar._on_training_end
    monkeypatch.setattr(TimestepProgressBar, "_on_training_end",
                        lambda self: (seen.append((self.pbar.n, self.model.num_timesteps)), original(self))[-1])
    from llm_gym import SequenceEnv

    env = SequenceEnv(model=str(tiny_model_dir), max_new_tokens=4, n_problems=8, device="cpu",
                              max_prompt_length=96)
    model = GRPO("LLMPolicy", env, n_prompts=2, group_size=2, seed=0, device="cpu")
    model.learn(8, progress_bar=True)
    assert seen == [(8, 8)]
