"""DAPO on the tiny model: paper defaults, dynamic sampling (and its cap), overlong shaping, overlong filtering."""

from __future__ import annotations

import zlib

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents import DAPO
from agents.common.advantages import informative_groups
from llm_gym.rewards import overlong_penalty

T = 12  # max_new_tokens


pytestmark = pytest.mark.usefixtures("one_thread")


def text_hash_reward(prompts, responses, answers, **fields):
    """A deterministic, response-dependent reward in [0, 1): random samples of a group almost surely differ."""
    return [zlib.crc32(r.encode()) % 97 / 97 for r in responses]


def odd_answer_reward(prompts, responses, answers, **fields):
    """``text_hash_reward`` on problems with an odd answer, 0.0 on the others (their groups are all equal)."""
    return [zlib.crc32(r.encode()) % 97 / 97 if int(a) % 2 else 0.0 for r, a in zip(responses, answers, strict=True)]


def constant_reward(prompts, responses, answers, **fields):
    return [1.0 for _ in responses]


class Recorder(gym.Wrapper):
    """Records every step the algorithm takes: answer, response text and length, truncation, env reward."""

    def __init__(self, env):
        super().__init__(env)
        self.steps: list[dict] = []

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps.append({"answer": info["answer"], "text": info["response_text"], "reward": float(reward),
                           "length": info["response_length"], "truncated": info["truncated_by_length"]})
        return obs, reward, terminated, truncated, info


def make_dapo(make_env, reward_fn, max_new_tokens=T, **kwargs):
    env = Recorder(make_env(reward_fn=reward_fn, max_new_tokens=max_new_tokens))
    params = {"n_prompts": 2, "group_size": 4, "micro_batch_size": 8, "learning_rate": 1e-3, "seed": 0,
              "device": "cpu"}
    return DAPO("LLMPolicy", env, **(params | kwargs)), env


def flat_params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.policy.model.parameters()])


def force_eos(monkeypatch, model, lengths: dict[int, int]):
    """Make the rollout's row ``i`` end with EOS as its ``lengths[i]``-th token (the rest stays sampled)."""
    lm, original = model.lm, model.policy.sample_rollout

    def sample_rollout(input_ids, attention_mask, group_size=1):
        gen = original(input_ids, attention_mask, group_size)
        ids = gen.response_ids.clone()
        for row, n in lengths.items():
            ids[row, n - 1], ids[row, n:] = lm.eos_token_id, lm.pad_token_id
            prefix = ids[row, : n - 1]  # an EOS sampled earlier would end the response first: make it a "+"
            ids[row, : n - 1] = torch.where(prefix == lm.eos_token_id, 15, prefix)
        mask = lm.response_mask(ids)
        return gen._replace(response_ids=ids, response_mask=mask,
                            truncated=(mask.sum(-1) == ids.shape[1]) & (ids[:, -1] != lm.eos_token_id))

    monkeypatch.setattr(model.policy, "sample_rollout", sample_rollout)


def test_defaults_match_the_paper(make_env):
    model, _ = make_dapo(make_env, text_hash_reward)
    assert model.config.clip_range == 0.2 and model.config.clip_range_high == 0.28
    assert model.config.beta == 0.0 and model.ref_policy is None
    assert model.config.loss_aggregation == "token-mean"
    assert model.config.dynamic_sampling is True and model.config.max_sampling_rounds == 4
    assert model.config.overlong_buffer == 2 and model.config.overlong_penalty_factor == 1.0  # round(0.2 * 12)
    assert model.config.mask_truncated is False and model.config.importance_sampling_level == "token"
    assert make_dapo(make_env, text_hash_reward, max_new_tokens=8)[0].config.overlong_buffer == 2  # round(1.6)
    assert make_dapo(make_env, text_hash_reward, max_new_tokens=20)[0].config.overlong_buffer == 4


def test_dynamic_sampling_keeps_the_first_groups_with_mixed_rewards(make_env, recwarn):
    model, env = make_dapo(make_env, odd_answer_reward, overlong_buffer=0, max_sampling_rounds=10)
    model.learn(8)
    n, g = model.rollout_size, model.config.group_size
    steps = env.steps
    assert len(steps) % n == 0 and model.num_timesteps == len(steps)
    rewards = np.array([s["reward"] for s in steps])
    groups = [steps[k:k + g] for k in range(0, len(steps), g)]
    assert all(len({s["answer"] for s in grp}) == 1 for grp in groups)  # a group is one problem
    mixed = informative_groups(rewards, g)[::g]
    rounds = len(steps) // n
    # Sampling stopped at the first round that completed n_prompts mixed groups.
    n_prompts = model.config.n_prompts
    assert mixed.sum() >= n_prompts and mixed[: (rounds - 1) * n_prompts].sum() < n_prompts
    assert (~mixed).sum() >= 1, "seed gives no all-equal group: the filter is not exercised"

    stats = model._rollout_stats
    assert stats["rollout/sampling_rounds"] == rounds
    assert stats["rollout/generated_sequences"] == rounds * n == len(steps)
    assert stats["rollout/dropped_groups"] == (~mixed).sum()

    # The buffer holds exactly the first n_prompts mixed groups, in order, with their env rewards.
    kept = [grp for grp, m in zip(groups, mixed, strict=True) if m][: model.config.n_prompts]
    s = model.rollout_buffer.samples
    assert s.n_sequences == n
    torch.testing.assert_close(s.rewards, torch.tensor([x["reward"] for grp in kept for x in grp]))
    assert model.lm.decode(s.response_ids, s.response_mask) == [x["text"] for grp in kept for x in grp]
    assert s.group_ids.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    for k in range(model.config.n_prompts):
        rows = slice(k * g, (k + 1) * g)
        assert s.rewards[rows].max() > s.rewards[rows].min()
        assert (s.prompt_ids[rows] == s.prompt_ids[k * g]).all()
    assert model._n_updates == 1
    assert not [w for w in recwarn if "max_sampling_rounds" in str(w.message)]


def test_cap_with_no_informative_group_skips_training(make_env):
    model, env = make_dapo(make_env, constant_reward, max_sampling_rounds=3)
    before = flat_params(model)
    with pytest.warns(UserWarning, match=r"only 0 of n_prompts=2 .*max_sampling_rounds=3"):
        model.learn(8)
    assert len(env.steps) == model.num_timesteps == 3 * 8
    assert len(model.rollout_buffer) == 0
    assert model._n_updates == 0 and torch.equal(flat_params(model), before)
    stats = model._rollout_stats
    assert stats["rollout/sampling_rounds"] == 3 and stats["rollout/generated_sequences"] == 24
    assert stats["rollout/dropped_groups"] == 6


def test_cap_trains_on_the_groups_found(make_env):
    model, env = make_dapo(make_env, odd_answer_reward, n_prompts=4, group_size=2, overlong_buffer=0,
                           max_sampling_rounds=1)
    before = flat_params(model)
    with pytest.warns(UserWarning, match="max_sampling_rounds=1") as record:
        model.learn(8)
    rewards = np.array([s["reward"] for s in env.steps])
    found = int(informative_groups(rewards, 2)[::2].sum())
    assert len(env.steps) == 8 and 0 < found < 4, "seed must draw odd and even answers"
    assert f"only {found} of n_prompts=4" in str(record[0].message)
    s = model.rollout_buffer.samples
    assert s.n_sequences == found * 2
    torch.testing.assert_close(s.rewards, torch.tensor(rewards[informative_groups(rewards, 2)], dtype=torch.float32))
    assert model._n_updates == 1 and not torch.equal(flat_params(model), before)
    assert model._rollout_stats["rollout/dropped_groups"] == 4 - found


def test_overlong_shaping_adds_the_penalty_to_buffer_rewards(make_env, monkeypatch):
    model, env = make_dapo(make_env, text_hash_reward, dynamic_sampling=False, overlong_buffer=6,
                           overlong_penalty_factor=0.5)
    force_eos(monkeypatch, model, {0: 3, 1: 6, 2: 7, 3: 9, 4: 12})
    model.learn(8)
    lengths = np.array([s["length"] for s in env.steps])
    assert lengths[:5].tolist() == [3, 6, 7, 9, 12]
    env_rewards = np.array([s["reward"] for s in env.steps])
    penalty = overlong_penalty(lengths, T, 6, 0.5)
    assert penalty[:5].tolist() == pytest.approx([0.0, 0.0, -0.5 / 6, -0.25, -0.5])  # 0.5 * (6 - L) / 6
    s = model.rollout_buffer.samples
    torch.testing.assert_close(s.rewards, torch.tensor(env_rewards + penalty, dtype=torch.float32))
    assert model._rollout_stats["rollout/overlong_penalty"] == pytest.approx(penalty.mean())


def test_overlong_buffer_zero_leaves_rewards_unchanged(make_env, monkeypatch):
    model, env = make_dapo(make_env, text_hash_reward, dynamic_sampling=False, overlong_buffer=0)
    force_eos(monkeypatch, model, {0: 9})
    model.learn(8)
    s = model.rollout_buffer.samples
    torch.testing.assert_close(s.rewards, torch.tensor([x["reward"] for x in env.steps]))
    assert "rollout/overlong_penalty" not in model._rollout_stats
    assert s.response_mask.sum(-1)[0] == 9


def test_mask_truncated_zeroes_the_mask_of_cut_responses(make_env, monkeypatch):
    model, env = make_dapo(make_env, text_hash_reward, dynamic_sampling=False, overlong_buffer=0,
                           mask_truncated=True)
    force_eos(monkeypatch, model, {0: 4, 5: 10})
    before = flat_params(model)
    model.learn(8)
    truncated = torch.tensor([x["truncated"] for x in env.steps])
    assert not truncated[0] and not truncated[5] and truncated.sum() >= 2, "need both kinds of rows"
    s = model.rollout_buffer.samples
    full = model.lm.response_mask(s.response_ids).float()
    assert full[0].sum() == 4 and full[5].sum() == 10
    assert (s.response_mask[truncated] == 0).all()
    torch.testing.assert_close(s.response_mask[~truncated], full[~truncated])
    assert model._rollout_stats["rollout/masked_truncated"] == pytest.approx(truncated.float().mean().item())
    assert s.rewards.tolist() == pytest.approx([x["reward"] for x in env.steps])  # still in the group stats
    assert torch.isfinite(flat_params(model)).all() and not torch.equal(flat_params(model), before)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_sampling_rounds": 0}, "max_sampling_rounds"),
    ({"overlong_buffer": 13}, "overlong_buffer"),
    ({"overlong_buffer": -1}, "overlong_buffer"),
    ({"overlong_penalty_factor": -0.5}, "penalty_factor"),
    ({"group_size": 1, "n_prompts": 4}, "group_size >= 2"),
])
def test_invalid_config_raises(make_env, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_dapo(make_env, text_hash_reward, **kwargs)


def test_save_load_keeps_the_dapo_settings(make_env, tmp_path):
    model, _ = make_dapo(make_env, text_hash_reward, clip_range_high=0.3, max_sampling_rounds=7, overlong_buffer=5,
                         overlong_penalty_factor=0.5, mask_truncated=True, dynamic_sampling=False)
    model.save(tmp_path / "dapo")
    loaded = DAPO.load(tmp_path / "dapo", env=make_env(reward_fn=text_hash_reward, max_new_tokens=T), device="cpu")
    assert (loaded.config.clip_range, loaded.config.clip_range_high, loaded.config.max_sampling_rounds) == (0.2, 0.3, 7)
    assert (loaded.config.overlong_buffer, loaded.config.overlong_penalty_factor) == (5, 0.5)
    assert loaded.config.mask_truncated is True and loaded.config.dynamic_sampling is False
    assert loaded.config.loss_aggregation == "token-mean" and loaded.config.beta == 0.0 and loaded.ref_policy is None
    assert torch.equal(flat_params(loaded), flat_params(model))
