"""Token-level rollouts: the KV cache as recurrent state, same episodes as the sequence level."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from agents import GRPO
from llm_gym import make_group_vec_env
from llm_gym.lm import sequence_log_probs


def digit_reward(prompts, responses, answers, **fields):
    return [sum(c.isdigit() for c in r) / max(len(r), 1) for r in responses]


def env_kwargs(tiny_model_dir):
    return {"model": str(tiny_model_dir), "device": "cpu", "n_problems": 20, "max_new_tokens": 10,
            "max_prompt_length": 96, "reward_fn": digit_reward}


def one_rollout(env, **kwargs):
    model = GRPO("LLMPolicy", env, n_prompts=2, group_size=2, micro_batch_size=4, beta=0.0, seed=3,
                 device="cpu", temperature=0.8, **kwargs)
    total, callback = model._setup_learn(4, None)
    callback.on_training_start(locals(), globals())
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer)
    return model, model.rollout_buffer.samples


def test_token_and_sequence_rollouts_give_the_same_episodes(tiny_model_dir):
    """Same policy, same seed, same sampling settings: identical responses, log-probs and rewards."""
    kwargs = env_kwargs(tiny_model_dir)
    seq_model, seq = one_rollout(gym.make("LLMMath-v0", **kwargs))
    tok_model, tok = one_rollout(make_group_vec_env("LLMMathToken-v0", n_envs=4, **kwargs))
    assert torch.equal(seq.prompt_ids, tok.prompt_ids)
    assert torch.equal(seq.response_ids, tok.response_ids)
    assert torch.equal(seq.response_mask, tok.response_mask)
    torch.testing.assert_close(seq.rewards, tok.rewards)
    assert tok.rewards.abs().sum() > 0  # the comparison is not between all-zero rewards
    with torch.no_grad():
        lp_seq = seq_model.policy.log_probs(seq.prompt_ids, seq.prompt_mask, seq.response_ids, seq.response_mask)[0]
        lp_tok = tok_model.policy.log_probs(tok.prompt_ids, tok.prompt_mask, tok.response_ids, tok.response_mask)[0]
    torch.testing.assert_close(lp_seq, lp_tok)
    assert seq_model.num_timesteps == 4  # one timestep per response
    assert tok_model.num_timesteps == int(tok.response_mask.sum())  # one timestep per token
    # Token level pays the score on the last token only.
    last = tok.response_mask.sum(-1).long() - 1
    assert torch.equal(tok.token_rewards.sum(-1), tok.token_rewards[torch.arange(4), last])


def test_kv_cache_decoding_log_probs_equal_a_full_forward(tiny_model_dir):
    """Sampling log-probs from the incremental decoder equal one forward pass over the finished sequences."""
    from llm_gym.decoding import decode_step, prefill
    from llm_gym.lm import get_language_model

    lm = get_language_model(str(tiny_model_dir), device="cpu")
    ids, mask = lm.encode_prompts(["What is 3 + 4?", "Hi there"], length=20)
    state = prefill(lm.model, ids, mask)
    torch.manual_seed(0)
    tokens, step_log_probs = [], []
    for _ in range(6):
        tok = torch.multinomial(torch.softmax(state.logits, -1), 1).squeeze(1)
        step_log_probs.append(torch.log_softmax(state.logits, -1).gather(-1, tok[:, None]).squeeze(1))
        tokens.append(tok)
        state = decode_step(lm.model, state, tok)
    response = torch.stack(tokens, 1)
    full, _ = sequence_log_probs(lm.model, ids, mask, response, torch.ones_like(response))
    torch.testing.assert_close(torch.stack(step_log_probs, 1), full, atol=1e-5, rtol=1e-5)


def test_recurrent_predict_matches_generate(tiny_model_dir):
    """predict() on token envs carries the KV cache across calls and reproduces greedy generate."""
    kwargs = env_kwargs(tiny_model_dir)
    venv = make_group_vec_env("LLMMathToken-v0", n_envs=2, **kwargs)
    model = GRPO("LLMPolicy", venv, n_prompts=1, group_size=2, seed=0, device="cpu")
    obs = venv.reset_groups([5, 6])
    state, starts, actions = None, np.ones(2, dtype=bool), []
    while not venv.all_done:
        action, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        actions.append(action)
        obs, _, _, _ = venv.step(action)
        starts = np.zeros(2, dtype=bool)
    L = venv.get_attr("max_prompt_length")[0]
    first = venv.reset_groups([5, 6])
    gen = model.lm.generate(torch.as_tensor(first["input_ids"][:, :L]), torch.as_tensor(first["attention_mask"][:, :L]),
                            10, model=model.policy.model, do_sample=False)
    stepped = np.stack(actions, 1)
    for row in range(2):
        n = int(gen.response_mask[row].sum())
        assert stepped[row, :n].tolist() == gen.response_ids[row, :n].tolist()


def test_token_level_grpo_learns_and_validates_envs(tiny_model_dir):
    kwargs = env_kwargs(tiny_model_dir)
    model = GRPO("LLMPolicy", make_group_vec_env("LLMMathToken-v0", n_envs=4, **kwargs), n_prompts=2,
                 group_size=2, seed=0, device="cpu", learning_rate=1e-3)
    before = [p.detach().clone() for p in model.policy.model.parameters()]
    model.learn(20)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.policy.model.parameters(), strict=True))
    with pytest.raises(ValueError, match="make_group_vec_env"):
        GRPO("LLMPolicy", DummyVecEnv([lambda: gym.make("LLMMathToken-v0", **kwargs)] * 2), n_prompts=1,
             group_size=2, device="cpu")
