"""Curriculum: the level rises when the rolling accuracy passes the threshold, at a reset, and is logged."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.logger import configure
from test_sequence_env import encode_action  # noqa: E402  (tests/llm_gym is on sys.path under pytest)

pytest.importorskip("reasoning_gym", reason='the `tasks` extra: pip install -e ".[tasks]"')
import reasoning_gym  # noqa: E402

import llm_gym  # noqa: E402, F401  (registers the envs)
from agents import GRPO  # noqa: E402
from llm_gym.envs.vector import group_vec_env_like, sequence_vec_env_like  # noqa: E402
from llm_gym.wrappers import Curriculum, CurriculumState  # noqa: E402

T = 40


def play(env, correct: bool) -> dict:
    """One episode answered right (the gold answer in the env's format) or wrong; the final info."""
    _, info = env.reset()
    base = env.unwrapped
    problem = base.problems[info["problem_id"]]
    if "entry" in problem.extra:  # reasoning-gym: <answer> tags
        gold = problem.extra["entry"]["answer"]
        text = f"<answer>{gold if correct else gold + '1'}</answer>"
    else:
        text = f"\\boxed{{{problem.answer if correct else problem.answer + '1'}}}"
    return env.step(encode_action(env, text))[-1]


def test_reasoning_gym_level_rises_with_the_rolling_accuracy(tiny_model_dir):
    env = Curriculum(gym.make("LLMReasoningGym-v0", model=str(tiny_model_dir), device="cpu", max_new_tokens=T,
                              size=1000), threshold=0.75, window=4)
    base = env.unwrapped
    assert env.level == 0 and base.curriculum_level == 0 and len(base.curriculum_levels) == 36
    level0 = reasoning_gym.create_dataset("leg_counting", size=1000, seed=0,
                                          **dict(base.rg_spec.at_level(0).tasks[0][2]))
    assert base.problems[5].extra["entry"] == level0[5] and base.problems[5].id.startswith("reasoning_gym/leg_counting/L0/")
    infos = [play(env, correct) for correct in (True, False, True, True)]  # 3 of 4 right: 0.75 reaches it
    assert [i["curriculum_level"] for i in infos] == [0, 0, 0, 0] and env.level == 1
    assert base.curriculum_level == 0  # the env moves at its next reset, not during an episode
    info = play(env, True)
    assert info["curriculum_level"] == 1 and base.curriculum_level == 1
    assert base.problems[0].extra["metadata"]["difficulty"] == {"num_animals": (1, 2), "num_instances": (2, 8)}
    for _ in range(3):
        play(env, False)
    assert env.level == 1  # a full window (1 right, 3 wrong): 0.25 < 0.75


def test_arithmetic_levels_for_llmmath(tiny_model_dir):
    env = Curriculum(gym.make("LLMMath-v0", model=str(tiny_model_dir), device="cpu", max_prompt_length=None),
                     threshold=1.0, window=2)
    base = env.unwrapped
    assert env.level == 1 and {p.difficulty for p in base.problems} == {1}  # LLMMath-v0's levels (1, 2) -> 1
    play(env, True)
    play(env, True)
    assert env.level == 2
    play(env, True)
    assert {p.difficulty for p in base.problems} == {2}
    gym_check_env(env, skip_render_check=True)


def test_the_level_rise_is_logged_by_grpo(tiny_model_dir, tmp_path):
    env = Curriculum(gym.make("LLMReasoningGym-v0", model=str(tiny_model_dir), device="cpu", max_new_tokens=8,
                              size=100), threshold=0.0, window=4)
    assert sequence_vec_env_like(env, 4) is not None  # a batched layer: the rollout is scored in one call
    model = GRPO("LLMPolicy", env, n_prompts=2, group_size=2, micro_batch_size=4, seed=0, device="cpu")
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(12)
    rows = (tmp_path / "progress.csv").read_text().splitlines()
    column = rows[0].split(",").index("curriculum/level")
    assert [float(row.split(",")[column]) for row in rows[1:]] == [0.0, 1.0, 2.0]


def test_vector_env_copies_share_the_level(tiny_model_dir):
    env = Curriculum(gym.make("LLMReasoningGymToken-v0", model=str(tiny_model_dir), device="cpu",
                              max_new_tokens=4, size=50), threshold=0.0, window=2)
    vec = group_vec_env_like(env, 4)
    wrappers = [sub for sub in vec.envs]
    assert all(isinstance(w, Curriculum) and w.state is env.state for w in wrappers) and len(vec.scorers) == 1
    vec.reset_groups([3, 3, 7, 7])
    done = np.zeros(4, dtype=bool)
    while not done.all():
        _, _, dones, infos = vec.step(np.full(4, env.unwrapped.lm.eos_token_id))
        done |= dones
    assert env.level == 1  # one window of 2+ episodes, threshold 0
    vec.reset_groups([3, 3, 7, 7])
    assert {w.unwrapped.curriculum_level for w in wrappers} == {1}
    assert len({w.unwrapped.problems[3].question for w in wrappers}) == 1


def test_errors_name_the_fix(tiny_model_dir):
    with pytest.raises(ValueError, match="Curriculum needs an env with difficulty levels"):
        Curriculum(gym.make("LLMGSM8K-v0", model=str(tiny_model_dir), device="cpu", max_prompt_length=None))
    env = gym.make("LLMMath-v0", model=str(tiny_model_dir), device="cpu", max_prompt_length=80)
    with pytest.raises(ValueError, match="threshold"):
        Curriculum(env, threshold=1.5)
    with pytest.raises(ValueError, match="start_level must be one of the env's levels"):
        Curriculum(env, start_level=7)
    shared = CurriculumState(level=3, window=8)
    assert Curriculum(env, state=shared).level == 3 and {p.difficulty for p in env.unwrapped.problems} == {3}
    with pytest.raises(ValueError, match="more than max_prompt_length=80"):  # level 4 prompts do not fit
        Curriculum(env, start_level=4)
