"""Process supervision in the envs: step rewards in the sequence env's info, paid at their tokens by the token env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.monitor import Monitor

from llm_gym.envs import SequenceEnv, TokenEnv
from llm_gym.rewards import CombinedReward, RewardFunctionError, math_answer_reward
from llm_gym.rewards.arithmetic import arithmetic_step_reward
from llm_gym.tasks import Problem
from llm_gym.wrappers.process import ProcessReward

PROBLEMS = [Problem(id="demo/0", question="What is 3 + 4?", answer="7", solution="3 + 4 = 7")]
KWARGS = {"dataset": PROBLEMS, "max_new_tokens": 48, "max_prompt_length": None, "device": "cpu"}

# One token per character (tiny model): "3 + 4 = 7" is tokens 0-8 and its "\n" 9 (correct: 1.0),
# "7 * 2 = 15" 10-19 and "\n" 20 (wrong: 0.0), "7 - 0 = \boxed{7}" 21-37 and the EOS 38 (correct: 1.0).
TEXT = "3 + 4 = 7\n7 * 2 = 15\n7 - 0 = \\boxed{7}"
STEP_REWARDS = [(9, 1.0), (20, 0.0), (38, 1.0)]
OUTCOME = 1.0  # \boxed{7} is the right answer


@pytest.fixture
def make(tiny_model_dir):
    def _make(cls=SequenceEnv, **kwargs):
        return cls(model=str(tiny_model_dir), **(KWARGS | kwargs))

    return _make


def token_ids(env, text: str, eos: bool = True) -> list[int]:
    lm = env.unwrapped.lm
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    return ids + ([lm.eos_token_id] if eos else [])


def action(env, ids: list[int]) -> np.ndarray:
    """``(max_new_tokens,)``: the ids right-padded with the pad id (SequenceEnv's action format)."""
    lm = env.unwrapped.lm
    return np.array(ids + [lm.pad_token_id] * (env.unwrapped.max_new_tokens - len(ids)), dtype=np.int64)


def run_tokens(env, ids):
    env.reset(options={"problem_id": 0})
    return [env.step(t) for t in ids]


def test_sequence_env_reports_step_rewards_in_info_only(make):
    env = make(process_reward_fn=arithmetic_step_reward)
    env.reset(options={"problem_id": 0})
    ids = token_ids(env, TEXT)
    assert len(ids) == 39
    _, reward, terminated, _, info = env.step(action(env, ids))
    assert info["step_rewards"] == STEP_REWARDS
    assert reward == OUTCOME and terminated  # the scalar reward stays the outcome reward
    assert info["response_length"] == 39 and info["reward_components"] == {"accuracy": 1.0}


def test_without_a_scorer_there_are_no_step_rewards(make):
    env = make()
    env.reset(options={"problem_id": 0})
    assert env.step(action(env, token_ids(env, TEXT)))[4]["step_rewards"] == []
    assert env.process_rewards(np.array(token_ids(env, TEXT))) == []


def test_token_env_pays_each_step_reward_on_its_end_token(make):
    calls = []

    def recording_scorer(prompts, steps, answers, **fields):
        calls.append(list(steps[0]))
        return arithmetic_step_reward(prompts, steps, answers, **fields)

    env = make(TokenEnv, process_reward_fn=recording_scorer)
    ids = token_ids(env, TEXT)
    steps = run_tokens(env, ids)
    rewards = [s[1] for s in steps]
    expected = [0.0] * 39
    expected[9], expected[20], expected[38] = 1.0, 0.0, OUTCOME + 1.0
    assert rewards == expected
    info = steps[-1][4]
    assert info["step_rewards"] == STEP_REWARDS and steps[-1][2] is True
    assert sum(rewards) == OUTCOME + sum(r for _, r in info["step_rewards"]) == 3.0
    # scored only when a token completes a step (the two "\n"), then once at the end; mid-episode the
    # unfinished step is never shown to the scorer
    assert calls == [["3 + 4 = 7"], ["3 + 4 = 7", "7 * 2 = 15"], ["3 + 4 = 7", "7 * 2 = 15", "7 - 0 = \\boxed{7}"]]


def test_token_env_matches_the_sequence_env(make):
    seq, tok = make(process_reward_fn=arithmetic_step_reward), make(TokenEnv, process_reward_fn=arithmetic_step_reward)
    ids = token_ids(seq, TEXT)
    seq.reset(options={"problem_id": 0})
    _, seq_reward, *_, seq_info = seq.step(action(seq, ids))
    steps = run_tokens(tok, ids)
    tok_info = steps[-1][4]
    assert tok_info.pop("token_index") == 38 and tok_info == seq_info
    assert sum(s[1] for s in steps) == seq_reward + sum(r for _, r in seq_info["step_rewards"])


def test_truncated_response_scores_its_last_step_on_its_last_token(make):
    # no EOS within 17 tokens: "1 = 1" 0-4, "\n" 5, "2 = 2" 6-10, "\n" 11, "3 = 3" 12-16 (truncated there)
    seq, tok = (make(cls, max_new_tokens=17, process_reward_fn=arithmetic_step_reward) for cls in (SequenceEnv, TokenEnv))
    ids = token_ids(seq, "1 = 1\n2 = 2\n3 = 3", eos=False)
    seq.reset(options={"problem_id": 0})
    _, seq_reward, *_, seq_info = seq.step(action(seq, ids))
    assert seq_info["step_rewards"] == [(5, 1.0), (11, 1.0), (16, 1.0)] and seq_info["truncated_by_length"]
    assert seq_reward == 0.0  # last number 3, answer 7
    steps = run_tokens(tok, ids)
    assert [t for t, s in enumerate(steps) if s[1]] == [5, 11, 16] and steps[-1][3] is True
    assert steps[-1][4]["step_rewards"] == seq_info["step_rewards"]


def test_process_reward_wrapper_equals_the_constructor_argument(make):
    plain = make(process_reward_fn=arithmetic_step_reward)
    wrapped = Monitor(ProcessReward(make(), arithmetic_step_reward))
    for env in (plain, wrapped):
        env.reset(options={"problem_id": 0})
    ids = token_ids(plain, TEXT)
    expected = plain.step(action(plain, ids))
    got = wrapped.step(action(wrapped, ids))
    assert got[1] == expected[1] and got[4]["step_rewards"] == expected[4]["step_rewards"] == STEP_REWARDS
    # token level, inside another wrapper
    tok = ProcessReward(Monitor(make(TokenEnv)), arithmetic_step_reward, delimiter="\n")
    rewards = [s[1] for s in run_tokens(tok, ids)]
    assert [t for t, r in enumerate(rewards) if r] == [9, 38] and sum(rewards) == 3.0
    assert tok.unwrapped.process_reward_fn is arithmetic_step_reward


def test_step_delimiter(make):
    # "\n\n" ends a paragraph: the first two lines form one step (one of its "=" is wrong: 0.0), ending at
    # the second "\n" of "\n\n" (index 21); the last line ends on the EOS (index 39)
    env = make(process_reward_fn=arithmetic_step_reward, step_delimiter="\n\n")
    env.reset(options={"problem_id": 0})
    ids = token_ids(env, "3 + 4 = 7\n7 * 2 = 15\n\n7 - 0 = \\boxed{7}")
    assert env.step(action(env, ids))[4]["step_rewards"] == [(21, 0.0), (39, 1.0)]


def test_errors_name_the_cause(make):
    def wrong_length(prompts, steps, answers, **fields):
        return [[1.0]]

    env = make(process_reward_fn=wrong_length)
    env.reset(options={"problem_id": 0})
    with pytest.raises(RewardFunctionError, match="'wrong_length' returned 1 values for response 0, which has 3"):
        env.step(action(env, token_ids(env, TEXT)))
    with pytest.raises(TypeError, match="process_reward_fn must be a callable"):
        make(process_reward_fn="arithmetic")
    with pytest.raises(ValueError, match="step_delimiter must be a non-empty string"):
        make(process_reward_fn=arithmetic_step_reward, step_delimiter="")
    with pytest.raises(TypeError, match="ProcessReward needs an llm-gym env"):
        ProcessReward(gym.make("CartPole-v1"), arithmetic_step_reward)
    with pytest.raises(TypeError, match="scorer must be a callable"):
        ProcessReward(make(), None)
    with pytest.raises(RuntimeError, match="reset"):
        make(process_reward_fn=arithmetic_step_reward).process_rewards(np.array([5]))


def test_reward_timeout_reaches_the_combined_reward(make):
    assert make().reward.timeout is None
    assert make(reward_timeout=5.0).reward.timeout == 5.0
    with pytest.raises(ValueError, match="CombinedReward"):
        make(reward_fn=CombinedReward({"accuracy": math_answer_reward}), reward_timeout=5.0)
