"""Every preset x every env granularity learns (SB3's ``test_run.py`` and TRL's "params changed" check).

A tiny random char-level model is trained on a synthetic dense reward, the fraction of digits in the response
(about 0.08 for the untrained model). Over eight short iterations with a large learning rate, every preset must
(1) change every parameter of the policy and (2) raise the env reward: the mean of the last three rollouts must
beat the mean of the first two by 0.1. The reward is read from each response's ``info`` (the env's reward,
before any KL or overlong shaping the algorithm adds), so PPO's KL-in-reward and DAPO's penalty do not hide it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import llm_gym
from agents import ALGORITHMS

DIGITS = set("0123456789")
ITERATIONS = 8


def digit_reward(prompts, responses, answers, **fields):
    """Fraction of the response's characters that are digits (0 for an empty response)."""
    return [sum(c in DIGITS for c in r) / max(len(r), 1) for r in responses]


def make_algo(name: str, level: str, tiny_model_dir):
    kwargs = {"model": str(tiny_model_dir), "max_new_tokens": 8, "n_problems": 20, "device": "cpu",
              "reward_fn": digit_reward}
    if level == "sequence":
        env = llm_gym.SequenceEnv(max_prompt_length=96, **kwargs)
    else:
        env = llm_gym.make_group_vec_env("LLMMathToken-v0", n_envs=8, **kwargs)
    sizes = {"n_prompts": 8, "group_size": 1} if name == "ppo" else {"n_prompts": 2, "group_size": 4}
    extra = {"reward_threshold": 0.25} if name == "rft" else {}  # RFT's "correct": a quarter of digits
    return ALGORITHMS[name]("LLMPolicy", env, learning_rate=2e-2, seed=0, device="cpu", **sizes, **extra)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("level", ["sequence", "token"])
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_preset_learns(name, level, tiny_model_dir):
    model = make_algo(name, level, tiny_model_dir)
    before = {k: v.detach().clone() for k, v in model.policy.named_parameters()}
    means = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # DAPO: a round may find no mixed group
        for _ in range(ITERATIONS):
            model.learn(8 if level == "sequence" else 8 * 8, reset_num_timesteps=False)
            samples = model.rollout_buffer.samples
            if samples is not None:
                means.append(np.mean([i["reward_components"]["digit_reward"] for i in samples.infos]))
    unchanged = [k for k, v in model.policy.named_parameters() if torch.equal(v, before[k])]
    assert not unchanged, f"{name}/{level}: parameters not updated: {unchanged[:5]}"
    assert len(means) >= 5
    first, last = np.mean(means[:2]), np.mean(means[-3:])
    assert last > first + 0.1, f"{name}/{level}: digit reward {first:.3f} -> {last:.3f} ({np.round(means, 2)})"
