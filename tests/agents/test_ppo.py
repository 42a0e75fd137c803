"""PPO: gradient coefficient, KL-penalised reward + GAE by hand, value positions, end-to-end learn, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import configure

from agents import GRPO, PPO, LLMActorCriticPolicy
from agents.common.buffers import RolloutSamples
from agents.common.returns import gae, kl_penalty_rewards, masked_whiten
from llm_gym.lm import sequence_log_probs


def digit_reward(prompts, responses, answers, **fields):
    """Fraction of digits in the response: varies across random samples, so advantages are non-zero."""
    return [sum(c.isdigit() for c in r) / max(len(r), 1) for r in responses]


def make_ppo(make_env, **kwargs):
    params = {"n_prompts": 4, "micro_batch_size": 4, "learning_rate": 1e-3, "n_epochs": 2, "batch_size": 2,
              "seed": 0, "device": "cpu"}
    params.update(kwargs)
    return PPO("LLMPolicy", make_env(reward_fn=digit_reward, max_new_tokens=8), **params)


def logged_rows(folder) -> list[dict[str, str]]:
    rows = (folder / "progress.csv").read_text().splitlines()
    return [dict(zip(rows[0].split(","), row.split(","), strict=True)) for row in rows[1:]]


def samples(mask, advantages=None, values=None, returns=None, ref_log_probs=None) -> RolloutSamples:
    n, t = mask.shape
    zeros = torch.zeros(n, t)
    return RolloutSamples(torch.zeros(n, 1, dtype=torch.long), torch.ones(n, 1, dtype=torch.long),
                          torch.zeros(n, t, dtype=torch.long), mask.float(), torch.zeros(n), zeros,
                          torch.arange(n), zeros if advantages is None else advantages,
                          zeros if returns is None else returns, None, ref_log_probs,
                          zeros if values is None else values)


# ----------------------------------------------------------------------------- analytic


def test_gradient_coefficient_is_the_advantage(make_env):
    """On-policy (old = detached log-probs), token-mean: dL/d log pi(o_t) = -A_t / (number of real tokens)."""
    model = make_ppo(make_env)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages = torch.tensor([[0.5, -1.0, 2.0], [1.5, -0.25, 0.0]])
    log_probs = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, 0.0]], requires_grad=True)
    values = torch.zeros(2, 3, requires_grad=True)
    loss, stats = model._loss(samples(mask, advantages), log_probs, log_probs.detach(), values)
    loss.backward()
    expected = torch.tensor([[-0.5, 1.0, -2.0], [-1.5, 0.25, 0.0]]) / 5
    torch.testing.assert_close(log_probs.grad, expected)
    assert float(stats["clip_fraction"]) == 0.0 and float(stats["ratio_mean"]) == pytest.approx(1.0)


def test_loss_adds_value_and_entropy_terms(make_env):
    """L = L_clip + vf_coef * L_V - ent_coef * H: value gradient vf_coef * (V - R) / n, entropy -ent_coef / n."""
    model = make_ppo(make_env, vf_coef=0.5, ent_coef=0.1, clip_range_vf=None)
    mask = torch.tensor([[1, 1, 0]])
    values = torch.tensor([[1.0, 2.0, 5.0]], requires_grad=True)
    entropy = torch.tensor([[0.3, 0.7, 9.0]], requires_grad=True)
    micro = samples(mask, returns=torch.tensor([[0.0, 3.0, 0.0]]))
    loss, stats = model._loss(micro, torch.zeros(1, 3), torch.zeros(1, 3), values, entropy)
    # value loss 0.5 * (1 + 1) / 2 = 0.5; entropy mean (0.3 + 0.7) / 2 = 0.5; policy loss 0 (A = 0)
    assert loss.item() == pytest.approx(0.5 * 0.5 - 0.1 * 0.5)
    assert float(stats["value_loss"]) == pytest.approx(0.5)
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([[0.5 * 1.0 / 2, 0.5 * -1.0 / 2, 0.0]]))
    torch.testing.assert_close(entropy.grad, torch.tensor([[-0.1 / 2, -0.1 / 2, 0.0]]))
    with pytest.raises(RuntimeError, match="entropy"):
        model._loss(micro, torch.zeros(1, 3), torch.zeros(1, 3), values)


def test_kl_penalty_reward_and_gae_by_hand():
    """Two sequences, T = 3, the second ends after 2 tokens; beta = 0.1, gamma = 1, lambda = 0.5."""
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    old = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.0, 0.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.2, -1.5, -0.5], [-0.1, -1.0, 0.0]], dtype=torch.float64)
    token_rewards, penalty = kl_penalty_rewards(torch.tensor([1.0, 0.5], dtype=torch.float64), old, ref, mask, 0.1)
    # k1 = old - ref = [0.2, -0.5, 0], [-0.2, 0, pad]; penalty = 0.1 * k1; outcome on the last real token
    torch.testing.assert_close(penalty, torch.tensor([[0.02, -0.05, 0.0], [-0.02, 0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(token_rewards,
                               torch.tensor([[-0.02, 0.05, 1.0], [0.02, 0.5, 0.0]], dtype=torch.float64))
    # Same result from the buffer's (N, T) token rewards (outcome already on the last token).
    as_tokens = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.5, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(kl_penalty_rewards(as_tokens, old, ref, mask, 0.1)[0], token_rewards)

    values = torch.tensor([[0.5, 0.6, 0.8], [0.2, 0.4, 7.0]], dtype=torch.float64)
    advantages, returns = gae(token_rewards, values, mask, gamma=1.0, gae_lambda=0.5)
    # row 0: d2 = 1 - 0.8 = 0.2; d1 = 0.05 + 0.8 - 0.6 = 0.25, A1 = 0.25 + 0.5 * 0.2 = 0.35;
    #        d0 = -0.02 + 0.6 - 0.5 = 0.08, A0 = 0.08 + 0.5 * 0.35 = 0.255
    # row 1 (ends at t = 1, V after it is 0): d1 = 0.5 - 0.4 = 0.1; d0 = 0.02 + 0.4 - 0.2 = 0.22, A0 = 0.27
    torch.testing.assert_close(advantages, torch.tensor([[0.255, 0.35, 0.2], [0.27, 0.1, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(returns, torch.tensor([[0.755, 0.95, 1.0], [0.47, 0.5, 0.0]], dtype=torch.float64))


def test_kl_penalty_rewards_without_kl_and_errors():
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    rewards, penalty = kl_penalty_rewards(torch.tensor([2.0, 3.0]), None, None, mask, beta=0.0)
    torch.testing.assert_close(rewards, torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]))
    assert not penalty.any()
    with pytest.raises(ValueError, match="required when beta > 0"):
        kl_penalty_rewards(torch.tensor([2.0, 3.0]), None, None, mask, beta=0.1)


def test_masked_whiten_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # mean 3, unbiased variance (4 + 1 + 0 + 1 + 4) / 4 = 2.5
    expected = torch.tensor([[-2.0, -1.0, 0.0], [1.0, 2.0, 0.0]], dtype=torch.float64) / (2.5**0.5 + 1e-8)
    torch.testing.assert_close(masked_whiten(x, mask), expected)


# ----------------------------------------------------------------------------- policy


def test_value_at_t_is_the_state_before_token_t(make_env):
    """values[:, t] depends on response tokens < t only; one forward gives log-probs and values; padding is 0."""
    model = make_ppo(make_env)
    policy = model.policy
    env = model.env.envs[0]
    obs, _ = env.reset(options={"problem_id": 0})
    prompt_ids = torch.as_tensor(obs["input_ids"])[None]
    prompt_mask = torch.as_tensor(obs["attention_mask"])[None]
    response = torch.tensor([[20, 21, 22, 23, 24]])
    changed = response.clone()
    changed[0, 2] = 40
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    batch = samples(mask)._replace(prompt_ids=prompt_ids.repeat(2, 1), prompt_mask=prompt_mask.repeat(2, 1),
                                   response_ids=torch.cat([response, changed]), response_mask=mask.repeat(2, 1))
    with torch.no_grad():
        log_probs, _, values = policy.evaluate_actions(batch)
    torch.testing.assert_close(values, policy.predict_values(batch), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(values[0, :3], values[1, :3])  # token 2 is not yet seen at t <= 2
    assert values[0, 3] != values[1, 3]
    assert (values[:, 4] == 0).all()
    expected, _ = sequence_log_probs(policy.model, batch.prompt_ids, batch.prompt_mask, batch.response_ids,
                                     batch.response_mask)
    torch.testing.assert_close(log_probs, expected)


def test_sequence_log_probs_hidden_and_entropy_grad(tiny_lm):
    ids, mask = tiny_lm.encode_prompts(["What is 1 + 2?", "Hi"], length=16)
    response, resp_mask = torch.tensor([[30, 31, 32], [33, 34, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    model = tiny_lm.load_model()
    lp, ent, hidden = sequence_log_probs(model, ids, mask, response, resp_mask, return_entropy=True,
                                         entropy_grad=True, return_hidden=True)
    assert hidden.shape == (2, 3, model.config.hidden_size) and ent.requires_grad
    lp0, ent0 = sequence_log_probs(model, ids, mask, response, resp_mask, return_entropy=True)
    assert not ent0.requires_grad
    torch.testing.assert_close(lp, lp0)
    torch.testing.assert_close(ent, ent0)


def test_policy_aliases_and_separate_critic(make_env):
    model = make_ppo(make_env, policy_kwargs={"separate_critic": True})
    assert isinstance(model.policy, LLMActorCriticPolicy) and model.policy.critic is not None
    optimized = {id(p) for group in model.policy.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.policy.parameters()}
    grpo = GRPO("LLMPolicy", make_env(reward_fn=digit_reward, max_new_tokens=8), device="cpu")
    assert not hasattr(grpo.policy, "value_head")


# ----------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("separate_critic", [False, True])
def test_learn_changes_every_parameter_and_logs(make_env, tmp_path, separate_critic):
    model = make_ppo(make_env, policy_kwargs={"separate_critic": separate_critic})
    model.set_logger(configure(str(tmp_path), ["csv"]))
    before = {n: p.detach().clone() for n, p in model.policy.named_parameters()}
    assert any(n.startswith("value_head") for n in before)
    assert any(n.startswith("critic") for n in before) == separate_critic
    model.learn(8)
    assert model.num_timesteps == 8
    unchanged = [n for n, p in model.policy.named_parameters() if torch.equal(before[n], p)]
    assert unchanged == []
    rows = logged_rows(tmp_path)
    for key in ("train/value_loss", "train/explained_variance", "rollout/kl_penalty", "train/approx_kl",
                "train/clip_fraction", "train/value_clip_fraction", "train/policy_loss"):
        assert all(row[key] != "" for row in rows), key
    # The first rollout is sampled from the reference weights (KL 0); the second from updated ones.
    assert float(rows[0]["rollout/kl_penalty"]) == 0.0 and float(rows[1]["rollout/kl_penalty"]) != 0.0
    b = model.rollout_buffer.samples
    b_advantages, b_returns = gae(b.token_rewards, b.values, b.response_mask, 1.0, 0.95)
    torch.testing.assert_close(b.returns, b_returns)
    torch.testing.assert_close(b.advantages, masked_whiten(b_advantages, b.response_mask))


def test_one_step_per_rollout_computes_rollout_log_probs_itself(make_env, tmp_path):
    """n_epochs = 1, whole-batch step: no old log-probs in the buffer, the ratio is exactly 1, and the KL
    reward uses the log-probs from the values' forward pass."""
    model = make_ppo(make_env, n_epochs=1, batch_size=None)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(8)
    b = model.rollout_buffer.samples
    assert b.old_log_probs is None
    rows = logged_rows(tmp_path)
    assert float(rows[1]["train/ratio_mean"]) == pytest.approx(1.0, abs=1e-6)
    assert float(rows[1]["rollout/kl_penalty"]) != 0.0
    # Non-last real tokens carry only the KL penalty, which is non-zero after the first update.
    last = b.response_mask.sum(-1).long() - 1
    not_last = b.response_mask.bool() & (torch.arange(b.response_mask.shape[1]) != last[:, None])
    assert b.token_rewards[not_last].abs().sum() > 0


def test_save_load_restores_the_value_head(make_env, tmp_path):
    model = make_ppo(make_env, policy_kwargs={"separate_critic": True})
    model.learn(4)
    model.save(tmp_path / "ppo")
    env = make_env(reward_fn=digit_reward, max_new_tokens=8)
    loaded = PPO.load(tmp_path / "ppo", env=env, device="cpu")
    assert loaded.config.vf_coef == 0.1 and loaded.config.clip_range_vf == 0.2 and loaded.policy.critic is not None
    a_state, b_state = model.policy.state_dict(), loaded.policy.state_dict()
    assert a_state.keys() == b_state.keys()
    assert all(torch.equal(a_state[k], b_state[k]) for k in a_state)
    assert not torch.equal(model.policy.value_head.weight, torch.zeros_like(model.policy.value_head.weight))
    batch = model.rollout_buffer.samples
    torch.testing.assert_close(model.policy.predict_values(batch), loaded.policy.predict_values(batch),
                               atol=0, rtol=0)
    obs, _ = env.reset(options={"problem_id": 3})
    a, _ = model.predict(obs, deterministic=True)
    b, _ = loaded.predict(obs, deterministic=True)
    assert np.array_equal(a, b)


def test_target_kl_stops_the_epochs_early(make_env, tmp_path):
    """4 epochs x 2 minibatches = 8 steps without target_kl. With a tiny target_kl: the first step is
    on-policy (approx_kl ~ 0) and applied; the second sees the moved policy, so (SB3's rule) its update is
    skipped and the loop stops: 1 update, and the weights equal those after that one step."""
    full = make_ppo(make_env, n_epochs=4, learning_rate=1e-2)
    full.learn(4)
    assert full._n_updates == 8
    model = make_ppo(make_env, n_epochs=4, learning_rate=1e-2, target_kl=1e-6)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(4)
    assert model._n_updates == 1
    assert float(logged_rows(tmp_path)[0]["train/n_updates"]) == 1


def test_invalid_config_errors(make_env):
    for kwargs, match in (({"gae_lambda": 1.5}, "gae_lambda"), ({"vf_coef": -1.0}, "vf_coef"),
                          ({"clip_range_vf": 0.0}, "clip_range_vf"), ({"target_kl": -0.1}, "target_kl")):
        with pytest.raises(ValueError, match=match):
            make_ppo(make_env, **kwargs)
