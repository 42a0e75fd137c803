"""OverlongPenalty wrapper: DAPO's soft overlong punishment (eq. 13) added to the env's reward at episode end."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import llm_gym
from llm_gym.rewards import overlong_penalty
from llm_gym.wrappers import OverlongPenalty

T = 12  # max_new_tokens of the envs below


def length_reward(prompts, responses, answers, **fields):
    """0.25 + 0.01 per character: non-zero and length dependent, so the sum with the penalty is checked."""
    return [0.25 + 0.01 * len(r) for r in responses]


def response(lm, text: str, eos: bool) -> np.ndarray:
    """A ``(T,)`` action: the characters of ``text``, then EOS if asked, right-padded with the pad id."""
    ids = lm.tokenizer.convert_tokens_to_ids(list(text)) + ([lm.eos_token_id] if eos else [])
    assert len(ids) <= T and lm.tokenizer.unk_token_id not in ids
    return np.array(ids + [lm.pad_token_id] * (T - len(ids)), dtype=np.int64)


# (text, eos, response_length, penalty with buffer 6 and factor 2): expected length 12 - 6 = 6 tokens;
# above it the penalty falls by 2/6 per token, down to -2 at 12 tokens.
CASES = [
    ("123", True, 4, 0.0),  # short: no penalty
    ("12345", True, 6, 0.0),  # exactly max_length - buffer: still none
    ("12345678", True, 9, -1.0),  # 3 tokens into the buffer: 2 * (6 - 9) / 6
    ("1234567890+", True, 12, -2.0),  # EOS as the 12th token: the full penalty
    ("1234567890+-", False, 12, -2.0),  # cut by the budget
]


@pytest.mark.parametrize(("text", "eos", "length", "penalty"), CASES)
def test_sequence_env_reward_is_env_reward_plus_penalty(make_env, text, eos, length, penalty):
    base = make_env(reward_fn=length_reward, max_new_tokens=T)
    env = OverlongPenalty(base, overlong_buffer=6, penalty_factor=2.0)
    action = response(base.lm, text, eos)
    assert float(overlong_penalty([length], T, 6, 2.0)[0]) == pytest.approx(penalty)

    base.reset(options={"problem_id": 3})
    _, raw_reward, *_, raw_info = base.step(action)
    obs, _ = env.reset(options={"problem_id": 3})
    obs2, reward, terminated, truncated, info = env.step(action)

    assert raw_info["response_length"] == info["response_length"] == length
    assert raw_reward == pytest.approx(0.25 + 0.01 * len(text))
    assert reward == pytest.approx(raw_reward + penalty, abs=1e-9)
    assert (terminated, truncated) == (True, False)
    assert info["reward_components"] == {"length_reward": pytest.approx(raw_reward), "overlong_penalty": penalty}
    assert "overlong_penalty" not in raw_info["reward_components"]  # the inner env's info is not touched
    assert np.array_equal(obs["input_ids"], obs2["input_ids"])


def test_sequence_env_penalty_factor_scales_and_zero_buffer_is_a_hard_cut(make_env):
    base = make_env(reward_fn=length_reward, max_new_tokens=T)
    action = response(base.lm, "12345678", eos=True)  # 9 tokens
    for buffer, factor, expected in ((6, 1.0, -0.5), (6, 0.0, 0.0), (3, 1.0, 0.0), (4, 3.0, -0.75), (0, 1.0, 0.0)):
        env = OverlongPenalty(base, overlong_buffer=buffer, penalty_factor=factor)
        env.reset(options={"problem_id": 0})
        _, reward, *_, info = env.step(action)
        assert info["reward_components"]["overlong_penalty"] == pytest.approx(expected), (buffer, factor)
        assert reward == pytest.approx(0.25 + 0.08 + expected), (buffer, factor)


def token_env(tiny_model_dir, **kwargs):
    params = {"model": str(tiny_model_dir), "max_new_tokens": T, "n_problems": 40, "device": "cpu",
              "max_prompt_length": 96, "reward_fn": length_reward}
    return llm_gym.TokenEnv(**(params | kwargs))


@pytest.mark.parametrize(("text", "eos", "length", "penalty"), [CASES[0], CASES[2], CASES[4]])
def test_token_env_only_the_last_step_changes(tiny_model_dir, text, eos, length, penalty):
    base = token_env(tiny_model_dir)
    env = OverlongPenalty(base, overlong_buffer=6, penalty_factor=2.0)
    tokens = response(base.lm, text, eos)[:length]

    def run(e):
        e.reset(options={"problem_id": 5})
        steps = []
        for token in tokens:
            _, reward, terminated, truncated, info = e.step(int(token))
            steps.append((reward, terminated, truncated, info))
            if terminated or truncated:
                break
        return steps

    raw, wrapped = run(base), run(env)
    assert len(raw) == len(wrapped) == length
    for (r0, te0, tr0, i0), (r1, te1, tr1, i1) in zip(raw[:-1], wrapped[:-1], strict=True):
        assert (r1, te1, tr1, i1) == (r0, te0, tr0, i0) == (0.0, False, False, i0)
        assert "reward_components" not in i1
    r0, te0, tr0, i0 = raw[-1]
    r1, te1, tr1, i1 = wrapped[-1]
    assert (te1, tr1) == (te0, tr0) == (eos, not eos)
    assert i1["response_length"] == length and i1["truncated_by_length"] == (not eos)
    assert r0 == pytest.approx(0.25 + 0.01 * len(text))
    assert r1 == pytest.approx(r0 + penalty, abs=1e-9)
    assert i1["reward_components"]["overlong_penalty"] == penalty


def test_default_buffer_is_twenty_percent_and_invalid_values_raise(make_env, tiny_model_dir):
    assert OverlongPenalty(make_env(max_new_tokens=12)).overlong_buffer == 2  # round(2.4)
    assert OverlongPenalty(make_env(max_new_tokens=8)).overlong_buffer == 2  # round(1.6)
    assert OverlongPenalty(token_env(tiny_model_dir, max_new_tokens=20)).overlong_buffer == 4
    env = make_env(max_new_tokens=12)
    for kwargs in ({"overlong_buffer": 13}, {"overlong_buffer": -1}, {"penalty_factor": -0.5}):
        with pytest.raises(ValueError, match="overlong_buffer|penalty_factor"):
            OverlongPenalty(env, **kwargs)
    assert OverlongPenalty(env, overlong_buffer=12).overlong_buffer == 12  # the whole budget is allowed


def test_composes_with_gym_make(tiny_model_dir):
    kwargs = {"model": str(tiny_model_dir), "max_new_tokens": T, "n_problems": 4, "device": "cpu",
              "reward_fn": length_reward}
    raw = gym.make("LLMMath-v0", **kwargs)
    env = OverlongPenalty(gym.make("LLMMath-v0", **kwargs))  # default buffer: round(0.2 * 12) = 2
    assert env.overlong_buffer == 2 and env.max_length == T
    action = response(env.unwrapped.lm, "1234567890", eos=True)  # 11 tokens: (10 - 11) / 2
    raw.reset(seed=0, options={"problem_id": 1})
    env.reset(seed=0, options={"problem_id": 1})
    _, raw_reward, *_ = raw.step(action)
    _, reward, terminated, _, info = env.step(action)
    assert terminated and info["response_length"] == 11
    assert reward == pytest.approx(raw_reward - 0.5)
    assert info["reward_components"]["overlong_penalty"] == -0.5
