"""Reward wrappers and TurnLimit on multi-turn episodes: scripted turns, rewards worked out by hand.

Every turn below is typed with the tiny model's character-level tokenizer, so a turn of ``n`` characters
plus EOS is ``n + 1`` tokens (``encode`` appends the EOS unless ``eos=False``).
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import test_multiturn_env  # tests/llm_gym is on sys.path under pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.monitor import Monitor

import llm_gym
from llm_gym.rewards.arithmetic import arithmetic_step_reward
from llm_gym.wrappers import (
    ClipReward,
    FormatReward,
    LengthPenalty,
    OverlongPenalty,
    ProcessReward,
    RewardFunction,
    RewardModel,
    ScaleReward,
    TurnLimit,
)

encode = test_multiturn_env.encode  # a turn's action: the text's ids + EOS, right-padded
tool_env, guess_env = test_multiturn_env.tool_env, test_multiturn_env.guess_env  # its fixtures, reused
CALC = "<calc>12*34</calc>"  # 18 characters + EOS = 19 tokens; the tool answers "12*34 = 408"


def char_count(prompts, responses, answers, **fields):
    """The response's length in characters: a text-dependent value that tells which turn was scored."""
    char_count.calls.append((list(prompts), list(responses), list(answers)))
    return [float(len(r)) for r in responses]


def guess_value(prompts, responses, answers, **fields):
    """The guessed integer itself, as a reward-model score."""
    return [float(r) for r in responses]


def run(env, texts, reset_options=None, eos=True):
    """Reset, then step one turn per text; returns the list of ``(reward, terminated, truncated, info)``."""
    env.reset(seed=0, options=reset_options)
    out = []
    for text in texts:
        _, reward, terminated, truncated, info = env.step(encode(env, text, eos=eos))
        out.append((reward, terminated, truncated, info))
    return out


# ------------------------------------------------------------------------------------ episode-end terms
def test_length_penalty_charges_the_episode_assistant_tokens_on_the_last_turn(guess_env):
    env = LengthPenalty(guess_env(low=1, high=10), coef=0.5)  # max_new_tokens 16: 0.5 per 16 tokens
    steps = run(env, ["5", "I say 9", "7"], {"problem_id": 6})  # secret 7; turns of 2, 8 and 2 tokens
    for reward, terminated, truncated, info in steps[:2]:
        assert (reward, terminated, truncated) == (0.0, False, False)
        assert "length_penalty" not in info["reward_components"]
    reward, terminated, _, info = steps[-1]
    assert terminated and info["assistant_token_count"] == 12
    assert reward == 1.0 - 0.5 * 12 / 16 == 0.625  # not the last turn's 2 tokens: -0.0625
    assert info["reward_components"] == {"accuracy": 1.0, "length_penalty": -0.375}
    assert info["episode_reward_components"] == {"accuracy": 1.0, "length_penalty": -0.375}


def test_overlong_penalty_sums_every_turn_against_max_new_tokens(tool_env):
    env = OverlongPenalty(tool_env(max_turns=3), overlong_buffer=8, penalty_factor=2.0)
    # max_new_tokens 24, buffer 8: free up to 16 tokens, then -2/8 per token, -2 at 24 tokens (a cut turn).
    steps = run(env, [CALC], {"problem_id": 0})
    env_cut = encode(env, "<calc>7-9</calc>" + "x" * 10, eos=False)  # 26 characters, cut at 24 tokens
    _, r2, *_, info2 = env.step(env_cut)
    _, r3, terminated, _, info3 = env.step(encode(env, "\\boxed{408}"))  # 11 characters + EOS = 12 tokens
    assert (steps[0][0], r2) == (0.0, 0.0) and "overlong_penalty" not in info2["reward_components"]
    assert info2["truncated_by_length"] and terminated
    assert [end - start for start, end in info3["turn_spans"]] == [19, 24, 12]
    penalty = -2.0 * (19 - 16) / 8 - 2.0 + 0.0  # -0.75 - 2 - 0: the last turn alone would pay 0
    assert r3 == 1.0 + penalty == -1.75
    assert info3["reward_components"] == {"accuracy": 1.0, "overlong_penalty": -2.75}
    assert info3["episode_reward_components"] == {"tool_cost": 0.0, "accuracy": 1.0, "overlong_penalty": -2.75}


def test_reward_function_and_format_score_the_final_turn_once(tool_env):
    char_count.calls = []
    env = FormatReward(RewardFunction(tool_env(), char_count, weight=0.25), weight=0.5)
    [first] = run(env, [CALC], {"problem_id": 0})
    assert first[:3] == (0.0, False, False) and char_count.calls == []  # no call on the tool turn
    _, reward, terminated, _, info = env.step(encode(env, "So \\boxed{408}"))
    assert char_count.calls == [([info["prompt_text"]], ["So \\boxed{408}"], ["408"])]
    assert terminated and reward == 1.0 + 0.25 * 14 + 0.5 == 5.0  # accuracy + 14 characters + \boxed{}
    assert info["reward_components"] == {"accuracy": 1.0, "char_count": 3.5, "format": 0.5}
    assert info["episode_reward_components"] == {"tool_cost": 0.0, "accuracy": 1.0, "char_count": 3.5,
                                                 "format": 0.5}


def test_truncated_episode_scores_its_last_turn_and_replace_keeps_earlier_rewards(guess_env):
    env = RewardModel(FormatReward(guess_env(low=1, high=10, max_turns=2), weight=0.25, pattern=r"^\d+$"),
                      guess_value, weight=0.5)  # replace=True
    (r1, *_), (r2, terminated, truncated, info) = run(env, ["3", "9"], {"problem_id": 6})  # secret 7
    assert r1 == 0.0 and (terminated, truncated) == (False, True) and info["truncated_by_turns"]
    assert r2 == 0.5 * 9 == 4.5  # the format term (0.25) is replaced by the model's score of the last guess
    assert info["accuracy"] == 0.0 and info["reward_components"] == {"format": 0.25, "reward_model": 4.5}
    assert info["episode_reward_components"] == {"format": 0.25, "reward_model": 4.5}


def test_episode_components_sum_to_the_return_and_names_stay_unique(tool_env):
    env = FormatReward(LengthPenalty(tool_env(tool_call_cost=0.5), coef=0.25), weight=1.0, name="tool_cost")
    steps = run(env, [CALC, "\\boxed{408}"], {"problem_id": 0})  # 19 + 12 = 31 assistant tokens
    assert steps[0][0] == -0.5
    reward, _, _, info = steps[1]
    # "tool_cost" is not in the last step's components but is in the episode's: the term gets "tool_cost_2".
    assert info["reward_components"] == {"accuracy": 1.0, "length_penalty": -0.25 * 31 / 24, "tool_cost_2": 1.0}
    assert info["episode_reward_components"] == {"tool_cost": -0.5, "accuracy": 1.0,
                                                 "length_penalty": -0.25 * 31 / 24, "tool_cost_2": 1.0}
    assert reward == pytest.approx(1.0 - 0.25 * 31 / 24 + 1.0)
    assert sum(r for r, *_ in steps) == pytest.approx(sum(info["episode_reward_components"].values()))


def test_scale_and_clip_act_on_every_turn(tool_env):
    env = ClipReward(ScaleReward(tool_env(tool_call_cost=0.75, max_new_tokens=40), 2.0), -1.0, 1.0)
    steps = run(env, ["<calc>2+3</calc><calc>4*5</calc>", "\\boxed{408}"], {"problem_id": 0})
    assert [r for r, *_ in steps] == [-1.0, 1.0]  # 2 * -1.5 = -3 clipped; 2 * 1 = 2 clipped
    assert steps[0][3]["reward_components"] == {"tool_cost": -1.5}  # info keeps the unscaled terms
    assert steps[1][3]["episode_reward_components"] == {"tool_cost": -1.5, "accuracy": 1.0}


def test_process_reward_rejects_multiturn_envs(guess_env):
    with pytest.raises(ValueError, match=r"ProcessReward: GuessNumberEnv is a multi-turn env.*RewardFunction"):
        ProcessReward(guess_env(), arithmetic_step_reward)


def test_multiturn_terms_are_scored_once_per_vector_step(guess_env):
    calls = []

    def guess_length(prompts, responses, answers, **fields):
        calls.append(list(responses))
        return [float(len(r)) for r in responses]

    venv = llm_gym.GroupVecEnv([lambda: RewardFunction(LengthPenalty(guess_env(low=1, high=10), coef=0.5),
                                                       guess_length, weight=0.1) for _ in range(3)])
    assert venv.groups == [[0, 1, 2]] and len(venv.scorers) == 1  # equal sub-envs: one scorer
    venv.reset_groups([6, 6, 6])  # secret 7
    step = [encode(venv.envs[0], t) for t in ("3", "7", "77")]
    _, rewards, dones, _ = venv.step(np.stack(step))
    assert calls == [["7"]] and dones.tolist() == [False, True, False]  # no call for the rows that go on
    assert rewards[1] == np.float32(1 - 0.5 * 2 / 16 + 0.1 * 1)
    _, rewards, dones, _ = venv.step(np.stack([encode(venv.envs[0], "7")] * 3))
    assert calls == [["7"], ["7", "7"]] and dones.tolist() == [True, False, True]  # both endings in one call
    # row 0: "3" + EOS, "7" + EOS = 4 assistant tokens; row 2: "77" + EOS, "7" + EOS = 5; row 1 waits
    assert rewards.tolist() == [np.float32(1 - 0.5 * 4 / 16 + 0.1), 0.0, np.float32(1 - 0.5 * 5 / 16 + 0.1)]


def test_wrapped_multiturn_envs_in_make_group_vec_env_with_monitor(tiny_model_dir):
    spec = dataclasses.replace(gym.spec("LLMGuessNumber-v0"), additional_wrappers=(
        TurnLimit.wrapper_spec(max_turns=3), LengthPenalty.wrapper_spec(coef=0.5),
        FormatReward.wrapper_spec(weight=0.25, pattern=r"^\d+$"), ScaleReward.wrapper_spec(scale=2.0)))
    venv = llm_gym.make_group_vec_env(spec, 2, monitor=True, model=str(tiny_model_dir), device="cpu",
                                      low=1, high=10, max_new_tokens=16, max_prompt_length=None)
    assert isinstance(venv.envs[1], ScaleReward)  # Monitor's statistics are kept by the vector env
    assert venv.env_is_wrapped(Monitor) == [True, True] and venv.stats is not None
    venv.reset_groups([4, 6])  # secrets 5 and 7
    waves = [("3", "3"), ("5", "9"), ("5", "8")]  # env 0: higher, correct; env 1: higher, lower, lower
    returns, results = np.zeros(2), []
    for texts in waves:
        _, rewards, dones, infos = venv.step(np.stack([encode(venv.envs[0], t) for t in texts]))
        returns += rewards
        results.append((rewards.tolist(), dones.tolist(), infos))
    assert [r for r, _, _ in results] == [[0.0, 0.0], [2.25, 0.0], [0.0, 0.125]]
    # env 0 at turn 2: 2 * (1 - 0.5 * 4 / 16 + 0.25); env 1 cut by TurnLimit at turn 3: 2 * (-0.5 * 6 / 16 + 0.25)
    assert [d for _, d, _ in results] == [[False, False], [True, False], [False, True]]
    first, last = results[1][2][0], results[2][2][1]
    assert (first["episode"]["r"], first["episode"]["l"]) == (2.25, 2) == (returns[0], 2)
    assert (last["episode"]["r"], last["episode"]["l"]) == (0.125, 3) == (returns[1], 3)
    assert last["truncated_by_turns"] and last["TimeLimit.truncated"] and last["accuracy"] == 0.0
    assert last["episode_reward_components"] == {"length_penalty": -0.1875, "format": 0.25}
    assert first["episode_reward_components"] == {"accuracy": 1.0, "length_penalty": -0.125, "format": 0.25}
    assert results[2][2][0] == {"waiting": True}


# ------------------------------------------------------------------------------------ TurnLimit
def test_turn_limit_truncates_like_the_envs_own_max_turns(tool_env):
    limited = TurnLimit(tool_env(tool_call_cost=0.25, max_turns=4), max_turns=2)
    reference = tool_env(tool_call_cost=0.25, max_turns=2)
    texts = [CALC, "<calc>2+2</calc>"]
    got, want = run(limited, texts, {"problem_id": 0}), run(reference, texts, {"problem_id": 0})
    assert got[0][:3] == want[0][:3] == (-0.25, False, False) and "accuracy" not in got[0][3]
    reward, terminated, truncated, info = got[1]
    assert (reward, terminated, truncated) == want[1][:3] == (-0.25, False, True)
    assert info["truncated_by_turns"] and not info["truncated_by_context"] and info["accuracy"] == 0.0
    assert info["episode_reward_components"] == want[1][3]["episode_reward_components"] == {"tool_cost": -0.5}
    assert info["env_message"] == "2+2 = 4" and want[1][3]["env_message"] is None  # the env did not know
    with pytest.raises(RuntimeError, match="truncated after 2 turns; call reset"):
        limited.step(encode(limited, "1"))
    (r1, *flags, info), = run(limited, [CALC], {"problem_id": 0})  # reset starts the count again
    assert (r1, flags, info["turns"]) == (-0.25, [False, False], 1)


def test_turn_limit_keeps_a_final_answer_on_the_limit_terminated(guess_env):
    env = TurnLimit(guess_env(low=1, high=10), max_turns=2)
    _, (reward, terminated, truncated, info) = run(env, ["3", "7"], {"problem_id": 6})
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["accuracy"] == 1.0 and not info["truncated_by_turns"]


@pytest.mark.parametrize("limit", [2, 5])
def test_turn_limit_at_or_above_the_envs_max_turns_changes_nothing(tool_env, limit):
    texts = [CALC, "<calc>2+2</calc>"]
    env, reference = TurnLimit(tool_env(max_turns=2), limit), tool_env(max_turns=2)
    assert env.max_turns == 2
    for env_ in (env, reference):
        env_.reset(options={"problem_id": 0})
    for text in texts:
        a, b = env.step(encode(env, text)), reference.step(encode(reference, text))
        assert all(np.array_equal(a[0][k], b[0][k]) for k in b[0]) and a[1:4] == b[1:4]
        assert a[4].keys() == b[4].keys() and all(
            np.array_equal(a[4][k], b[4][k]) if isinstance(b[4][k], np.ndarray) else a[4][k] == b[4][k]
            for k in b[4])
    assert a[3] is True  # the env's own truncation, passed through


def test_turn_limit_arguments_are_checked(guess_env, make_env):
    with pytest.raises(ValueError, match="TurnLimit counts the assistant turns.*got SequenceEnv.*TimeLimit"):
        TurnLimit(make_env(n_problems=2), 2)
    env = guess_env()
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=f"TurnLimit: max_turns must be an integer >= 1.*got {bad!r}"):
            TurnLimit(env, bad)
    for inner in (LengthPenalty(env, coef=0.1), Monitor(env)):
        with pytest.raises(ValueError, match=f"TurnLimit must sit inside {type(inner).__name__}"):
            TurnLimit(inner, 2)


@pytest.mark.filterwarnings("ignore:.*(different from the unwrapped|symmetric and normalized)")  # notices
def test_turn_limit_passes_both_checkers_and_records_its_spec(tiny_model_dir):
    kwargs = {"model": str(tiny_model_dir), "device": "cpu", "max_prompt_length": None, "max_turns": 4}
    env = TurnLimit(gym.make("LLMGuessNumber-v0", **kwargs), max_turns=2)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(LengthPenalty(TurnLimit(gym.make("LLMGuessNumber-v0", **kwargs), 2), coef=0.1), warn=False)
    assert env.spec.max_episode_steps is None and env.spec.additional_wrappers[-1].kwargs == {"max_turns": 2}
    rebuilt = gym.make(env.spec)
    assert isinstance(rebuilt, TurnLimit) and rebuilt.max_turns == 2
    env.reset(options={"problem_id": 0})
    assert not env.step(encode(env, "50"))[3] and env.step(encode(env, "40"))[3]  # cut at turn 2 of 4
