"""TokenEnv: checkers, observation layout, one-token steps, reward on the last step, info parity."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import llm_gym
from llm_gym.envs import TokenEnv

KWARGS = {"max_new_tokens": 12, "n_problems": 10, "device": "cpu", "max_prompt_length": 96}


@pytest.fixture
def make_token_env(tiny_model_dir):
    def _make(**kwargs):
        return TokenEnv(**({"model": str(tiny_model_dir)} | KWARGS | kwargs))

    return _make


def tokens(env, text: str, eos: bool = True) -> list[int]:
    lm = env.lm
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"] + ([lm.eos_token_id] if eos else [])


def run(env, ids):
    """Step ``ids`` one by one; return the list of (obs, reward, terminated, truncated, info)."""
    return [env.step(t) for t in ids]


def test_registered_token_env_passes_both_checkers(tiny_model_dir):
    assert set(llm_gym.TOKEN_ENV_IDS) == {"LLMMathToken-v0", "LLMGSM8KToken-v0"}
    assert set(llm_gym.TOKEN_ENV_IDS) | set(llm_gym.SEQUENCE_ENV_IDS) == set(llm_gym.ENV_IDS)
    env = gym.make("LLMMathToken-v0", model=str(tiny_model_dir), device="cpu", max_prompt_length=None,
                   n_problems=5)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env, warn=False)
    base = env.unwrapped
    assert isinstance(base, TokenEnv) and base.max_new_tokens == 64
    assert env.action_space == gym.spaces.Discrete(base.lm.vocab_size)
    L = base.max_prompt_length
    assert env.observation_space["input_ids"].shape == (L + 64,)


def test_runs_in_dummy_vec_env_with_monitor(make_token_env):
    venv = DummyVecEnv([lambda: Monitor(make_token_env(max_new_tokens=3)) for _ in range(2)])
    venv.set_options([{"problem_id": 1}, {"problem_id": 2}])
    obs = venv.reset()
    assert obs["input_ids"].shape == (2, 96 + 3)
    eos = venv.get_attr("lm")[0].eos_token_id
    x = venv.get_attr("lm")[0].tokenizer.convert_tokens_to_ids("x")
    _, rewards, dones, infos = venv.step(np.array([x, eos]))
    assert dones.tolist() == [False, True] and rewards.tolist() == [0.0, 0.0]
    assert infos[1]["episode"]["l"] == 1 and infos[0]["token_index"] == 0
    for _ in range(2):
        _, _, dones, infos = venv.step(np.array([x, x]))
    assert dones[0] and infos[0]["truncated_by_length"] is True and infos[0]["episode"]["l"] == 3


def test_correct_answer_pays_one_on_eos_with_sequence_env_info(make_token_env, make_env):
    env, seq = make_token_env(), make_env(**KWARGS)
    _, reset_info = env.reset(options={"problem_id": 3})
    assert reset_info == seq.reset(options={"problem_id": 3})[1]
    answer = env.problems[3].answer
    ids = tokens(env, f"\\boxed{{{answer}}}")
    steps = run(env, ids)
    assert [s[1] for s in steps] == [0.0] * (len(ids) - 1) + [1.0]
    assert [s[2] for s in steps] == [False] * (len(ids) - 1) + [True]
    assert not any(s[3] for s in steps)
    assert [s[4] for s in steps[:2]] == [{"problem_id": 3, "token_index": 0}, {"problem_id": 3, "token_index": 1}]
    action = np.full(12, env.lm.pad_token_id, dtype=np.int64)
    action[: len(ids)] = ids
    _, seq_reward, *_, seq_info = seq.step(action)
    info = steps[-1][4]
    assert info.pop("token_index") == len(ids) - 1
    assert info == seq_info and seq_reward == 1.0
    assert info["response_text"] == f"\\boxed{{{answer}}}" and info["response_length"] == len(ids)
    assert info["step_rewards"] == [] and info["truncated_by_length"] is False
    with pytest.raises(RuntimeError, match="episode has ended"):
        env.step(0)


def test_truncation_and_format_reward_match_sequence_env(make_token_env, make_env):
    env, seq = make_token_env(format_weight=0.5), make_env(**KWARGS, format_weight=0.5)
    env.reset(options={"problem_id": 0})
    seq.reset(options={"problem_id": 0})
    ids = tokens(env, "\\boxed{x} abcdefgh", eos=False)[:12]
    steps = run(env, ids)
    *_, (_, reward, terminated, truncated, info) = steps
    assert (reward, terminated, truncated) == (0.5, False, True)
    assert all(s[1] == 0.0 and not s[3] for s in steps[:-1])
    assert info["truncated_by_length"] is True and info["token_index"] == 11 and info["response_length"] == 12
    _, seq_reward, *_, seq_info = seq.step(np.array(ids))
    assert seq_reward == reward and info | {"token_index": 0} == seq_info | {"token_index": 0}


def test_observation_layout(make_token_env):
    env = make_token_env(max_new_tokens=5)
    obs, _ = env.reset(options={"problem_id": 2})
    prompt = env.prompt_obs()
    L, pad = env.max_prompt_length, env.lm.pad_token_id
    assert prompt["input_ids"].shape == (L,) and prompt["attention_mask"][0] == 0  # left-padded
    np.testing.assert_array_equal(obs["input_ids"][:L], prompt["input_ids"])
    np.testing.assert_array_equal(obs["attention_mask"][:L], prompt["attention_mask"])
    assert obs["input_ids"][L:].tolist() == [pad] * 5 and obs["attention_mask"][L:].tolist() == [0] * 5
    ids = tokens(env, "12", eos=False) + [pad]  # a generated pad id is a real token (mask 1)
    for t in ids:
        new, *_ = env.step(np.int64(t))
        assert not np.shares_memory(new["input_ids"], obs["input_ids"])
        obs = new
    assert obs["input_ids"][L:].tolist() == ids + [pad] * 2
    assert obs["attention_mask"][L:].tolist() == [1, 1, 1, 0, 0]
    np.testing.assert_array_equal(obs["input_ids"][:L], prompt["input_ids"])
    assert env.response_ids().tolist() == ids and env.n_generated == 3
    assert env.observation_space.contains(obs)


def test_bad_actions_and_reset_errors(make_token_env):
    env = make_token_env()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    V = env.lm.vocab_size
    with pytest.raises(ValueError, match=rf"Token id {V} is outside the vocabulary 0\.\.{V - 1}"):
        env.step(V)
    with pytest.raises(ValueError, match=r"integer token id in 0\.\."):
        env.step(2.5)
    with pytest.raises(ValueError, match="integer token id"):
        env.step(np.array([1, 2]))
    with pytest.raises(ValueError, match="problem_id=10 is outside 0..9"):
        env.reset(options={"problem_id": 10})
    _, info = env.reset(options={"problem_id": 7})
    assert info["problem_id"] == 7 and info["answer"] == env.problems[7].answer
    assert env.step(np.array([5]))[4] == {"problem_id": 7, "token_index": 0}  # (1,) arrays are accepted


def test_same_seed_same_problem(make_token_env):
    a, b = make_token_env(), make_token_env()
    assert a.reset(seed=5)[1]["problem_id"] == b.reset(seed=5)[1]["problem_id"]


def test_step_rewards_are_paid_at_their_token_indices(make_token_env, monkeypatch):
    def fake_process_rewards(self, response_ids):
        # a "step" ends at every newline; causal: each reward depends only on the prefix up to it
        return [(i, 0.25) for i, t in enumerate(response_ids.tolist()) if t == newline]

    monkeypatch.setattr(TokenEnv, "process_rewards", fake_process_rewards)
    env = make_token_env(max_new_tokens=20)
    newline = env.lm.tokenizer.convert_tokens_to_ids("\n")
    env.reset(options={"problem_id": 0})
    ids = tokens(env, f"a\nb\n\\boxed{{{env.problems[0].answer}}}")
    rewards = [s[1] for s in run(env, ids)]
    expected = [0.0] * len(ids)
    expected[1] = expected[3] = 0.25
    expected[-1] = 1.0
    assert rewards == expected
    env.reset(options={"problem_id": 0})
    steps = run(env, ids)
    assert steps[-1][4]["step_rewards"] == [(1, 0.25), (3, 0.25)]
