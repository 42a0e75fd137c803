"""Reward wrappers on sequence and token envs: values by hand, info, composition, gym.make and check_env."""

from __future__ import annotations

import time
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers import TimeLimit, TransformReward

import llm_gym
from llm_gym.rewards import RewardFunctionError
from llm_gym.wrappers import (
    ClipReward,
    FormatReward,
    LengthPenalty,
    OverlongPenalty,
    RewardFunction,
    RewardModel,
    ScaleReward,
)

T = 12  # max_new_tokens of every env below
TEXT = r"\boxed{7}"  # 9 characters + EOS = 10 tokens
BASE = 0.25 + 0.01 * len(TEXT)  # length_reward of TEXT: 0.34


def length_reward(prompts, responses, answers, **fields):
    """0.25 + 0.01 per character: non-zero and text dependent."""
    return [0.25 + 0.01 * len(r) for r in responses]


def count_sevens(prompts, responses, answers, **fields):
    return [float(r.count("7")) for r in responses]


def constant_scorer(prompts, responses, answers, **fields):
    """Stands in for a reward-model scorer: any callable with the reward-function signature."""
    return [-0.75] * len(responses)


def uses_fields(prompts, responses, answers, problem_ids, solutions, **fields):
    """Depends on every input, so it only agrees with the env's own call if all of them are passed."""
    return [len(r) + 0.5 * len(a) + 0.01 * len(pid) + (s is None) for r, a, pid, s in
            zip(responses, answers, problem_ids, solutions, strict=True)]


class Spy(gym.Wrapper):
    """Keeps the last info it returned, to check outer wrappers copy rather than mutate it."""

    def step(self, action):
        out = self.env.step(action)
        self.last_info = out[-1]
        return out


def action(lm, text: str, eos: bool = True) -> np.ndarray:
    """A ``(T,)`` sequence action: the characters of ``text``, EOS if asked, right-padded with the pad id."""
    ids = lm.tokenizer.convert_tokens_to_ids(list(text)) + ([lm.eos_token_id] if eos else [])
    assert len(ids) <= T and lm.tokenizer.unk_token_id not in ids
    return np.array(ids + [lm.pad_token_id] * (T - len(ids)), dtype=np.int64)


@pytest.fixture
def seq_env(make_env):
    def _make(**kwargs):
        return make_env(**({"reward_fn": length_reward, "max_new_tokens": T} | kwargs))

    return _make


@pytest.fixture
def token_env(tiny_model_dir):
    def _make(**kwargs):
        params = {"model": str(tiny_model_dir), "max_new_tokens": T, "n_problems": 40, "device": "cpu",
                  "max_prompt_length": 96, "reward_fn": length_reward}
        return llm_gym.TokenEnv(**(params | kwargs))

    return _make


def run_sequence(env, text: str = TEXT, eos: bool = True, problem_id: int = 3):
    env.reset(options={"problem_id": problem_id})
    _, reward, terminated, truncated, info = env.step(action(env.unwrapped.lm, text, eos))
    assert (terminated, truncated) == (True, False)
    return reward, info


def run_tokens(env, text: str = TEXT, eos: bool = True, problem_id: int = 3):
    """Step the tokens of ``text`` one by one; return the list of (reward, terminated, truncated, info)."""
    env.reset(options={"problem_id": problem_id})
    ids = action(env.unwrapped.lm, text, eos)[: len(text) + eos]
    steps = []
    for token in ids:
        _, reward, terminated, truncated, info = env.step(int(token))
        steps.append((reward, terminated, truncated, info))
    assert steps[-1][1] or steps[-1][2]
    return steps


def last_token(env):
    """``(reward, info)`` of the last step of a token episode on ``TEXT``."""
    reward, _, _, info = run_tokens(env)[-1]
    return reward, info


# (wrapper factory, key in reward_components, term for TEXT, replaces the env reward)
CASES = {
    "length": (lambda e: LengthPenalty(e, coef=0.6), "length_penalty", -0.6 * 10 / 12, False),
    "length_max": (lambda e: LengthPenalty(e, coef=0.6, max_length=20), "length_penalty", -0.3, False),
    "format": (lambda e: FormatReward(e, weight=0.5), "format", 0.5, False),
    "format_regex": (lambda e: FormatReward(e, 0.5, pattern=r"^\\boxed\{\d\}$", name="fmt"), "fmt", 0.5, False),
    "format_regex_miss": (lambda e: FormatReward(e, 0.5, pattern=r"^\d+$"), "format", 0.0, False),
    "function": (lambda e: RewardFunction(e, count_sevens, weight=2.0), "count_sevens", 2.0, False),
    "function_replace": (lambda e: RewardFunction(e, count_sevens, 2.0, replace=True), "count_sevens", 2.0, True),
    "reward_model": (lambda e: RewardModel(e, constant_scorer), "reward_model", -0.75, True),
    "reward_model_add": (lambda e: RewardModel(e, constant_scorer, 2.0, replace=False), "reward_model", -1.5, False),
    "overlong": (lambda e: OverlongPenalty(e, overlong_buffer=4), "overlong_penalty", (8 - 10) / 4, False),
}


@pytest.mark.parametrize("case", CASES)
def test_episode_end_terms_on_a_sequence_env(seq_env, case):
    wrap, key, term, replace = CASES[case]
    spy = Spy(seq_env())
    env = wrap(spy)
    reward, info = run_sequence(env)
    assert info["response_length"] == 10 and info["response_text"] == TEXT
    assert reward == pytest.approx(term if replace else BASE + term, abs=1e-12)
    assert info["reward_components"] == {"length_reward": pytest.approx(BASE), key: pytest.approx(term)}
    assert spy.last_info["reward_components"] == {"length_reward": pytest.approx(BASE)}  # copied, not mutated
    assert {k: v for k, v in info.items() if k != "reward_components"} == {
        k: v for k, v in spy.last_info.items() if k != "reward_components"}


@pytest.mark.parametrize("case", CASES)
def test_episode_end_terms_change_only_the_last_token_step(token_env, case):
    wrap, key, term, replace = CASES[case]
    raw, wrapped = run_tokens(token_env()), run_tokens(wrap(token_env()))
    assert len(raw) == len(wrapped) == 10
    assert wrapped[:-1] == raw[:-1]  # rewards 0.0, flags and {problem_id, token_index} infos untouched
    assert all("reward_components" not in step[3] for step in wrapped[:-1])
    (r0, *flags0, i0), (r1, *flags1, i1) = raw[-1], wrapped[-1]
    assert flags1 == flags0 == [True, False]
    assert r0 == pytest.approx(BASE)
    assert r1 == pytest.approx(term if replace else BASE + term, abs=1e-12)
    assert i1["reward_components"] == {"length_reward": pytest.approx(BASE), key: pytest.approx(term)}
    assert i0["reward_components"] == {"length_reward": pytest.approx(BASE)}
    assert {k: v for k, v in i1.items() if k != "reward_components"} == {
        k: v for k, v in i0.items() if k != "reward_components"}


def test_scale_and_clip_act_on_a_sequence_env_reward_only(seq_env):
    for env, expected in ((ScaleReward(seq_env(), -2.0), -2 * BASE), (ClipReward(seq_env(), 0.0, 0.3), 0.3),
                          (ClipReward(seq_env(), min_reward=0.5), 0.5), (ClipReward(seq_env(), None, 1.0), BASE)):
        reward, info = run_sequence(env)
        assert type(reward) is float and reward == pytest.approx(expected)
        assert info["reward_components"] == {"length_reward": pytest.approx(BASE)}


def test_scale_and_clip_act_on_every_token_step(token_env):
    def shifted():  # pays 0.1 on every token, so intermediate rewards are non-zero
        return TransformReward(token_env(), lambda r: r + 0.1)

    raw = [step[0] for step in run_tokens(shifted())]
    assert raw == pytest.approx([0.1] * 9 + [BASE + 0.1])
    scaled = [step[0] for step in run_tokens(ScaleReward(shifted(), -2.0))]
    assert scaled == pytest.approx([-0.2] * 9 + [-2 * (BASE + 0.1)])
    clipped = [step[0] for step in run_tokens(ClipReward(shifted(), 0.2, 0.3))]
    assert clipped == pytest.approx([0.2] * 9 + [0.3])
    # A plain token env pays 0.0 before the last token: a positive lower bound lifts those steps too.
    assert [step[0] for step in run_tokens(ClipReward(token_env(), 0.05, 1.0))] == pytest.approx(
        [0.05] * 9 + [BASE])


def commuting_pairs():
    """Pairs of wrappers whose order does not matter: additive episode-end terms."""
    return [
        (lambda e: LengthPenalty(e, coef=0.6), lambda e: FormatReward(e, weight=0.5)),
        (lambda e: RewardFunction(e, count_sevens, weight=2.0), lambda e: OverlongPenalty(e, overlong_buffer=4)),
        (lambda e: RewardModel(e, constant_scorer, replace=False), lambda e: LengthPenalty(e, coef=0.6)),
    ]


@pytest.mark.parametrize("pair", range(3))
@pytest.mark.parametrize("level", ["sequence", "token"])
def test_additive_terms_commute(seq_env, token_env, pair, level):
    first, second = commuting_pairs()[pair]
    make, run = (seq_env, run_sequence) if level == "sequence" else (token_env, last_token)
    reward_ab, info_ab = run(second(first(make())))
    reward_ba, info_ba = run(first(second(make())))
    assert reward_ab == pytest.approx(reward_ba, abs=1e-12)
    assert info_ab["reward_components"] == pytest.approx(info_ba["reward_components"])
    assert reward_ab == pytest.approx(sum(info_ab["reward_components"].values()))  # all terms are added


def test_scale_and_length_penalty_do_not_commute_exactly_as_the_math_says(seq_env, token_env):
    s, p = 3.0, -0.6 * 10 / 12  # scale, LengthPenalty(coef=0.6) of 10 tokens
    outer_scale, _ = run_sequence(ScaleReward(LengthPenalty(seq_env(), coef=0.6), s))
    inner_scale, _ = run_sequence(LengthPenalty(ScaleReward(seq_env(), s), coef=0.6))
    assert outer_scale == pytest.approx(s * (BASE + p))
    assert inner_scale == pytest.approx(s * BASE + p)
    assert outer_scale - inner_scale == pytest.approx((s - 1) * p)
    steps = run_tokens(ScaleReward(LengthPenalty(token_env(), coef=0.6), s))
    assert [step[0] for step in steps] == pytest.approx([0.0] * 9 + [s * (BASE + p)])
    steps = run_tokens(LengthPenalty(ScaleReward(token_env(), s), coef=0.6))
    assert [step[0] for step in steps] == pytest.approx([0.0] * 9 + [s * BASE + p])


@pytest.mark.parametrize("text", [TEXT, "12", "x" * 12, "3 4 5"])
def test_replacing_reward_function_equals_the_env_built_with_it(make_env, token_env, text):
    eos = len(text) < T
    wrapped = RewardFunction(make_env(max_new_tokens=T), uses_fields, replace=True)  # default env reward
    reference = make_env(max_new_tokens=T, reward_fn=uses_fields)
    for problem_id in (0, 7):
        reward, info = run_sequence(wrapped, text, eos, problem_id)
        ref_reward, ref_info = run_sequence(reference, text, eos, problem_id)
        assert reward == ref_reward
        assert info["reward_components"]["uses_fields"] == ref_info["reward_components"]["uses_fields"]
        assert "accuracy" in info["reward_components"]  # the env's own components stay for logging
    token_reward = run_tokens(RewardFunction(token_env(), uses_fields, replace=True), text, eos)[-1][0]
    assert token_reward == run_tokens(token_env(reward_fn=uses_fields), text, eos)[-1][0] == ref_reward


def test_works_after_gym_make_and_records_the_spec(tiny_model_dir):
    kwargs = {"model": str(tiny_model_dir), "device": "cpu", "max_new_tokens": T, "n_problems": 4}
    env = gym.make("LLMMath-v0", **kwargs)  # default reward: accuracy
    env = ScaleReward(LengthPenalty(FormatReward(RewardFunction(env, count_sevens), weight=0.5), coef=0.6), 2.0)
    answer = env.unwrapped.problems[1].answer
    text = rf"\boxed{{{answer}}}"
    reward, info = run_sequence(env, text, problem_id=1)
    n = len(text) + 1
    assert info["response_length"] == n and info["accuracy"] == 1.0
    assert reward == pytest.approx(2.0 * (1.0 + text.count("7") + 0.5 - 0.6 * n / T))
    assert set(info["reward_components"]) == {"accuracy", "count_sevens", "format", "length_penalty"}
    names = [w.name for w in env.spec.additional_wrappers]
    assert names[-4:] == ["RewardFunction", "FormatReward", "LengthPenalty", "ScaleReward"]
    assert env.spec.additional_wrappers[-2].kwargs == {"coef": 0.6, "max_length": None, "name": "length_penalty"}
    replaced = RewardFunction(gym.make("LLMMath-v0", **kwargs), length_reward, replace=True)
    reference = gym.make("LLMMath-v0", **kwargs, reward_fn=length_reward)
    assert run_sequence(replaced, text, problem_id=1)[0] == run_sequence(reference, text, problem_id=1)[0]


@pytest.mark.parametrize("level", ["sequence", "token"])
def test_gymnasium_check_env_passes_on_a_wrapped_env(seq_env, token_env, level):
    env = (seq_env if level == "sequence" else token_env)(n_problems=5)
    env = ClipReward(ScaleReward(OverlongPenalty(LengthPenalty(FormatReward(
        RewardModel(env, constant_scorer, replace=False)), coef=0.1)), 2.0), -5.0, 5.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)  # failures raise
    expected = ("is different from the unwrapped version", "symmetric and normalized space")  # notices only
    assert all(any(e in str(w.message) for e in expected) for w in caught), [str(w.message) for w in caught]


def test_same_name_twice_gets_a_suffix(seq_env):
    env = FormatReward(FormatReward(seq_env(), weight=0.5), weight=0.25, pattern="7")
    reward, info = run_sequence(env)
    assert info["reward_components"] == {"length_reward": pytest.approx(BASE), "format": 0.5, "format_2": 0.25}
    assert reward == pytest.approx(BASE + 0.75)


def test_reward_function_timeout_and_errors_surface_from_step(seq_env):
    def hung(prompts, responses, answers, **fields):
        time.sleep(3.0)
        return [0.0]

    env = RewardFunction(seq_env(), hung, timeout=0.1)
    env.reset(options={"problem_id": 0})
    start = time.monotonic()
    with pytest.raises(RewardFunctionError, match=r"'hung' did not return within timeout=0\.1 s"):
        env.step(action(env.unwrapped.lm, TEXT))
    assert time.monotonic() - start < 2.0
    fast = RewardFunction(seq_env(), count_sevens, timeout=5.0)
    assert run_sequence(fast)[0] == pytest.approx(BASE + 1.0)
    bad = RewardFunction(seq_env(), lambda p, r, a, **kw: [float("nan")])
    with pytest.raises(RewardFunctionError, match="'<lambda>' returned a non-finite value nan"):
        run_sequence(bad)


def test_invalid_arguments_raise_with_the_cause(seq_env):
    env = seq_env()
    for make, match in [
        (lambda: LengthPenalty(env, coef=-0.1), "coef must be a finite number >= 0"),
        (lambda: LengthPenalty(env, coef=0.1, max_length=0), "max_length must be an integer >= 1"),
        (lambda: RewardFunction(env, count_sevens, weight=float("nan")), "weight must be a finite"),
        (lambda: RewardFunction(env, count_sevens, timeout=0), "timeout must be None"),
        (lambda: FormatReward(env, weight=float("inf")), "weight must be a finite"),
        (lambda: ScaleReward(env, float("inf")), "scale must be a finite"),
        (lambda: ClipReward(env, 1.0, 0.0), "min_reward=1 is larger than max_reward=0"),
        (lambda: ClipReward(env), "needs min_reward or max_reward"),
        (lambda: RewardFunction(env, count_sevens, name=""), "name must be a non-empty string"),
    ]:
        with pytest.raises(ValueError, match=match):
            make()
    with pytest.raises(TypeError, match="fn must be a callable reward function"):
        RewardFunction(env, "not a function")


def test_episode_cut_by_another_wrapper_raises_a_clear_error(token_env):
    env = LengthPenalty(TimeLimit(token_env(), max_episode_steps=2), coef=0.1)
    env.reset(options={"problem_id": 0})
    x = env.unwrapped.lm.tokenizer.convert_tokens_to_ids("x")
    env.step(x)
    with pytest.raises(RuntimeError, match=r"LengthPenalty needs info\['response_length'\].*TimeLimit"):
        env.step(x)
