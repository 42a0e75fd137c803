"""from_trl: reward functions written to TRL GRPOTrainer's documented signature score in llm-gym envs."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from llm_gym.rewards import RewardFunctionError, call_reward_fn, from_trl, reward_fn_name

T = 20


def reward_len(completions, **kwargs):
    """TRL docs, "Using a custom reward function", example 1.1 (reward longer completions, in characters)."""
    return [-abs(20 - len(completion)) for completion in completions]


def accuracy(completions, answer, **kwargs):
    """Reads the ``answer`` dataset column, as a TRL function on GSM8K-style data does."""
    return [1.0 if completion.endswith(f"\\boxed{{{a}}}") else 0.0 for completion, a in zip(completions, answer, strict=True)]


def solution_reward(prompts, completions, completion_ids, solution, problem_id, trainer_state, **kwargs):
    """Every named TRL argument; ``None`` (no opinion) for a completion without ``=``."""
    assert trainer_state is None or trainer_state.global_step == 0  # None on a direct call; the env's state
    assert callable(kwargs["log_extra"]) and callable(kwargs["log_metric"])
    kwargs["log_metric"]("seen", len(completions))  # a no-op outside TRL
    return [None if "=" not in c else float(c.split("=")[-1].strip() in s) + 0.01 * len(p) + 0.001 * len(pid)
            for p, c, s, pid in zip(prompts, completions, solution, problem_id, strict=True)]


def action(lm, text: str) -> np.ndarray:
    ids = lm.tokenizer.convert_tokens_to_ids(list(text)) + [lm.eos_token_id]
    return np.array(ids + [lm.pad_token_id] * (T - len(ids)), dtype=np.int64)


def test_the_trl_call_gets_completions_columns_and_trainer_arguments(tiny_lm):
    seen = {}

    def spy(prompts, completions, completion_ids, **kwargs):
        seen.update(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        return [0.5] * len(completions)

    fields = {"problem_ids": ["a/1", "a/2"], "solutions": ["1 + 2 = 3", None], "test_cases": [[1], [2]]}
    out = from_trl(spy, tokenizer=tiny_lm)(["p1", "p2"], ["ab", "c"], ["3", "4"], **fields)
    assert out == [0.5, 0.5]
    assert (seen["prompts"], seen["completions"], seen["answer"]) == (["p1", "p2"], ["ab", "c"], ["3", "4"])
    assert seen["completion_ids"] == [tiny_lm.tokenizer.convert_tokens_to_ids(list(t)) for t in ("ab", "c")]
    assert (seen["solution"], seen["problem_id"], seen["test_cases"]) == (["1 + 2 = 3", None], ["a/1", "a/2"],
                                                                          [[1], [2]])
    assert seen["trainer_state"] is None and seen["log_extra"]("col", [1]) is None
    assert "solutions" not in seen and "problem_ids" not in seen
    from_trl(spy)(["p"], ["x"], ["1"])
    assert seen["completion_ids"] is None  # no tokenizer


def test_names_are_kept_for_logging():
    assert reward_fn_name(from_trl(reward_len)) == "reward_len"
    assert reward_fn_name(from_trl(reward_len, name="length")) == "length"
    assert from_trl(reward_len).__wrapped__ is reward_len
    with pytest.raises(TypeError, match="from_trl: fn must be a TRL reward function"):
        from_trl("reward_len")
    with pytest.raises(TypeError, match="tokenizer must be a Hugging Face tokenizer"):
        from_trl(reward_len, tokenizer=3)


def test_as_an_env_reward_through_score_batch(make_env):
    env = make_env(max_new_tokens=T, reward_fn={"len": from_trl(reward_len), "acc": from_trl(accuracy),
                                               "sol": from_trl(solution_reward)})
    problems = [0, 3, 5]
    texts = [f"x=\\boxed{{{env.problems[0].answer}}}", "so 17", f"8 + 20 = {env.problems[5].answer}"]
    rewards, infos = env.score_batch(problems, np.stack([action(env.lm, t) for t in texts]))
    components = [i["reward_components"] for i in infos]
    assert [c["len"] for c in components] == [-abs(20 - len(t)) for t in texts] == [-8.0, -15.0, -9.0]
    assert [c["acc"] for c in components] == [1.0, 0.0, 0.0]
    p = env.problems
    assert components[2]["sol"] == float(p[5].answer in p[5].solution) + 0.01 * len(env.prompts[5]) + 0.001 * len(
        p[5].id) and components[2]["sol"] > 1
    assert components[1]["sol"] == 0.0  # None: no opinion
    assert rewards.tolist() == [sum(c.values()) for c in components]
    for r, k in enumerate(problems):
        env.reset(options={"problem_id": k})
        assert env.score_response(action(env.lm, texts[r])) == (rewards[r], infos[r])


def test_a_trl_library_reward_that_reads_completion_ids(make_env):
    trl_rewards = pytest.importorskip("trl.rewards")
    punish = trl_rewards.get_soft_overlong_punishment(max_completion_len=10, soft_punish_cache=4)
    texts = ["abc", "abcdefgh", "abcdefghijklmno"]  # 3, 8 and 15 characters
    env = make_env(max_new_tokens=T, reward_fn=from_trl(punish))  # no tokenizer: the sampled ids, EOS included
    rewards, _ = env.score_batch([0, 1, 2], np.stack([action(env.lm, t) for t in texts]))
    assert rewards.tolist() == [0.0, (6 - 9) / 4, -1.0]  # 4, 9 and 16 tokens
    env = make_env(max_new_tokens=T, reward_fn=from_trl(punish, tokenizer=env.lm))
    rewards, infos = env.score_batch([0, 1, 2], np.stack([action(env.lm, t) for t in texts]))
    assert rewards.tolist() == [0.0, (6 - 8) / 4, -1.0]  # 3, 8 and 15 tokens once re-encoded (no EOS)
    assert set(infos[0]["reward_components"]) == {"soft_overlong_punishment_reward"}


def test_async_and_invalid_trl_rewards():
    async def slow_len(completions, **kwargs):
        await asyncio.sleep(0)
        return [float(len(c)) for c in completions]

    assert call_reward_fn(from_trl(slow_len), ["p", "p"], ["ab", "abc"], ["", ""]).values.tolist() == [2.0, 3.0]
    nan = from_trl(lambda completions, **kwargs: [float("nan")] * len(completions), name="nan_reward")
    with pytest.raises(RewardFunctionError, match="'nan_reward' returned a non-finite value nan"):
        call_reward_fn(nan, ["p"], ["a"], [""])
