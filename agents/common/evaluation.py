"""Held-out evaluation: greedy (or sampled) accuracy of a model on an llm-gym sequence env."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from agents.common.precision import autocast_region
from agents.common.turns import is_multi_turn, play_wave
from llm_gym.decoding import sample_responses
from llm_gym.envs.vector import group_vec_env_like


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
    and the reward). A multi-turn env plays whole episodes instead (:func:`evaluate_episodes`).

    Args:
        model: a Hugging Face causal LM (e.g. ``algo.policy.model`` or ``LanguageModel.load_model()``).
        env: an llm-gym sequence or multi-turn env (wrappers allowed); its tokenizer must match ``model``.
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
    if is_multi_turn(env.observation_space):
        return evaluate_episodes(model, env, total, batch_size, deterministic, temperature, progress_bar)
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


def _episode_waves(env: gym.Env, total: int, batch_size: int):
    """``(vec_env, problem ids)`` per wave: a GroupVecEnv of ``batch_size`` copies, or the env alone."""
    vec_env = group_vec_env_like(env, min(batch_size, total), monitor=False)
    if vec_env is None:  # wrappers of its own: one episode at a time
        from stable_baselines3.common.vec_env import DummyVecEnv

        vec_env = DummyVecEnv([lambda: env])
    width = vec_env.num_envs
    for lo in range(0, total, width):
        ids = list(range(lo, min(lo + width, total)))
        yield vec_env, ids + [ids[-1]] * (width - len(ids)), len(ids)  # a short last wave repeats its last id


def evaluate_episodes(model: torch.nn.Module, env: gym.Env, n_problems: int, batch_size: int = 32,
                      deterministic: bool = True, temperature: float = 1.0,
                      progress_bar: bool = False) -> dict[str, Any]:
    """:func:`evaluate_accuracy` of a multi-turn env: whole episodes, ``batch_size`` of them per batched turn.

    Each wave resets ``batch_size`` copies of the env (built from ``env.spec`` like
    :func:`llm_gym.envs.vector.group_vec_env_like`; an env with wrappers of its own plays one episode at a
    time) on consecutive problems and plays them to the end with a :class:`~llm_gym.decoding.ConversationSampler`
    (KV cache kept across turns). The score is the env's: ``info["accuracy"]`` of the last step, and the
    episode's summed reward.

    Args:
        model: a Hugging Face causal LM.
        env: a multi-turn llm-gym env.
        n_problems: problems ``0 .. n_problems - 1``.
        batch_size: episodes per wave.
        deterministic: greedy decoding (True), or sampling at ``temperature`` (False).
        temperature: the sampling temperature when ``deterministic`` is False.
        progress_bar: a tqdm bar over waves.

    Returns:
        :func:`evaluate_accuracy`'s keys (``response_length`` = assistant tokens per episode, ``samples``
        with the whole conversation text as the response) plus ``num_turns`` (turns per episode),
        ``tool_call_fraction`` and ``tool_calls`` (tool envs: share of episodes with a call, calls per
        episode).
    """
    base = env.unwrapped
    rows: list[tuple[dict, float]] = []
    start = time.perf_counter()
    waves = list(_episode_waves(env, n_problems, batch_size))
    for vec_env, ids, n_real in tqdm(waves, disable=not progress_bar, desc="evaluate"):
        infos, step_rewards, _ = play_wave(model, vec_env, ids, not deterministic, temperature)
        rows += [(infos[i], float(sum(step_rewards[i]))) for i in range(n_real)]
    seconds = time.perf_counter() - start
    lengths = [info["assistant_token_count"] for info, _ in rows]
    calls = np.array([info.get("num_tool_calls", 0) for info, _ in rows], dtype=float)
    result = {
        "accuracy": float(np.mean([info["accuracy"] for info, _ in rows])),
        "reward_mean": float(np.mean([r for _, r in rows])),
        "response_length": float(np.mean(lengths)),
        "truncated_fraction": float(np.mean([info["truncated_by_turns"] or info["truncated_by_context"]
                                             for info, _ in rows])),
        "n": n_problems, "seconds": seconds, "tokens_per_second": float(np.sum(lengths)) / seconds,
        "num_turns": float(np.mean([info["turns"] for info, _ in rows])),
        "samples": [(base.problems[k].question, info["conversation_text"], info["answer"], info["accuracy"])
                    for k, (info, _) in enumerate(rows)],
    }
    if any("num_tool_calls" in info for info, _ in rows):
        result |= {"tool_call_fraction": float(np.mean(calls > 0)), "tool_calls": float(calls.mean())}
    return result
