"""Batched reward scoring: score_batch equals score_response row by row; primed rollouts call each reward
function once and step exactly like unprimed ones (rewards, infos, Monitor), falling back on any mismatch."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import TransformReward
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import llm_gym.envs.common as common
from llm_gym import GroupVecEnv, make_group_vec_env, prime_sequence_rollout
from llm_gym.rewards import RewardFunctionError, arithmetic_step_reward, boxed_format_reward
from llm_gym.wrappers import (
    ClipReward,
    FormatReward,
    LengthPenalty,
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


def action(lm, text: str, eos: bool = True) -> np.ndarray:
    """A ``(T,)`` sequence action: the characters of ``text``, EOS if asked, right-padded with the pad id."""
    ids = lm.tokenizer.convert_tokens_to_ids(list(text)) + ([lm.eos_token_id] if eos else [])
    assert len(ids) <= T and lm.tokenizer.unk_token_id not in ids
    return np.array(ids + [lm.pad_token_id] * (T - len(ids)), dtype=np.int64)


def texts_for(env, problem_ids) -> list[tuple[str, bool]]:
    """One ``(text, eos)`` per row: right and wrong answers, several steps, one truncated row (no EOS)."""
    out = []
    for r, k in enumerate(problem_ids):
        answer = env.unwrapped.problems[k].answer
        out.append([(f"1+1=2\n\\boxed{{{answer}}}", True), ("3+4=8\nso 7", True), (rf"\boxed{{{answer}}}", True),
                    ("2=2\n" + "x" * (T - 4), False), ("7", True), ("5+5=10\n6\n7", True)][r % 6])
    return out


def rollout_ids(env, problem_ids=PROBLEMS) -> np.ndarray:
    """``(N, T)`` actions for ``problem_ids``."""
    return np.stack([action(env.unwrapped.lm, text, eos) for text, eos in texts_for(env, problem_ids)])


def step_rollout(vec_env, problem_ids, ids):
    """Step the rows as the algorithm does: reset each chunk of num_envs rows, then step it."""
    n = vec_env.num_envs
    rewards, infos = [], []
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
    assert env.score_batch(PROBLEMS, ids)[1] == infos and env._info()["problem_id"] == 9  # episode untouched
    for r, k in enumerate(PROBLEMS):
        env.reset(options={"problem_id": k})
        reward, info = env.score_response(ids[r])
        assert reward == rewards[r] and info == infos[r]
    assert [i["accuracy"] for i in infos] == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert [i["truncated_by_length"] for i in infos] == [False, False, False, True, False, False, False, False]
    if config == "process":
        assert infos[0]["step_rewards"] == [(5, 1.0)] and infos[1]["step_rewards"] == [(5, 0.0)]
    if config == "reward_fn_dict":
        assert set(infos[0]["reward_components"]) == {"a", "b"}


def test_score_batch_calls_each_function_once(make_env, monkeypatch):
    calls = []

    def counted_math(prompts, responses, answers, **fields):
        calls.append(len(responses))
        return math_answer_reward(prompts, responses, answers)

    math_answer_reward = common.math_answer_reward
    monkeypatch.setattr(common, "math_answer_reward", counted_math)  # the accuracy fallback
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


def build(kind: str, vec: str, make_env, tiny_model_dir, counter):
    """A vector env whose reward function ``counter`` is the env's reward_fn, process fn or a wrapper's fn."""
    if kind == "reward_fn":
        kwargs, wrap = {"reward_fn": counter}, (lambda e: e)
    elif kind == "process":
        kwargs, wrap = {"process_reward_fn": counter}, (lambda e: e)
    else:
        kwargs, wrap = {}, (lambda e: RewardFunction(e, counter, weight=0.5))
    if vec == "dummy":
        return DummyVecEnv([lambda: Monitor(wrap(make_env(max_new_tokens=T, **kwargs)))])
    if kind != "wrapper":
        return make_group_vec_env("LLMMath-v0", n_envs=4, model=str(tiny_model_dir), device="cpu", n_problems=40,
                                  max_new_tokens=T, max_prompt_length=96, **kwargs)
    return GroupVecEnv([lambda: Monitor(wrap(make_env(max_new_tokens=T))) for _ in range(4)])


@pytest.mark.parametrize("vec", ["dummy", "group"])
@pytest.mark.parametrize("kind", ["reward_fn", "process", "wrapper"])
def test_primed_rollout_calls_once_and_steps_identically(make_env, tiny_model_dir, kind, vec):
    new_counter = CountingSteps if kind == "process" else Counting
    primed_fn, plain_fn = new_counter(), new_counter()
    primed, plain = (build(kind, vec, make_env, tiny_model_dir, fn) for fn in (primed_fn, plain_fn))
    pids = np.array(PROBLEMS)
    ids = rollout_ids(primed.envs[0], pids)
    assert prime_sequence_rollout(primed, pids, ids) is True
    assert primed_fn.calls == [8]
    rewards, infos = step_rollout(primed, pids, ids)
    assert primed_fn.calls == [8]  # no further call while stepping
    ref_rewards, ref_infos = step_rollout(plain, pids, ids)
    assert plain_fn.calls == [1] * 8
    np.testing.assert_array_equal(rewards, ref_rewards)
    assert [comparable(i) for i in infos] == [comparable(i) for i in ref_infos]
    assert [i["episode"]["r"] for i in infos] == [round(float(r), 6) for r in rewards]
    if kind == "process":
        assert any(i["step_rewards"] for i in infos)
    assert all(env.unwrapped.n_primed == 0 for env in primed.envs)


def test_a_mismatched_response_or_problem_falls_back_to_normal_scoring(make_env):
    fn, ref_fn = Counting(), Counting()
    primed = DummyVecEnv([lambda: Monitor(RewardFunction(make_env(max_new_tokens=T, reward_fn=fn), fn))])
    plain = DummyVecEnv([lambda: Monitor(RewardFunction(make_env(max_new_tokens=T, reward_fn=ref_fn), ref_fn))])
    pids, ids = np.array(PROBLEMS), rollout_ids(primed.envs[0])
    stepped = ids.copy()
    stepped[2] = action(primed.envs[0].unwrapped.lm, "3+4=7")  # another response than the primed one
    assert prime_sequence_rollout(primed, pids, ids)
    assert fn.calls == [8, 8]  # the env's reward_fn and the wrapper's, once each
    rewards, infos = step_rollout(primed, pids, stepped)
    assert fn.calls == [8, 8] + [1, 1] * 6  # rows 0-1 primed; the mismatch at row 2 drops the rest
    ref_rewards, ref_infos = step_rollout(plain, pids, stepped)
    np.testing.assert_array_equal(rewards, ref_rewards)
    assert [comparable(i) for i in infos] == [comparable(i) for i in ref_infos]
    assert infos[2]["response_text"] == "3+4=7"
    assert prime_sequence_rollout(primed, pids, ids)
    moved = pids.copy()
    moved[0] = 11  # reset to another problem than the primed one
    assert step_rollout(primed, moved, ids)[0][0] == step_rollout(plain, moved, ids)[0][0]
    assert primed.envs[0].unwrapped.n_primed == 0


def test_an_unknown_wrapper_stops_priming_above_it(make_env):
    base_fn, top_fn, ref_base, ref_top = Counting("b"), Counting("t"), Counting("b"), Counting("t")

    def stack(b, t):
        return Monitor(RewardFunction(TransformReward(make_env(max_new_tokens=T, reward_fn=b), lambda r: r + 0.25), t))

    primed, plain = DummyVecEnv([lambda: stack(base_fn, top_fn)]), DummyVecEnv([lambda: stack(ref_base, ref_top)])
    pids, ids = np.array(PROBLEMS), rollout_ids(primed.envs[0])
    assert prime_sequence_rollout(primed, pids, ids)
    assert (base_fn.calls, top_fn.calls) == ([8], [])
    wrapper = primed.envs[0].env
    assert isinstance(wrapper, RewardFunction) and wrapper.n_primed == 0
    rewards, infos = step_rollout(primed, pids, ids)
    assert (base_fn.calls, top_fn.calls) == ([8], [1] * 8)  # the wrapper above computes per step
    ref_rewards, ref_infos = step_rollout(plain, pids, ids)
    np.testing.assert_array_equal(rewards, ref_rewards)
    assert [comparable(i) for i in infos] == [comparable(i) for i in ref_infos]
    assert rewards[0] == pytest.approx(infos[0]["reward_components"]["b"] + 0.25 + infos[0]["reward_components"]["t"])


def test_scale_and_clip_between_terms_give_the_unprimed_rewards(make_env):
    def stack():
        env = ProcessReward(make_env(max_new_tokens=T, reward_fn=Counting()), arithmetic_step_reward)
        env = LengthPenalty(ScaleReward(FormatReward(env, weight=0.5), -2.0), coef=0.3)
        return Monitor(ClipReward(env, -3.0, 3.0))

    primed, plain = DummyVecEnv([stack]), DummyVecEnv([stack])
    pids, ids = np.array(PROBLEMS), rollout_ids(primed.envs[0])
    assert prime_sequence_rollout(primed, pids, ids)
    layers = {type(layer): layer for layer in _layers(primed.envs[0])}
    assert layers[FormatReward].n_primed == layers[LengthPenalty].n_primed == 8
    rewards, infos = step_rollout(primed, pids, ids)
    assert layers[FormatReward].n_primed == layers[LengthPenalty].n_primed == 0  # every primed term was used
    ref_rewards, ref_infos = step_rollout(plain, pids, ids)
    np.testing.assert_array_equal(rewards, ref_rewards)
    assert [comparable(i) for i in infos] == [comparable(i) for i in ref_infos]
    c = infos[0]["reward_components"]
    assert rewards[0] == pytest.approx(np.clip(-2.0 * (c["counting"] + c["format"]) + c["length_penalty"], -3, 3))


def _layers(env):
    while True:
        yield env
        if not isinstance(env, gym.Wrapper):
            return
        env = env.env


def test_what_cannot_be_primed_returns_false(make_env, tiny_model_dir):
    pids = np.array(PROBLEMS)
    ids = rollout_ids(make_env(max_new_tokens=T), pids)
    token = make_group_vec_env("LLMMathToken-v0", n_envs=2, model=str(tiny_model_dir), device="cpu", n_problems=40,
                               max_new_tokens=T, max_prompt_length=96)
    assert prime_sequence_rollout(token, pids, ids) is False
    assert prime_sequence_rollout(object(), pids, ids) is False  # no .envs, like SubprocVecEnv
    mixed = GroupVecEnv([lambda: Monitor(make_env(max_new_tokens=T)),
                         lambda: Monitor(FormatReward(make_env(max_new_tokens=T)))])
    assert prime_sequence_rollout(mixed, pids, ids) is False  # different layer types
    other_reward = GroupVecEnv([lambda: make_env(max_new_tokens=T), lambda: make_env(max_new_tokens=T, format_weight=1)])
    assert prime_sequence_rollout(other_reward, pids, ids) is False
    assert all(env.unwrapped.n_primed == 0 for env in (*mixed.envs, *other_reward.envs))
    same = GroupVecEnv([lambda: make_env(max_new_tokens=T) for _ in range(2)])
    assert prime_sequence_rollout(same, pids, ids) is True
    assert [env.unwrapped.n_primed for env in same.envs] == [4, 4]
    with pytest.raises(ValueError, match="needs \\(N, T\\) response ids"):
        prime_sequence_rollout(same, pids[:3], ids)


def test_a_failing_reward_function_leaves_nothing_primed(make_env):
    def broken(prompts, responses, answers, **fields):
        return [0.0] * (len(responses) - 1)

    vec = DummyVecEnv([lambda: Monitor(RewardFunction(make_env(max_new_tokens=T), broken))])
    pids, ids = np.array(PROBLEMS), rollout_ids(vec.envs[0])
    with pytest.raises(RewardFunctionError, match="'broken' returned the wrong number of values"):
        prime_sequence_rollout(vec, pids, ids)
    assert vec.envs[0].unwrapped.n_primed == 0 and vec.envs[0].env.n_primed == 0


def test_wrappers_configured_differently_per_sub_env_are_not_primed(make_env):
    fns = [Counting(), Counting()]
    envs = [Monitor(RewardFunction(FormatReward(make_env(max_new_tokens=T), 0.5, pattern="7"), fn)) for fn in fns]
    ref_fns = [Counting(), Counting()]
    ref = [Monitor(RewardFunction(FormatReward(make_env(max_new_tokens=T), 0.5, pattern="7"), fn)) for fn in ref_fns]
    primed, plain = GroupVecEnv([lambda e=e: e for e in envs]), GroupVecEnv([lambda e=e: e for e in ref])
    pids, ids = np.array(PROBLEMS), rollout_ids(envs[0])
    assert prime_sequence_rollout(primed, pids, ids)
    assert [e.env.env.n_primed for e in envs] == [4, 4]  # same pattern: primed in both sub-envs
    assert [e.env.n_primed for e in envs] == [0, 0] and fns[0].calls == fns[1].calls == []  # different fns
    rewards, infos = step_rollout(primed, pids, ids)
    ref_rewards, ref_infos = step_rollout(plain, pids, ids)
    np.testing.assert_array_equal(rewards, ref_rewards)
    assert [comparable(i) for i in infos] == [comparable(i) for i in ref_infos]
    assert fns[0].calls == fns[1].calls == [1] * 4  # each sub-env's own function, per step


def test_transparent_layers_inside_the_stack_do_not_stop_priming(tiny_model_dir):
    fn, ref_fn = Counting(), Counting()
    kwargs = {"model": str(tiny_model_dir), "device": "cpu", "n_problems": 40, "max_new_tokens": T,
              "max_prompt_length": 96}

    def stack(f):  # gym.make adds OrderEnforcing and PassiveEnvChecker; a Monitor sits below the wrapper
        return lambda: ScaleReward(RewardFunction(Monitor(gym.make("LLMMath-v0", **kwargs)), f), 2.0)

    primed, plain = GroupVecEnv([stack(fn) for _ in range(4)]), GroupVecEnv([stack(ref_fn) for _ in range(4)])
    pids = np.array(PROBLEMS)
    ids = rollout_ids(primed.envs[0], pids)
    assert [type(layer).__name__ for layer in _layers(primed.envs[1])] == [
        "ScaleReward", "RewardFunction", "Monitor", "OrderEnforcing", "PassiveEnvChecker", "SequenceEnv"]
    for _ in range(2):  # the second rollout runs on sub-envs whose Monitors and checkers have state
        assert prime_sequence_rollout(primed, pids, ids)
        assert fn.calls[-1] == 8 and [e.env.n_primed for e in primed.envs] == [2, 2, 2, 2]
        rewards, infos = step_rollout(primed, pids, ids)
        ref_rewards, ref_infos = step_rollout(plain, pids, ids)
        np.testing.assert_array_equal(rewards, ref_rewards)
        assert [comparable(i) for i in infos] == [comparable(i) for i in ref_infos]
    assert fn.calls == [8, 8] and ref_fn.calls == [1] * 16
