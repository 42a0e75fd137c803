"""Batched scoring is the structure: ResponseScorer and the vector envs call each reward function once per
batch and give exactly what single-env steps give (rewards, infos, Monitor's episode statistics)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import TransformReward
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import llm_gym.envs.scoring as env_scoring
from llm_gym import GroupVecEnv, ResponseScorer, SequenceVecEnv, make_group_vec_env
from llm_gym.envs import TurnResult, sequence_vec_env_like
from llm_gym.rewards import RewardFunctionError, arithmetic_step_reward, boxed_format_reward
from llm_gym.scoring import BatchedRewardWrapper, compose, layer_kind
from llm_gym.wrappers import (
    ClipReward,
    EpisodeEndTerm,
    FormatReward,
    LengthPenalty,
    OverlongPenalty,
    ProcessReward,
    RewardFunction,
    ScaleReward,
)

T = 20  # max_new_tokens of every env below
PROBLEMS = [3, 0, 7, 3, 1, 5, 2, 3]  # N = 8 rows; problem 3 three times (a group)


class Counting:
    """A reward function that records the batch size of every call; depends on every input it gets."""

    def __init__(self, name: str = "counting"):
        self.__name__, self.calls = name, []

    def __call__(self, prompts, responses, answers, problem_ids, solutions, **fields):
        self.calls.append(len(responses))
        return [0.1 * len(r) + 0.01 * len(a) + 0.5 * ("7" in r) + 0.001 * len(pid) + 0.003 * len(p) + (s is None)
                for p, r, a, pid, s in zip(prompts, responses, answers, problem_ids, solutions, strict=True)]


class CountingSteps:
    """A process reward function that records the batch size of every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, steps, answers, **fields):
        self.calls.append(len(steps))
        return [[0.25 * len(s) if "=" in s else None for s in row] for row in steps]


class AddQuarter(gym.Wrapper):
    """A user's wrapper that overrides step: no batched form."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward + 0.25, terminated, truncated, info


def action(lm, text: str, eos: bool = True) -> np.ndarray:
    """A ``(T,)`` sequence action: the characters of ``text``, EOS if asked, right-padded with the pad id."""
    ids = lm.tokenizer.convert_tokens_to_ids(list(text)) + ([lm.eos_token_id] if eos else [])
    assert len(ids) <= T and lm.tokenizer.unk_token_id not in ids
    return np.array(ids + [lm.pad_token_id] * (T - len(ids)), dtype=np.int64)


def rollout_ids(env, problem_ids=PROBLEMS) -> np.ndarray:
    """``(N, T)`` actions: right and wrong answers, several steps, one truncated row (no EOS)."""
    rows = []
    for r, k in enumerate(problem_ids):
        answer = env.unwrapped.problems[k].answer
        text, eos = [(f"1+1=2\n\\boxed{{{answer}}}", True), ("3+4=8\nso 7", True), (rf"\boxed{{{answer}}}", True),
                     ("2=2\n" + "x" * (T - 4), False), ("7", True), ("5+5=10\n6\n7", True)][r % 6]
        rows.append(action(env.unwrapped.lm, text, eos))
    return np.stack(rows)


def step_rows(vec_env, problem_ids, ids):
    """Step the rows as the algorithm does: reset each chunk of num_envs rows, then step it."""
    n, rewards, infos = vec_env.num_envs, [], []
    for lo in range(0, len(problem_ids), n):
        vec_env.set_options([{"problem_id": int(k)} for k in problem_ids[lo:lo + n]])
        vec_env.reset()
        _, step_rewards, dones, step_infos = vec_env.step(ids[lo:lo + n])
        assert dones.all()
        rewards += step_rewards.tolist()
        infos += list(step_infos)
    return np.array(rewards), infos


def comparable(info: dict) -> dict:
    """The info without the terminal observation (arrays) and Monitor's wall time."""
    out = {k: v for k, v in info.items() if k != "terminal_observation"}
    if "episode" in out:
        out["episode"] = {k: v for k, v in out["episode"].items() if k != "t"}
    return out


def full_stack(make_env, counters):
    """Every built-in reward layer on a sequence env: env reward dict, process fn, terms, transforms."""
    env = make_env(max_new_tokens=T, reward_fn={"a": counters["a"], "b": boxed_format_reward},
                   process_reward_fn=counters["steps"])
    env = RewardFunction(env, counters["wrapper"], weight=0.5)
    env = LengthPenalty(ScaleReward(FormatReward(env, weight=0.5), -2.0), coef=0.3)
    return ClipReward(OverlongPenalty(env, overlong_buffer=4), -3.0, 3.0)


def counters():
    return {"a": Counting("a"), "wrapper": Counting("wrapper"), "steps": CountingSteps()}


# ----------------------------------------------------------------------------- the base env's batch scoring
@pytest.mark.parametrize("config", ["default", "process", "format", "reward_fn_dict"])
def test_score_batch_rows_equal_score_response(make_env, config):
    kwargs = {"default": {}, "process": {"process_reward_fn": arithmetic_step_reward},
              "format": {"format_weight": 0.5},
              "reward_fn_dict": {"reward_fn": {"a": Counting("a"), "b": boxed_format_reward}}}[config]
    env = make_env(max_new_tokens=T, **kwargs)
    ids = rollout_ids(env)
    rewards, infos = env.score_batch(PROBLEMS, ids)  # before any reset: a pure function
    assert rewards.shape == (8,) and rewards.dtype == np.float64 and len(infos) == 8
    env.reset(options={"problem_id": 9})
    assert env.score_batch(PROBLEMS, ids)[1] == infos and env.problem_id == 9  # episode untouched
    for r, k in enumerate(PROBLEMS):
        env.reset(options={"problem_id": k})
        _, reward, terminated, truncated, info = env.step(ids[r])
        assert (reward, terminated, truncated) == (rewards[r], True, False) and info == infos[r]
    assert [i["accuracy"] for i in infos] == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert [i["truncated_by_length"] for i in infos] == [False, False, False, True, False, False, False, False]
    if config == "process":
        assert infos[0]["step_rewards"] == [(5, 1.0)] and infos[1]["step_rewards"] == [(5, 0.0)]


def test_score_batch_calls_each_function_once(make_env, monkeypatch):
    calls = []

    def counted_math(prompts, responses, answers, **fields):
        calls.append(len(responses))
        return math_answer_reward(prompts, responses, answers)

    math_answer_reward = env_scoring.math_answer_reward
    monkeypatch.setattr(env_scoring, "math_answer_reward", counted_math)  # the accuracy fallback
    fn, steps = Counting(), CountingSteps()
    env = make_env(max_new_tokens=T, reward_fn=fn, process_reward_fn=steps)
    ids = rollout_ids(env)
    ids[4] = action(env.lm, "", eos=True)  # a response with no step is not passed to the process function
    _, infos = env.score_batch(PROBLEMS, ids)
    assert (fn.calls, steps.calls, calls) == ([8], [7], [8])
    assert infos[4]["step_rewards"] == [] and infos[4]["response_text"] == ""
    assert env.score_batch([], np.zeros((0, T), dtype=np.int64)) == (pytest.approx(np.zeros(0)), [])
    assert fn.calls == [8]  # an empty batch calls nothing
    with pytest.raises(ValueError, match="problem_id=40 is outside 0..39"):
        env.score_batch([40], ids[:1])
    with pytest.raises(ValueError, match="needs \\(n, T\\) response ids"):
        env.score_batch([0, 1], ids[:1])


# ----------------------------------------------------------------------------- ResponseScorer
def test_response_scorer_is_the_stack_with_one_call_per_function(make_env):
    batched, single = counters(), counters()
    scorer = ResponseScorer.from_env(full_stack(make_env, batched))
    stack = full_stack(make_env, single)
    ids = rollout_ids(stack)
    scored = scorer.score_batch(PROBLEMS, ids)
    assert batched["a"].calls == batched["wrapper"].calls == [8] and batched["steps"].calls == [8]
    for r, k in enumerate(PROBLEMS):
        stack.reset(options={"problem_id": k})
        _, reward, _, _, info = stack.step(ids[r])
        assert reward == scored.rewards[r] and info == scored.infos[r]  # bit-identical
        assert scored.components[r] == info["reward_components"]
    assert single["a"].calls == single["wrapper"].calls == [1] * 8
    c, length = scored.components[0], scored.infos[0]["response_length"]
    assert set(c) == {"a", "b", "wrapper", "format", "length_penalty", "overlong_penalty"}
    assert c["length_penalty"] == -0.3 * length / T and c["overlong_penalty"] == min(0.0, (16 - length) / 4)
    want = -2.0 * (c["a"] + c["b"] + c["wrapper"] + c["format"]) + c["length_penalty"] + c["overlong_penalty"]
    assert scored.rewards[0] == pytest.approx(np.clip(want, -3.0, 3.0))
    assert scored.infos[3]["reward_components"]["overlong_penalty"] == -1.0  # 20 tokens, no EOS


def test_vector_envs_step_like_single_envs(make_env, tiny_model_dir):
    """SequenceVecEnv (one stack, 8 rows) and GroupVecEnv (8 sub-envs): one call per vector step."""
    seq, group, plain = counters(), counters(), counters()
    seq_vec = SequenceVecEnv(full_stack(make_env, seq), n_envs=8)
    group_vec = GroupVecEnv([lambda: full_stack(make_env, group) for _ in range(8)], monitor=True)
    reference = DummyVecEnv([lambda: Monitor(full_stack(make_env, plain))])
    ids = rollout_ids(seq_vec.envs[0])
    ref_rewards, ref_infos = step_rows(reference, PROBLEMS, ids)
    for vec_env, count in ((seq_vec, seq), (group_vec, group)):
        rewards, infos = step_rows(vec_env, PROBLEMS, ids)
        assert count["a"].calls == count["wrapper"].calls == count["steps"].calls == [8]
        np.testing.assert_array_equal(rewards, ref_rewards)
        assert [comparable(i) for i in infos] == [comparable(i) for i in ref_infos]
        assert vec_env.env_is_wrapped(Monitor) == [True] * 8
    assert plain["a"].calls == [1] * 8
    assert len(group_vec.scorers) == 1 and seq_vec.stats.episode_lengths == [1] * 8


def test_sequence_vec_env_resets_rows_like_dummy_vec_env(make_env):
    env = make_env(max_new_tokens=T)
    vec_env = SequenceVecEnv(env, n_envs=3)
    with pytest.raises(RuntimeError, match="Call reset"):
        vec_env.step(np.zeros((3, T), dtype=np.int64))
    first = vec_env.reset_groups([5, 5, 2])
    assert vec_env.problem_ids.tolist() == [5, 5, 2] and [i["problem_id"] for i in vec_env.reset_infos] == [5, 5, 2]
    answer = env.problems[5].answer
    ids = np.stack([action(env.lm, rf"\boxed{{{answer}}}"), action(env.lm, "no"), action(env.lm, "no")])
    obs, rewards, dones, infos = vec_env.step(ids)
    assert rewards.tolist() == [1.0, 0.0, 0.0] and dones.all()
    assert [i["episode"]["r"] for i in infos] == [1.0, 0.0, 0.0] and [i["episode"]["l"] for i in infos] == [1] * 3
    np.testing.assert_array_equal(infos[2]["terminal_observation"]["input_ids"], first["input_ids"][2])
    assert vec_env.problem_ids.tolist() == [i["problem_id"] for i in vec_env.reset_infos]  # reset automatically
    prompts, _ = env.lm.encode_prompts([env.prompts[k] for k in vec_env.problem_ids], env.max_prompt_length)
    np.testing.assert_array_equal(obs["input_ids"], prompts.numpy())  # the new episodes' prompts
    vec_env.step(ids)  # rows are running again: no reset needed
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vec_env.step(np.full((3, T), env.lm.vocab_size))
    with pytest.raises(ValueError, match="serves one-step episodes of a SequenceEnv"):
        SequenceVecEnv(gym.make("LLMMathToken-v0", model=env.lm, max_prompt_length=96, max_new_tokens=4), 2)


def test_token_vec_env_scores_the_endings_of_a_step_in_one_call(tiny_model_dir):
    """Token level: one call per vector step on which episodes end (process: also on completed steps)."""
    batched, single = counters(), counters()
    kwargs = {"model": str(tiny_model_dir), "device": "cpu", "n_problems": 40, "max_new_tokens": 6,
              "max_prompt_length": 96}

    def stack(c):
        env = gym.make("LLMMathToken-v0", reward_fn={"a": c["a"]}, process_reward_fn=c["steps"], **kwargs)
        return ScaleReward(RewardFunction(LengthPenalty(env, coef=0.5), c["wrapper"]), 2.0)

    vec_env = GroupVecEnv([lambda: stack(batched) for _ in range(3)], monitor=True)
    lm = vec_env.get_attr("lm")[0]
    tok = lm.tokenizer.convert_tokens_to_ids
    eos, pad = lm.eos_token_id, lm.pad_token_id
    rows = [[tok("1"), tok("="), tok("1"), tok("\n"), eos], [tok("2"), eos], [tok("3"), tok("\n"), tok("4"), eos]]
    vec_env.reset_groups([4, 4, 9])
    got = [[], [], []]
    for t in range(5):
        _, rewards, dones, infos = vec_env.step(np.array([r[t] if t < len(r) else pad for r in rows]))
        for i in range(3):
            if "waiting" not in infos[i]:
                got[i].append((float(rewards[i]), bool(dones[i]), comparable(infos[i])))
    # endings on steps 1 (row 1), 3 (row 2) and 4 (row 0); steps completed at t = 1 (row 2) and 3 (row 0)
    assert batched["a"].calls == [1, 1, 1] and batched["wrapper"].calls == [1, 1, 1]
    assert batched["steps"].calls == [2, 2, 1]  # t=1: row 1 ends + row 2's step; t=3: row 2 ends + row 0's step
    for i, (k, row) in enumerate(zip([4, 4, 9], rows, strict=True)):
        env = stack(single)
        env.reset(options={"problem_id": k})
        want = []
        for token in row:
            _, reward, terminated, truncated, info = env.step(token)
            want.append((float(np.float32(reward)), terminated or truncated, comparable(info)))
        assert [g[:2] for g in got[i]] == [w[:2] for w in want]
        assert [{k: v for k, v in g[2].items() if k not in ("episode", "TimeLimit.truncated")} for g in got[i]] == [
            w[2] for w in want]
    assert got[0][-1][2]["episode"]["l"] == 5 and got[1][-1][2]["episode"]["l"] == 2


def test_multiturn_final_answers_are_scored_once_per_vector_step(tiny_model_dir):
    import test_multiturn_env as mt  # tests/llm_gym is on sys.path under pytest

    fn = Counting("a")
    kwargs = {"model": str(tiny_model_dir), "device": "cpu", "max_new_tokens": 24, "dataset": [mt.PROBLEM] * 1,
              "max_prompt_length": None, "max_message_tokens": 64, "reward_fn": {"a": fn, "b": boxed_format_reward}}
    vec_env = make_group_vec_env("LLMToolMath-v0", 3, **kwargs)
    vec_env.reset_groups([0, 0, 0])
    turns = [mt.encode(vec_env.envs[0], t) for t in ("\\boxed{408}", "<calc>12*34</calc>", "\\boxed{408}")]
    _, rewards, dones, infos = vec_env.step(np.stack(turns))
    assert fn.calls == [2] and dones.tolist() == [True, False, True]  # both final answers in one call
    assert infos[0]["reward_components"]["b"] == 1.0 and infos[0]["accuracy"] == 1.0
    _, rewards, dones, infos = vec_env.step(np.stack([turns[0]] * 3))  # rows 0 and 2 wait
    assert fn.calls == [2, 1] and dones.tolist() == [False, True, False] and infos[1]["accuracy"] == 1.0
    with pytest.raises(ValueError, match="score_answer=True\\) is for a final turn"):
        TurnResult("a message", score_answer=True)


# ----------------------------------------------------------------------------- layers without batched form
def test_an_unbatched_layer_is_stepped_per_row_with_a_warning(make_env):
    inner, outer, ref_inner, ref_outer = Counting("i"), Counting("o"), Counting("i"), Counting("o")

    class UserWrapper(AddQuarter):  # a class of its own: warned once, here
        pass

    def stack(i, o):
        return ClipReward(RewardFunction(UserWrapper(make_env(max_new_tokens=T, reward_fn=i)), o), -9.0, 9.0)

    with pytest.warns(UserWarning, match="UserWrapper has no batched form, so a vector env steps it once per"):
        vec_env = GroupVecEnv([lambda: stack(inner, outer) for _ in range(4)])
    pipeline = compose(vec_env.envs[0])
    assert type(pipeline.core) is UserWrapper and [k for k, _ in pipeline.layers] == ["batched", "batched"]
    assert sequence_vec_env_like(stack(inner, outer), 4) is None  # the algorithm keeps the single env then
    reference = DummyVecEnv([lambda: stack(ref_inner, ref_outer)])
    ids = rollout_ids(vec_env.envs[0], PROBLEMS[:4])
    rewards, infos = step_rows(vec_env, PROBLEMS[:4], ids)
    assert (inner.calls, outer.calls) == ([1] * 4, [4])  # below it per row, above it once
    ref_rewards, ref_infos = step_rows(reference, PROBLEMS[:4], ids)
    np.testing.assert_array_equal(rewards, ref_rewards)
    assert [comparable(i) for i in infos] == [comparable(i) for i in ref_infos]
    assert rewards[0] == np.float32(infos[0]["reward_components"]["i"] + 0.25 + infos[0]["reward_components"]["o"])


def test_layer_kinds(make_env):
    env = make_env(max_new_tokens=T)
    assert layer_kind(env) == "env" and layer_kind(ProcessReward(env, arithmetic_step_reward)) == "pass"
    assert layer_kind(ScaleReward(env, 2.0)) == layer_kind(LengthPenalty(env, 0.1)) == "batched"
    assert layer_kind(Monitor(env)) == layer_kind(TransformReward(env, lambda r: r)) == "unbatched"

    class Overridden(ScaleReward):  # a subclass with its own step loses the batched form
        def step(self, action):
            return super().step(action)

    assert layer_kind(Overridden(env, 2.0)) == "unbatched"
    made = gym.make("LLMMath-v0", model=env.lm, max_prompt_length=96, max_new_tokens=T, n_problems=40)
    assert compose(made).core is made.unwrapped and compose(made).layers == []  # gym.make's checkers pass through


def test_unequal_sub_envs_are_scored_in_separate_groups(make_env):
    fns = [Counting("f"), Counting("f")]
    envs = [make_env(max_new_tokens=T, reward_fn=fns[0]), make_env(max_new_tokens=T, reward_fn=fns[0]),
            make_env(max_new_tokens=T, reward_fn=fns[1]), FormatReward(make_env(max_new_tokens=T, reward_fn=fns[0]))]
    vec_env = GroupVecEnv([lambda e=e: e for e in envs])
    assert vec_env.groups == [[0, 1], [2], [3]]
    ids = rollout_ids(envs[0], PROBLEMS[:4])
    rewards, infos = step_rows(vec_env, PROBLEMS[:4], ids)
    assert fns[0].calls == [2, 1] and fns[1].calls == [1]  # group [0, 1] once, env 3 (its own group) once
    for r, k in enumerate(PROBLEMS[:4]):
        envs[r].reset(options={"problem_id": k})
        assert np.float32(envs[r].step(ids[r])[1]) == rewards[r]
    assert "format" in infos[3]["reward_components"]
    with pytest.raises(ValueError, match="score differently"):
        ResponseScorer(envs[:3])


# ----------------------------------------------------------------------------- errors
def test_bad_batched_forms_raise_clear_errors(make_env):
    class OneShort(BatchedRewardWrapper):
        def rewards_batch(self, rewards, infos, ended):
            return rewards[:-1], infos

    class FewTerms(EpisodeEndTerm):
        def terms(self, infos):
            return [0.0] * (len(infos) + 1)

    env = make_env(max_new_tokens=T)
    ids = rollout_ids(env, PROBLEMS[:2])
    with pytest.raises(ValueError, match="OneShort.rewards_batch must return \\(rewards, infos\\) with one reward"):
        ResponseScorer.from_env(OneShort(env)).score_batch(PROBLEMS[:2], ids)
    with pytest.raises(ValueError, match="FewTerms.terms returned 3 values for 2 finished responses"):
        ResponseScorer.from_env(FewTerms(env, name="few")).score_batch(PROBLEMS[:2], ids)
    with pytest.raises(ValueError, match="score_batch needs a sequence-level stack"):
        ResponseScorer.from_env(AddQuarter(env)).score_batch(PROBLEMS[:2], ids)

    def broken(prompts, responses, answers, **fields):
        return [0.0] * (len(responses) - 1)

    vec_env = SequenceVecEnv(RewardFunction(env, broken), 2)
    vec_env.reset_groups([0, 1])
    with pytest.raises(RewardFunctionError, match="'broken' returned the wrong number of values"):
        vec_env.step(ids)
    with pytest.raises(ValueError, match="n_envs must be an integer >= 1"):
        SequenceVecEnv(env, 0)
