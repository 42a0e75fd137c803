"""GSPO (sequence-level ratio and clipping) and the Online RFT baseline, on the tiny model and on crafted tensors."""

from __future__ import annotations

import math
import zlib

import pytest
import torch
from stable_baselines3.common.logger import configure

from agents import GRPO, GSPO, OnlineRFT
from agents.common.buffers import RolloutSamples

pytestmark = pytest.mark.usefixtures("one_thread")


def text_hash_reward(prompts, responses, answers, **fields):
    """A deterministic, response-dependent reward in [0, 1): random samples of a group almost surely differ."""
    return [zlib.crc32(r.encode()) % 97 / 97 for r in responses]


def half_correct_reward(prompts, responses, answers, **fields):
    """1.0 ("correct") for about half of the random responses, else 0.0."""
    return [float(zlib.crc32(r.encode()) % 2) for r in responses]


def never_correct_reward(prompts, responses, answers, **fields):
    return [0.5 * (zlib.crc32(r.encode()) % 2) for r in responses]  # varies, but always below 1.0


def make(cls, make_env, reward_fn=text_hash_reward, **kwargs):
    params = {"n_prompts": 2, "group_size": 4, "micro_batch_size": 8, "learning_rate": 1e-3, "seed": 0,
              "device": "cpu"}
    return cls("LLMPolicy", make_env(reward_fn=reward_fn, max_new_tokens=8), **(params | kwargs))


def flat_params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.policy.model.parameters()])


def logged(tmp_path) -> dict[str, float]:
    rows = (tmp_path / "progress.csv").read_text().splitlines()
    return dict(zip(rows[0].split(","), map(float, rows[1].split(",")), strict=True))


def samples(response_mask, advantages, rewards=None) -> RolloutSamples:
    """A hand-made micro-batch: only the fields the losses read are meaningful."""
    n, t = response_mask.shape
    zeros = torch.zeros(n, t)
    rewards = torch.zeros(n) if rewards is None else rewards
    return RolloutSamples(torch.zeros(n, 1, dtype=torch.long), torch.ones(n, 1, dtype=torch.long),
                          torch.zeros(n, t, dtype=torch.long), response_mask, rewards, zeros,
                          torch.arange(n), advantages, zeros, None, None, None)


# ---------------------------------------------------------------- GSPO


def test_gspo_defaults_and_levels(make_env):
    model = make(GSPO, make_env)
    cfg = model.config
    assert (cfg.clip_range, cfg.clip_range_high) == (3e-4, 4e-4)
    assert cfg.beta == 0.0 and model.ref_policy is None
    assert cfg.importance_sampling_level == "sequence" and cfg.loss_aggregation == "seq-mean-token-mean"
    assert make(GSPO, make_env, importance_sampling_level="sequence-token").config.importance_sampling_level == (
        "sequence-token")
    for level in ("token", "seq"):
        with pytest.raises(ValueError, match="importance_sampling_level"):
            make(GSPO, make_env, importance_sampling_level=level)


def test_one_on_policy_step_equals_grpo(make_env):
    """With pi_old = pi (one step per rollout) GSPO's gradient is GRPO's with beta=0 (GSPO eq. 10-11)."""
    before = flat_params(make(GRPO, make_env, beta=0.0))
    params, grads, responses = {}, {}, {}
    for name, cls, kwargs in (("grpo", GRPO, {"beta": 0.0}), ("gspo", GSPO, {}),
                              ("gspo-token", GSPO, {"importance_sampling_level": "sequence-token"})):
        model = make(cls, make_env, **kwargs)
        model.learn(8)
        assert model._n_updates == 1
        params[name], responses[name] = flat_params(model), model.rollout_buffer.samples.response_ids
        grads[name] = torch.cat([p.grad.flatten() for p in model.policy.model.parameters()])
    assert torch.equal(responses["grpo"], responses["gspo"]) and torch.equal(responses["grpo"], responses["gspo-token"])
    assert (params["grpo"] - before).abs().max() > 1e-4  # the step did move the weights
    scale = float(grads["grpo"].abs().max())
    assert scale > 0
    for name in ("gspo", "gspo-token"):
        torch.testing.assert_close(grads[name], grads["grpo"], atol=1e-5 * scale, rtol=1e-4)
        # Adam's first step is ~lr * sign(g): float noise on near-zero gradients moves a weight by << lr = 1e-3.
        torch.testing.assert_close(params[name], params["grpo"], atol=1e-5, rtol=0)


def test_several_minibatches_differ_from_grpo_and_clip_sequences(make_env, tmp_path):
    runs = {}
    for cls, kwargs in ((GRPO, {"beta": 0.0}), (GSPO, {})):
        model = make(cls, make_env, batch_size=4, **kwargs)
        model.set_logger(configure(str(tmp_path / cls.__name__), ["csv"]))
        model.learn(8)
        assert model._n_updates == 2 and model.rollout_buffer.samples.old_log_probs is not None
        runs[cls.__name__] = flat_params(model), logged(tmp_path / cls.__name__)
    assert (runs["GSPO"][0] - runs["GRPO"][0]).abs().max() > 1e-4
    gspo_stats = runs["GSPO"][1]
    assert gspo_stats["train/clip_fraction"] > runs["GRPO"][1]["train/clip_fraction"] >= 0
    assert gspo_stats["train/n_updates"] == 2


def test_gspo_loss_clips_whole_sequences(make_env):
    """Crafted log-probs: a sequence whose ratio leaves the range on its advantage's side gets no gradient at all,
    even through tokens whose own ratio is inside; GRPO clips token by token."""
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float32)
    advantages = torch.tensor([1.0, 1.0, -1.0])[:, None] * mask
    old = -torch.rand(3, 4) - 0.5
    delta = torch.tensor([[0.01, 0.0, 0.0, 0.03],  # mean 0.01: s_0 = e^0.01 > 1 + 4e-4, A > 0: clipped
                          [0.02, -0.02, 0.0, 0.0],  # mean 0: s_1 = 1, not clipped
                          [0.01, 0.01, 0.0, 0.0]])  # s_2 = e^0.01 but A < 0: the unclipped term is the min
    micro = samples(mask, advantages)

    def run(model):
        log_probs = (old + delta).requires_grad_(True)
        loss, stats = model._loss(micro, log_probs, old)
        loss.backward()
        return loss, stats, log_probs.grad

    gspo = make(GSPO, make_env)  # clip ranges 3e-4 / 4e-4, seq-mean-token-mean, beta 0
    loss, stats, grad = run(gspo)
    s = math.exp(0.01)
    # L = (1/N) sum_i -min(s_i A_i, clip(s_i) A_i): row 0 takes the clipped value 1 + 4e-4.
    assert loss.item() == pytest.approx((-(1 + 4e-4) - 1.0 + s) / 3, abs=1e-6)
    # dL/dlogp_{i,t} = -(1/N) A_i s_i / |o_i| on real tokens of unclipped rows.
    expected = torch.tensor([[0.0, 0.0, 0.0, 0.0], [-1 / 9, -1 / 9, -1 / 9, 0.0], [s / 6, s / 6, 0.0, 0.0]])
    torch.testing.assert_close(grad, expected, atol=1e-6, rtol=1e-5)
    assert float(stats["clip_fraction"]) == pytest.approx(4 / 9)

    gspo.config = gspo.config.replace(importance_sampling_level="sequence-token")  # same value and gradient
    loss_token, _, grad_token = run(gspo)
    assert loss_token.item() == pytest.approx(loss.item(), abs=1e-6)
    torch.testing.assert_close(grad_token, expected, atol=1e-6, rtol=1e-5)

    with pytest.raises(ValueError, match="importance_sampling_level"):  # the preset's check guards the config
        gspo.config = gspo.config.replace(importance_sampling_level="token")
    grpo = make(GRPO, make_env, clip_range=3e-4, clip_range_high=4e-4, beta=0.0)
    _, _, grad_grpo = run(grpo)  # GRPO with the same ranges: token 0 of row 1 is clipped alone
    assert grad_grpo[1, 0] == 0 and (grad_grpo[1, 1:3] != 0).all()
    assert grad_grpo[0, 1] != 0 and grad_grpo[0, 0] == 0  # row 0: only its tokens with ratio > 1 + 4e-4


def test_gspo_save_load_keeps_the_level(make_env, tmp_path):
    model = make(GSPO, make_env, importance_sampling_level="sequence-token", clip_range=1e-3)
    model.save(tmp_path / "gspo")
    loaded = GSPO.load(tmp_path / "gspo", env=make_env(reward_fn=text_hash_reward, max_new_tokens=8), device="cpu")
    assert loaded.config.importance_sampling_level == "sequence-token"
    assert (loaded.config.clip_range, loaded.config.clip_range_high) == (1e-3, 4e-4)


# ---------------------------------------------------------------- Online RFT


def test_rft_advantages_are_the_correctness_indicator(make_env):
    model = make(OnlineRFT, make_env)
    assert model.config.beta == 0.0 and model.ref_policy is None and model.config.reward_threshold == 1.0
    b = samples(torch.ones(5, 2), torch.zeros(5, 2), rewards=torch.tensor([1.0, 0.0, 0.5, 2.0, 0.999]))
    assert model._advantages(b)[0][:, 0].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]  # (N, T): the same on every token
    model.config = model.config.replace(reward_threshold=0.5)
    assert model._advantages(b)[0].tolist() == [[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]


def test_rft_loss_is_the_likelihood_of_correct_responses(make_env):
    model = make(OnlineRFT, make_env)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float32)
    correct = torch.tensor([1.0, 0.0, 1.0, 0.0])
    log_probs = (-torch.rand(4, 4) - 0.1).requires_grad_(True)
    loss, _ = model._loss(samples(mask, correct[:, None] * mask), log_probs, log_probs.detach() - 5.0)
    lp = log_probs.detach()
    expected = -(lp[0, :3].mean() + lp[2].mean()) / 4  # -(1/N) sum_i I_i mean_t log pi(o_{i,t}); no ratio
    assert loss.item() == pytest.approx(float(expected), abs=1e-6)
    loss.backward()
    grad = torch.zeros(4, 4)
    grad[0, :3], grad[2] = -1 / 12, -1 / 16
    torch.testing.assert_close(log_probs.grad, grad)


def test_rft_update_raises_the_likelihood_of_correct_responses(make_env):
    model = make(OnlineRFT, make_env, half_correct_reward, learning_rate=1e-4)
    initial = {k: v.clone() for k, v in model.policy.model.state_dict().items()}
    model.learn(8)
    s = model.rollout_buffer.samples
    correct = (s.rewards >= 1.0).float()
    assert 0 < correct.sum() < 8, "seed must give correct and wrong responses"
    torch.testing.assert_close(s.advantages, correct[:, None] * s.response_mask)

    def loss_now() -> float:
        with torch.no_grad():
            lp = model.policy.evaluate_actions(s)[0]  # (N, T) log-probs, 0 on padding
        return float(-((lp * s.response_mask).sum(-1) / s.response_mask.sum(-1) * correct).sum() / 8)

    after = loss_now()
    model.policy.model.load_state_dict(initial)
    assert after < loss_now()


def test_rft_without_correct_response_has_zero_gradient(make_env):
    model = make(OnlineRFT, make_env, never_correct_reward, policy_kwargs={"optimizer_kwargs": {"weight_decay": 0.0}})
    before = flat_params(model)
    model.learn(8)
    assert model.rollout_buffer.samples.rewards.max() < 1.0 and model._n_updates == 1
    assert all(p.grad is not None and not p.grad.any() for p in model.policy.model.parameters())
    assert torch.equal(flat_params(model), before)
