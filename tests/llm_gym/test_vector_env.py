"""GroupVecEnv: group resets, wave semantics (no auto-reset), one shared model handle."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3.common.monitor import Monitor

from llm_gym.envs import GroupVecEnv, SequenceEnv, TokenEnv, make_group_vec_env

KWARGS = {"max_new_tokens": 3, "n_problems": 10, "device": "cpu", "max_prompt_length": 96}


@pytest.fixture
def token_venv(tiny_model_dir):
    return make_group_vec_env("LLMMathToken-v0", 4, model=str(tiny_model_dir), **KWARGS)


def test_reset_groups_and_shared_handle(token_venv):
    obs = token_venv.reset_groups([3, 3, 8, 8])
    ids = obs["input_ids"]
    assert ids.shape == (4, 96 + 3)
    np.testing.assert_array_equal(ids[0], ids[1])
    np.testing.assert_array_equal(ids[2], ids[3])
    assert not np.array_equal(ids[1], ids[2])
    assert [info["problem_id"] for info in token_venv.reset_infos] == [3, 3, 8, 8]
    lms = token_venv.get_attr("lm")
    assert all(lm is lms[0] for lm in lms)
    assert all(isinstance(e, TokenEnv) for e in token_venv.get_attr("unwrapped"))
    assert token_venv.env_is_wrapped(Monitor) == [True] * 4
    with pytest.raises(ValueError, match="needs 4 problem ids"):
        token_venv.reset_groups([1, 2])


def test_wave_semantics(token_venv):
    with pytest.raises(RuntimeError, match="reset"):
        token_venv.step(np.zeros(4, dtype=np.int64))
    assert token_venv.all_done
    first = token_venv.reset_groups([0, 0, 1, 1])
    assert token_venv.active.tolist() == [True] * 4 and not token_venv.all_done
    lm = token_venv.get_attr("lm")[0]
    eos, x = lm.eos_token_id, lm.tokenizer.convert_tokens_to_ids("x")
    obs, rewards, dones, infos = token_venv.step(np.array([eos, x, x, x]))
    assert dones.tolist() == [True, False, False, False] and rewards.tolist() == [0.0] * 4
    assert infos[0]["terminal_observation"]["input_ids"][96] == eos and "episode" in infos[0]
    assert token_venv.active.tolist() == [False, True, True, True]
    obs, _, dones, infos = token_venv.step(np.array([x, eos, x, x]))  # env 0's action is ignored
    assert dones.tolist() == [False, True, False, False]
    assert infos[0] == {"waiting": True} and obs["input_ids"][0, 96:].tolist() == [eos] + first["input_ids"][0, 97:].tolist()
    assert obs["attention_mask"][0, 96:].tolist() == [1, 0, 0]
    obs, _, dones, infos = token_venv.step(np.array([x, x, x, eos]))
    assert dones.tolist() == [False, False, True, True] and token_venv.all_done
    assert infos[2]["TimeLimit.truncated"] is True and infos[2]["truncated_by_length"] is True
    assert infos[3]["TimeLimit.truncated"] is False and infos[3]["token_index"] == 2
    obs2, rewards, dones, infos = token_venv.step(np.array([x, x, x, x]))
    assert not dones.any() and rewards.tolist() == [0.0] * 4 and infos == [{"waiting": True}] * 4
    np.testing.assert_array_equal(obs2["input_ids"], obs["input_ids"])
    token_venv.reset_groups([2, 2, 2, 2])
    assert token_venv.active.all()


def test_set_options_then_reset(token_venv):
    token_venv.set_options([{"problem_id": k} for k in (5, 6, 7, 9)])
    token_venv.reset()
    assert [info["problem_id"] for info in token_venv.reset_infos] == [5, 6, 7, 9]
    token_venv.seed(3)
    token_venv.reset()  # options are used once, then each env draws from its seeded np_random
    drawn = [info["problem_id"] for info in token_venv.reset_infos]
    token_venv.seed(3)
    token_venv.reset()
    assert [info["problem_id"] for info in token_venv.reset_infos] == drawn


def test_sequence_env_sub_envs(tiny_model_dir):
    venv = make_group_vec_env("LLMMath-v0", 3, model=str(tiny_model_dir), **(KWARGS | {"max_new_tokens": 12}))
    venv.reset_groups([4, 4, 1])
    lm = venv.get_attr("lm")[0]
    answer = venv.get_attr("problems")[0][4].answer
    right = lm.tokenizer(f"\\boxed{{{answer}}}", add_special_tokens=False)["input_ids"] + [lm.eos_token_id]
    actions = np.full((3, 12), lm.pad_token_id, dtype=np.int64)
    actions[0, : len(right)] = actions[2, : len(right)] = right
    _, rewards, dones, infos = venv.step(actions)
    assert dones.all() and venv.all_done and rewards.tolist() == [1.0, 0.0, 0.0]
    assert [i["episode"]["r"] for i in infos] == [1.0, 0.0, 0.0] and infos[0]["response_text"] == f"\\boxed{{{answer}}}"
    _, rewards, dones, infos = venv.step(actions)
    assert not dones.any() and rewards.tolist() == [0.0] * 3 and infos == [{"waiting": True}] * 3


def test_constructor_checks(tiny_model_dir):
    from llm_gym.lm import LanguageModel

    other = LanguageModel(str(tiny_model_dir), device="cpu")
    fns = [lambda: SequenceEnv(model=str(tiny_model_dir), **KWARGS), lambda: SequenceEnv(model=other, **KWARGS)]
    with pytest.raises(ValueError, match="2 different LanguageModel handles"):
        GroupVecEnv(fns)
    env = SequenceEnv(model=other, **KWARGS)
    with pytest.raises(ValueError, match="same env instance"):
        GroupVecEnv([lambda: env, lambda: env])
