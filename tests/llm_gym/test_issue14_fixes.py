"""Issue 14's code bugs: ``import llm_gym`` binds its subpackages, missing model paths raise
FileNotFoundError, and ``load(path, env=...)`` works for every env a run trained on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import llm_gym
from agents import GRPO, PPO
from llm_gym.envs.vector import GroupVecEnv

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------ import llm_gym
def test_import_llm_gym_binds_rewards_and_wrappers_in_a_fresh_interpreter():
    code = ("import llm_gym\n"
            "from llm_gym.wrappers.reward import FormatReward\n"
            "from llm_gym.rewards.math import math_answer_reward\n"
            "assert llm_gym.wrappers.FormatReward is FormatReward\n"
            "assert llm_gym.rewards.math_answer_reward is math_answer_reward\n"
            "names = {}\n"
            "exec('from llm_gym import *', names)\n"
            "print(sorted(n for n in ('rewards', 'wrappers') if n in names))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['rewards', 'wrappers']"


# ------------------------------------------------------------------------ missing model paths
MISSING = ["path/to/model", "./no-model", "models\\tiny", "/no/such/model"]


@pytest.mark.parametrize("shape", MISSING)
def test_env_with_a_missing_model_path_raises_file_not_found(shape):
    with pytest.raises(FileNotFoundError, match="not found") as info:
        gym.make("LLMMath-v0", model=shape, device="cpu")
    assert str(Path(shape)) in str(info.value)


@pytest.mark.parametrize("shape", MISSING)
def test_reward_model_loaders_raise_file_not_found(shape):
    from llm_gym.reward_models import ProcessRewardModelScorer, RewardModelScorer, resolve_backbone

    for load in (resolve_backbone, RewardModelScorer, ProcessRewardModelScorer):
        with pytest.raises(FileNotFoundError, match="not a Hugging Face model folder") as info:
            load(shape)
        assert repr(shape) in str(info.value)


@pytest.mark.parametrize("cls", [PPO, GRPO])
@pytest.mark.parametrize("shape", ["path/to/ckpt", "./no-ckpt.zip"])
def test_algorithm_load_of_a_missing_path_raises_file_not_found(cls, shape):
    with pytest.raises(FileNotFoundError, match="No checkpoint at") as info:
        cls.load(shape, device="cpu")
    assert str(Path(shape)) in str(info.value)


# ------------------------------------------------------------------------ load(path, env=...)
def text_reward(prompts, responses, answers, **fields):
    """Varies with the text, so groups have mixed rewards and GRPO's advantages are not all zero."""
    return [float(sum(map(ord, r)) % 2) for r in responses]


def _token_env(model_dir, n_envs: int, max_new_tokens: int = 3):
    return llm_gym.make_group_vec_env("LLMMathToken-v0", n_envs=n_envs, model=str(model_dir), device="cpu",
                                      max_new_tokens=max_new_tokens, n_problems=8, reward_fn=text_reward)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


PPO_32 = {"n_prompts": 32, "n_epochs": 2, "batch_size": 16, "learning_rate": 1e-5}  # docs/quickstart.md


@pytest.fixture(scope="module")
def ppo_token_32(tiny_model_dir, tmp_path_factory):
    """The documented token-level PPO (32 envs, n_prompts=32) trained one rollout on the tiny model, saved."""
    path = tmp_path_factory.mktemp("ppo32") / "ppo_token"
    model = PPO("LLMPolicy", _token_env(tiny_model_dir, 32), seed=0, device="cpu", **PPO_32)
    model.learn(1)  # one rollout: 32 sequences of 1 to 3 tokens, then 2 epochs x 2 minibatches of 16
    assert model._n_updates == 4
    model.save(path)
    return model, path


def test_the_32_env_case_does_not_fit_ppo_defaults(tiny_model_dir):
    """The precondition of the bug: PPO's default rollout (16 sequences) does not divide over 32 envs."""
    default = PPO.default_config()
    assert default.n_prompts * default.group_size == 16 and 16 % 32 != 0
    with pytest.raises(ValueError, match=r"n_prompts\*group_size=16 must be a multiple of the number of envs \(32\)"):
        PPO("LLMPolicy", _token_env(tiny_model_dir, 32), device="cpu")


def test_token_ppo_with_32_envs_loads_with_its_env_and_keeps_training(ppo_token_32, tiny_model_dir):
    model, path = ppo_token_32
    env = _token_env(tiny_model_dir, 32)
    loaded = PPO.load(path, env=env, device="cpu")
    assert loaded.n_envs == 32 and loaded.env.num_envs == 32
    assert loaded.config == model.config
    cfg = loaded.config
    assert (cfg.n_prompts, cfg.n_epochs, cfg.batch_size, cfg.learning_rate) == (32, 2, 16, 1e-5)
    assert _same_weights(_weights(loaded), _weights(model))
    obs = env.reset()
    actions, _ = loaded.predict(obs, deterministic=True)
    expected, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (32,) and np.array_equal(actions, expected)  # same weights: same greedy tokens

    before, steps, updates = _weights(loaded), loaded.num_timesteps, loaded._n_updates
    loaded.learn(1, reset_num_timesteps=False)  # one more rollout
    assert 32 <= loaded.num_timesteps - steps <= 32 * 3  # timesteps are tokens: 1 to 3 per sequence
    assert loaded._n_updates == updates + 2 * (32 // 16)  # n_epochs x minibatches of 16 sequences
    assert not _same_weights(_weights(loaded), before)


def test_load_without_env_then_set_env(ppo_token_32, tiny_model_dir):
    """SB3's set_env asserted the old sub-env count, which a model loaded without an env does not have."""
    model, path = ppo_token_32
    loaded = PPO.load(path, device="cpu")
    with pytest.raises(ValueError, match=r"multiple of the number of envs \(3\)"):
        loaded.set_env(_token_env(tiny_model_dir, 3))  # 32 sequences do not split over 3 envs
    assert loaded.env is None  # a refused env is not kept
    env = _token_env(tiny_model_dir, 32)
    loaded.set_env(env)
    assert loaded.env.num_envs == loaded.n_envs == 32 and loaded._last_obs is None
    obs = env.reset()
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    loaded.set_env(_token_env(tiny_model_dir, 16))  # 2 waves of 16 envs also fit n_prompts=32
    assert loaded.n_envs == 16


def test_load_with_an_env_of_other_spaces_raises_a_clear_error(ppo_token_32, tiny_model_dir, make_env):
    _, path = ppo_token_32
    with pytest.raises(ValueError, match=r"spaces differ from the checkpoint's.*max_new_tokens"):
        PPO.load(path, env=_token_env(tiny_model_dir, 32, max_new_tokens=5), device="cpu")  # L differs
    env = gym.make("LLMMath-v0", model=str(tiny_model_dir), device="cpu", max_new_tokens=3,
                   max_prompt_length=_prompt_length(tiny_model_dir))
    with pytest.raises(ValueError, match=r"spaces differ from the checkpoint's: Action spaces do not match"):
        PPO.load(path, env=env, device="cpu")  # sequence level: Box actions, not Discrete
    loaded = PPO.load(path, device="cpu")
    with pytest.raises(ValueError, match="spaces differ from the model's"):
        loaded.set_env(make_env(max_new_tokens=3))


def _prompt_length(model_dir) -> int:
    """The token env's observation length L, so a sequence env differs only in its action space."""
    return _token_env(model_dir, 1).observation_space["input_ids"].shape[0]


def test_grpo_on_a_group_vec_env_loads_with_its_env(tiny_model_dir, tmp_path):
    """GRPO's default rollout (4 x 8 = 32) does not divide over 6 envs; the saved n_prompts=3, group_size=2 do."""
    def env():
        return llm_gym.make_group_vec_env("LLMMath-v0", n_envs=6, model=str(tiny_model_dir), device="cpu",
                                          max_new_tokens=4, n_problems=8, reward_fn=text_reward)

    assert 32 % 6 != 0
    model = GRPO("LLMPolicy", env(), n_prompts=3, group_size=2, batch_size=3, learning_rate=1e-3, seed=1,
                 device="cpu")
    model.learn(6)
    model.save(tmp_path / "grpo")
    vec = env()
    loaded = GRPO.load(tmp_path / "grpo", env=vec, device="cpu")
    assert isinstance(loaded.env, GroupVecEnv) and loaded.n_envs == 6
    cfg = loaded.config
    assert cfg == model.config and (cfg.n_prompts, cfg.group_size, cfg.batch_size) == (3, 2, 3)
    obs = vec.reset()
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    before = _weights(loaded)
    loaded.learn(6, reset_num_timesteps=False)
    assert loaded.num_timesteps == 12 and loaded._n_updates == model._n_updates + 2  # 6 sequences / batch 3
    assert not _same_weights(_weights(loaded), before)


def test_a_single_multi_turn_env_is_batched_again_on_load(tiny_model_dir, tmp_path):
    """Trained on one ``gym.make`` multi-turn env (batched into n_prompts x group_size copies), loaded the same."""
    kwargs = {"model": str(tiny_model_dir), "device": "cpu", "max_new_tokens": 6, "max_prompt_length": None,
              "max_turns": 3, "max_message_tokens": 64}
    model = GRPO("LLMPolicy", gym.make("LLMGuessNumber-v0", **kwargs), n_prompts=1, group_size=3, device="cpu")
    assert model.env.num_envs == 3
    model.save(tmp_path / "mt")
    loaded = GRPO.load(tmp_path / "mt", env=gym.make("LLMGuessNumber-v0", **kwargs), device="cpu")
    assert isinstance(loaded.env, GroupVecEnv) and loaded.env.num_envs == loaded.n_envs == 3
