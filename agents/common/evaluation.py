"""Held-out evaluation: greedy (or sampled) accuracy of a model on an llm-gym sequence env."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from agents.common.precision import autocast_region
from llm_gym.decoding import sample_responses


def evaluate_accuracy(
    model: torch.nn.Module,
    env: gym.Env,
    n_problems: int | None = None,
    batch_size: int = 32,
    deterministic: bool = True,
    temperature: float = 1.0,
    progress_bar: bool = False,
) -> dict[str, Any]:
    """Accuracy and mean response length of ``model`` over the first ``n_problems`` problems of ``env``.

    Responses are generated in batches of ``batch_size`` with the KV cache
    (:func:`llm_gym.decoding.sample_responses`: finished rows leave the batch; greedy equals ``generate``),
    then every response is stepped through the env, so the score is exactly the env's (``info["accuracy"]``
    and the reward).

    Args:
        model: a Hugging Face causal LM (e.g. ``algo.policy.model`` or ``LanguageModel.load_model()``).
        env: an llm-gym sequence env (wrappers allowed); its tokenizer must match ``model``.
        n_problems: how many problems (None = all of the env's problems, in order).
        batch_size: sequences per ``generate`` call.
        deterministic: greedy decoding (True) or sampling at ``temperature``.
        temperature: sampling temperature when ``deterministic=False``.
        progress_bar: show a tqdm bar over batches.

    Returns:
        ``{"accuracy", "reward_mean", "response_length" (tokens), "truncated_fraction", "n", "seconds",
        "tokens_per_second", "samples"}``; ``samples`` lists ``(question, response, answer, correct)``.

    Raises:
        ValueError: ``n_problems`` larger than the env's problem count.
    """
    base = env.unwrapped
    total = base.n_problems if n_problems is None else int(n_problems)
    if not 0 < total <= base.n_problems:
        raise ValueError(f"n_problems={total} must be in 1..{base.n_problems} (the env's problems)")
    correct, rewards, lengths, truncated, samples = [], [], [], [], []
    start = time.perf_counter()
    for lo in tqdm(range(0, total, batch_size), disable=not progress_bar, desc="evaluate"):
        ids = list(range(lo, min(lo + batch_size, total)))
        obs = [env.reset(options={"problem_id": k})[0] for k in ids]
        prompt_ids = torch.as_tensor(np.stack([o["input_ids"] for o in obs]))
        prompt_mask = torch.as_tensor(np.stack([o["attention_mask"] for o in obs]))
        with autocast_region(model):
            response_ids = sample_responses(model, prompt_ids, prompt_mask, base.max_new_tokens,
                                            base.lm.eos_token_id, base.lm.pad_token_id, temperature=temperature,
                                            do_sample=not deterministic)
        gen = base.lm.as_generation(response_ids)
        for row, k in enumerate(ids):
            env.reset(options={"problem_id": k})
            _, reward, _, _, info = env.step(gen.response_ids[row].numpy())
            correct.append(info["accuracy"])
            rewards.append(reward)
            lengths.append(info["response_length"])
            truncated.append(info["truncated_by_length"])
            samples.append((base.problems[k].question, info["response_text"], info["answer"], info["accuracy"]))
    seconds = time.perf_counter() - start
    return {
        "accuracy": float(np.mean(correct)),
        "reward_mean": float(np.mean(rewards)),
        "response_length": float(np.mean(lengths)),
        "truncated_fraction": float(np.mean(truncated)),
        "n": total,
        "seconds": seconds,
        "tokens_per_second": float(np.sum(lengths)) / seconds,
        "samples": samples,
    }
