"""reasoning-gym's tasks as envs (LLMReasoningGym-v0, LLMReasoningGymToken-v0), against the real package."""

from __future__ import annotations

import time
import tracemalloc

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from test_sequence_env import encode_action  # noqa: E402  (tests/llm_gym is on sys.path under pytest)

pytest.importorskip("reasoning_gym", reason='the `tasks` extra: pip install -e ".[tasks]"')
import reasoning_gym  # noqa: E402

import llm_gym  # noqa: E402, F401  (registers the envs)
from llm_gym.envs.reasoning_gym import ReasoningGymEnv  # noqa: E402
from llm_gym.registration import EXTRA_ENV_IDS, REASONING_GYM_ENV_IDS  # noqa: E402
from llm_gym.rewards import from_trl  # noqa: E402
from llm_gym.tasks.reasoning_gym import TEST_SEED_OFFSET, reasoning_gym_tasks  # noqa: E402

T = 40


@pytest.fixture
def rg_env(tiny_model_dir):
    def _make(**kwargs):
        return gym.make("LLMReasoningGym-v0", model=str(tiny_model_dir), device="cpu", max_new_tokens=T, **kwargs)

    return _make


def answer(env, k: int, text: str | None = None) -> np.ndarray:
    """The action answering problem ``k`` in reasoning-gym's convention (its gold answer in <answer> tags)."""
    gold = env.unwrapped.problems[k].extra["entry"]["answer"] if text is None else text
    return encode_action(env, f"<answer>{gold}</answer>")


@pytest.mark.parametrize("env_id", REASONING_GYM_ENV_IDS)
def test_registered_and_both_checkers_pass(env_id, tiny_model_dir):
    assert set(REASONING_GYM_ENV_IDS) <= set(EXTRA_ENV_IDS)
    env = gym.make(env_id, model=str(tiny_model_dir), device="cpu", max_new_tokens=8, size=50)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)


def test_problems_are_the_datasets_entries_and_score_answer_is_the_reward(rg_env):
    env = rg_env(task="leg_counting", size=20, seed=3, min_animals=2, max_animals=3)
    dataset = reasoning_gym.create_dataset("leg_counting", size=20, seed=3, min_animals=2, max_animals=3)
    base = env.unwrapped
    assert base.n_problems == 20 and base.task == "leg_counting"
    for k in (0, 7, 19):
        entry = dataset[k]
        problem = base.problems[k]
        assert (problem.question, problem.answer, problem.extra["entry"]) == (entry["question"], entry["answer"], entry)
        assert problem.extra["metadata"] == entry["metadata"] and 2 <= entry["metadata"]["num_animals"] <= 3
        assert problem.id == f"reasoning_gym/leg_counting/train/{k}" and "<answer>" in base.prompts[k]
    obs, info = env.reset(options={"problem_id": 7})
    _, reward, terminated, _, info = env.step(answer(env, 7))
    assert terminated and reward == 1.0 and info["accuracy"] == 1.0 and info["reward_components"] == {"score": 1.0}
    env.reset(options={"problem_id": 7})
    wrong = str(int(dataset[7]["answer"]) + 1)
    _, reward, _, _, info = env.step(answer(env, 7, wrong))
    assert reward == dataset.score_answer(wrong, dataset[7]) and info["accuracy"] == 0.0
    env.reset(options={"problem_id": 7})
    _, reward, _, _, info = env.step(encode_action(env, dataset[7]["answer"]))  # no <answer> tags: no answer
    assert reward == 0.0 and info["accuracy"] == 0.0


def test_partial_credit_is_reward_but_not_accuracy(rg_env):
    env = rg_env(task="spell_backward", size=10)
    entry = env.unwrapped.problems[2].extra["entry"]
    near = entry["answer"][:-1] + ("x" if entry["answer"][-1] != "x" else "y")
    env.reset(options={"problem_id": 2})
    _, reward, _, _, info = env.step(answer(env, 2, near))
    dataset = env.unwrapped.scorer.dataset
    assert 0 < reward == dataset.score_answer(near, entry) < 1 and info["accuracy"] == 0.0


def test_a_weighted_composite_and_lists_use_reasoning_gyms_composite(rg_env):
    env = rg_env(task={"leg_counting": 1.0, "basic_arithmetic": 3.0}, size=40, seed=5)
    sources = [env.unwrapped.problems[k].extra["metadata"]["source_dataset"] for k in range(40)]
    assert set(sources) == {"leg_counting", "basic_arithmetic"} and sources.count("basic_arithmetic") > 20
    k = sources.index("basic_arithmetic")
    env.reset(options={"problem_id": k})
    assert env.step(answer(env, k))[1] == 1.0 and env.unwrapped.task == "composite"
    listed = rg_env(task=["leg_counting", {"name": "basic_arithmetic", "weight": 2, "config": {"min_terms": 2,
                                                                                                "max_terms": 2}}],
                    size=10)
    arithmetic = [p for p in listed.unwrapped.problems if p.source == "reasoning_gym/basic_arithmetic"]
    assert arithmetic and all(p.extra["metadata"]["num_terms"] == 2 for p in arithmetic)


def test_split_test_draws_from_a_disjoint_seed(rg_env):
    train, test = rg_env(size=30, seed=1), rg_env(size=30, seed=1, split="test")
    dataset = reasoning_gym.create_dataset("leg_counting", size=30, seed=1 + TEST_SEED_OFFSET)
    assert [p.question for p in test.unwrapped.problems] == [dataset[k]["question"] for k in range(30)]
    assert test.unwrapped.problems[0].id == "reasoning_gym/leg_counting/test/0"
    assert {p.question for p in train.unwrapped.problems}.isdisjoint({p.question for p in test.unwrapped.problems})


def test_entry_and_metadata_reach_trl_reward_functions(rg_env):
    def uses_entry(completions, entry, metadata, **kwargs):
        return [float(e["metadata"] is m and e["answer"] in c) for c, e, m in zip(completions, entry, metadata,
                                                                                   strict=True)]

    env = rg_env(size=10, reward_fn={"trl": from_trl(uses_entry)})
    env.reset(options={"problem_id": 4})
    _, reward, _, _, info = env.step(answer(env, 4))
    assert reward == 1.0 and info["accuracy"] == 1.0  # accuracy stays the dataset's check with a custom reward


def test_a_huge_size_is_lazy(rg_env):
    rg_env(size=10)  # the model handle is loaded and cached
    tracemalloc.start()
    start = time.perf_counter()
    env = rg_env(size=10**7)
    env.reset(seed=0)
    obs, info = env.reset(options={"problem_id": 10**7 - 1})
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert env.unwrapped.n_problems == 10**7 and info["problem"] == "reasoning_gym/leg_counting/train/9999999"
    assert seconds < 10 and peak < 50 * 2**20, (seconds, peak)


def test_token_level_scores_the_same(tiny_model_dir):
    env = gym.make("LLMReasoningGymToken-v0", model=str(tiny_model_dir), device="cpu", max_new_tokens=T, size=10)
    env.reset(options={"problem_id": 3})
    ids = answer(env, 3)
    for token in ids[: int(np.argmax(ids == env.unwrapped.lm.eos_token_id)) + 1]:
        _, reward, terminated, _, info = env.step(int(token))
    assert terminated and reward == 1.0 and info["accuracy"] == 1.0


def test_bad_input_gets_clear_errors(rg_env):
    with pytest.raises(ValueError, match="unknown reasoning-gym task 'leg_countin'.*leg_counting"):
        rg_env(task="leg_countin")
    assert "leg_counting" in reasoning_gym_tasks() and "composite" not in reasoning_gym_tasks()
    with pytest.raises(ValueError, match="has no config keyword 'max_legs'; its keywords are: max_animals"):
        rg_env(max_legs=3)
    with pytest.raises(ValueError, match="refused the config of 'leg_counting': min_animals must be positive"):
        rg_env(min_animals=0)
    with pytest.raises(ValueError, match="dataset cannot be set"):
        rg_env(dataset=[{"question": "q", "answer": "1"}])
    assert rg_env(n_problems=12).unwrapped.n_problems == 12  # the other envs' name (the command line's)
    with pytest.raises(ValueError, match="size=10 and n_problems=12 name the same number"):
        rg_env(size=10, n_problems=12)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        rg_env(split="validation")
    with pytest.raises(ValueError, match="config keywords \\['min_animals'\\] apply to one dataset"):
        rg_env(task=["leg_counting", "basic_arithmetic"], min_animals=2)


def test_missing_extra_names_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # import reasoning_gym raises ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[tasks\]"'):
        ReasoningGymEnv(task="leg_counting")
