"""Multi-turn rollouts: every episode is a conversation of several assistant turns, one sample of its group.

:class:`TurnCollector` is the part of :class:`~agents.common.base.LLMAlgorithm` that runs
:class:`~llm_gym.envs.multiturn.MultiTurnEnv` episodes. A wave of ``num_envs`` episodes is reset on the drawn
problems; then, until every episode has ended, the next turn of every active episode is sampled in one batch
(:class:`~llm_gym.decoding.ConversationSampler`: each episode's KV cache is kept across turns and only the
env's new tokens are run), and all sub-envs are stepped with their turns. An episode's training sample is its
final conversation, token for token as the env observed it (:func:`turn_rollout_samples`): the response is
everything after the prompt, ``response_attention_mask`` marks it all and ``response_mask`` (the loss mask)
only the policy's turns; each step's reward sits on the last token of its turn.

GRPO, DAPO, GSPO and the other group presets then see one return per episode (its summed step rewards), so the
trajectory-level advantage applies on every assistant token; PPO's GAE runs over the assistant tokens (the
env's tokens are bridged, :func:`~agents.common.returns.gae`) with rewards at turn ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from agents.common.buffers import RolloutSamples
from agents.common.fsdp import gathered
from agents.common.precision import autocast_region
from llm_gym.decoding import ConversationSampler
from llm_gym.envs.multiturn import is_multi_turn

__all__ = ["TurnCollector", "in_waves", "is_multi_turn", "play_wave", "run_turns", "turn_metrics",
           "turn_rollout_samples"]


def _reward_position(loss_mask: np.ndarray, end: int) -> int:
    """Index of the last assistant token before ``end`` (exclusive) in a ``(R,)`` loss mask; 0 if none."""
    before = np.flatnonzero(loss_mask[:max(end, 0)])
    if len(before):
        return int(before[-1])
    after = np.flatnonzero(loss_mask)
    return int(after[0]) if len(after) else 0


def turn_rollout_samples(final_obs: list[dict[str, np.ndarray]], final_infos: list[dict],
                         step_rewards: list[list[float]], prompt_length: int, pad_token_id: int) -> RolloutSamples:
    """The training rows of finished multi-turn episodes, from their final observations.

    Row ``i``'s conversation is the unpadded ``final_obs[i]["input_ids"]`` (``n`` tokens, the first
    ``p = info["prompt_token_count"]`` the prompt). The prompt goes left-padded into ``prompt_ids (B, L)``; the
    rest (every turn and every env message, in order) right-padded into ``response_ids (B, C)``, ``C`` the
    observation width (a fixed width, so waves, rounds and ranks concatenate). ``response_attention_mask`` is 1
    on all ``n - p`` tokens, ``response_mask`` on the assistant tokens only (the observation's
    ``assistant_mask``). The reward of turn ``k`` (``step_rewards[i][k]``) goes on the last token of that turn
    (``info["turn_spans"][k]``; a turn with no tokens gives its reward to the assistant token before it), so
    ``rewards[i] = token_rewards[i].sum()`` is the episode's return.

    Args:
        final_obs: ``B`` final observations, each ``input_ids`` / ``attention_mask`` / ``assistant_mask`` of
            shape ``(C,)``, left-padded.
        final_infos: the ``B`` infos of the episodes' last steps (``prompt_token_count``, ``turn_spans``).
        step_rewards: ``B`` lists with one reward per turn.
        prompt_length: ``L``, the env's ``max_prompt_length``.
        pad_token_id: fills the padding.

    Returns:
        A :class:`~agents.common.buffers.RolloutSamples` with ``prompt_ids``, ``prompt_mask``, ``response_ids``,
        ``response_mask``, ``response_attention_mask``, ``rewards``, ``token_rewards`` and ``infos``.

    Raises:
        ValueError: a prompt longer than ``L``, or a reward list whose length is not the number of turns.
    """
    B, C = len(final_obs), len(final_obs[0]["input_ids"])
    prompt_ids = torch.full((B, prompt_length), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((B, prompt_length), dtype=torch.long)
    response_ids = torch.full((B, C), pad_token_id, dtype=torch.long)
    attention, loss_mask, token_rewards = torch.zeros((B, C)), torch.zeros((B, C)), torch.zeros((B, C))
    for i, (obs, info) in enumerate(zip(final_obs, final_infos, strict=True)):
        real = np.asarray(obs["attention_mask"]).astype(bool)
        conv, assistant = np.asarray(obs["input_ids"])[real], np.asarray(obs["assistant_mask"])[real]
        p, spans = int(info["prompt_token_count"]), info["turn_spans"]
        if p > prompt_length:
            raise ValueError(f"Episode {i}: the prompt has {p} tokens, more than max_prompt_length={prompt_length}.")
        if len(spans) != len(step_rewards[i]):
            raise ValueError(f"Episode {i}: {len(step_rewards[i])} step rewards for {len(spans)} turns.")
        prompt_ids[i, prompt_length - p:], prompt_mask[i, prompt_length - p:] = torch.as_tensor(conv[:p]), 1
        n = len(conv) - p
        response_ids[i, :n] = torch.as_tensor(conv[p:])
        attention[i, :n], loss_mask[i, :n] = 1.0, torch.as_tensor(assistant[p:], dtype=torch.float32)
        for (start, end), reward in zip(spans, step_rewards[i], strict=True):
            position = end - 1 - p if end > start else _reward_position(assistant[p:], start - p)
            token_rewards[i, position] += float(reward)
    return RolloutSamples(prompt_ids, prompt_mask, response_ids, loss_mask, token_rewards.sum(-1),
                          token_rewards=token_rewards, infos=list(final_infos), response_attention_mask=attention)


def turn_metrics(infos: list[dict], seconds_per_turn: float | None = None) -> dict[str, float]:
    """The multi-turn ``rollout/*`` metrics of a rollout's final infos (docs/metrics.md).

    ``rollout/num_turns`` (assistant turns per episode), ``rollout/env_tokens`` (env-inserted tokens per
    episode), and with a tool env ``rollout/tool_call_fraction`` (share of episodes with at least one call) and
    ``rollout/tool_calls`` (calls per episode); ``time/seconds_per_turn`` (one batched turn of every active
    episode: generation and env step) when given.
    """
    stats = {"rollout/num_turns": float(np.mean([i.get("turns", 0) for i in infos])),
             "rollout/env_tokens": float(np.mean([i.get("env_token_count", 0) for i in infos]))}
    if any("num_tool_calls" in i for i in infos):
        calls = np.array([i.get("num_tool_calls", 0) for i in infos], dtype=float)
        stats |= {"rollout/tool_call_fraction": float(np.mean(calls > 0)), "rollout/tool_calls": float(calls.mean())}
    if seconds_per_turn is not None:
        stats["time/seconds_per_turn"] = float(seconds_per_turn)
    return stats


def in_waves(env: VecEnv, problem_ids: np.ndarray, wave: Callable[[np.ndarray], RolloutSamples | None]
             ) -> RolloutSamples | None:
    """``wave(chunk)`` on consecutive chunks of ``num_envs`` problem ids, concatenated; None if one stopped."""
    waves = []
    for chunk in np.split(problem_ids, len(problem_ids) // env.num_envs):
        rows = wave(chunk)
        if rows is None:
            return None
        waves.append(rows)
    return RolloutSamples.concat(waves)


def play_wave(model, vec_env: VecEnv, problem_ids: list[int], do_sample: bool = False, temperature: float = 1.0,
              reuse_cache: bool = True, turn_seconds: list[float] | None = None):
    """Reset ``vec_env`` on ``problem_ids`` and play every episode to its end (evaluation, benchmarks).

    One row per episode (no group sharing), no callbacks, without grad, in the model's autocast region.

    Returns:
        ``(final_infos, step_rewards, sampler)``: :func:`run_turns`'s infos and rewards, and the
        :class:`~llm_gym.decoding.ConversationSampler` (its ``prefilled_tokens`` / ``n_rebuilds``).
    """
    lm, L = vec_env.get_attr("lm")[0], int(vec_env.get_attr("max_prompt_length")[0])
    vec_env.set_options([{"problem_id": int(k)} for k in problem_ids])
    obs = vec_env.reset()
    with torch.no_grad(), autocast_region(model):
        sampler = ConversationSampler(model, torch.as_tensor(obs["input_ids"][:, -L:]),
                                      torch.as_tensor(obs["attention_mask"][:, -L:]), 1, temperature, 1.0,
                                      lm.pad_token_id, lm.eos_token_id, do_sample=do_sample, reuse_cache=reuse_cache)
        _, infos, step_rewards = run_turns(vec_env, sampler, int(vec_env.get_attr("max_new_tokens")[0]),
                                           turn_seconds=turn_seconds)
    return infos, step_rewards, sampler


def _final_info(info: dict, n_calls: int) -> dict:
    """A copy of an episode's last info, with ``num_tool_calls`` (the episode's calls) for a tool env."""
    return {**info, "num_tool_calls": int(n_calls)} if "tool_calls" in info else dict(info)


def run_turns(env: VecEnv, sampler: ConversationSampler, max_new_tokens: int,
              on_step: Callable[[list, np.ndarray, int, np.ndarray], bool] | None = None,
              turn_seconds: list[float] | None = None):
    """Play a wave of multi-turn episodes (``env`` just reset) to the end, one batched turn at a time.

    Each iteration samples the next turn of every active episode (:meth:`ConversationSampler.sample_turn`),
    steps ``env`` with all of them, and feeds the env's answers back to the sampler
    (:meth:`ConversationSampler.extend`, which drops the episodes that ended).

    Args:
        env: a vector env of ``n`` multi-turn envs whose finished sub-envs are not auto-reset
            (:class:`~llm_gym.envs.vector.GroupVecEnv`, or a one-env ``DummyVecEnv``).
        sampler: the wave's sampler, built on the reset observations' prompts.
        max_new_tokens: ``T``, the token budget of one turn (the env's action length).
        on_step: called after every ``env.step`` with ``(infos, dones, active episodes, rewards)`` (``dones``
            and ``rewards`` of shape ``(n,)``); returning False stops the wave (a callback asked to stop training).
        turn_seconds: when given, the wall time of every batched turn (seconds) is appended.

    Returns:
        ``(final_obs, final_infos, step_rewards)``: each episode's final observation, last info (a copy;
        with ``num_tool_calls`` for a tool env) and list of step rewards; None when ``on_step`` stopped.
    """
    n = env.num_envs
    active = np.ones(n, dtype=bool)
    final_obs, final_infos = [None] * n, [None] * n
    step_rewards, n_calls = [[] for _ in range(n)], np.zeros(n, dtype=int)
    while active.any():
        start = time.perf_counter()
        obs, rewards, dones, infos = env.step(sampler.sample_turn(max_new_tokens).numpy())  # (n, T) turns
        conversations = {}
        for i in np.flatnonzero(active):
            step_rewards[i].append(float(rewards[i]))
            n_calls[i] += len(infos[i].get("tool_calls", ()))
            if dones[i]:
                final_obs[i], final_infos[i] = infos[i]["terminal_observation"], _final_info(infos[i], n_calls[i])
                conversations[i] = None
            else:
                conversations[i] = obs["input_ids"][i][obs["attention_mask"][i].astype(bool)].tolist()
        if on_step is not None and not on_step(infos, dones, int(active.sum()), rewards):
            return None
        active &= ~np.asarray(dones, dtype=bool)
        if active.any():
            sampler.extend(conversations)
        if turn_seconds is not None:
            turn_seconds.append(time.perf_counter() - start)
    return final_obs, final_infos, step_rewards


class TurnCollector:
    """Mixin of :class:`~agents.common.base.LLMAlgorithm`: multi-turn waves (see the module docstring).

    Reads ``self.policy``, ``self.lm``, ``self.config`` (``group_size``, ``temperature``, ``top_p``) and
    ``self.action_space_len``; uses the collector's ``_reset_to`` and ``_step_callbacks``. Sets
    ``self._turn_seconds`` (a list of seconds per batched turn, reset by the caller).
    """

    def _collect_turns(self, env: VecEnv, callback: BaseCallback, problem_ids: np.ndarray) -> RolloutSamples | None:
        """All ``N`` episodes in waves of ``num_envs``; None when a callback stopped training."""
        return in_waves(env, problem_ids, lambda chunk: self._turn_wave(env, callback, chunk))

    def _turn_wave(self, env: VecEnv, callback: BaseCallback, problem_ids: np.ndarray) -> RolloutSamples | None:
        """One wave: reset on ``problem_ids``, then batched turns until every episode has ended."""
        L = int(env.get_attr("max_prompt_length")[0])
        obs = self._reset_to(env, problem_ids)
        prompt_ids = torch.as_tensor(obs["input_ids"][:, -L:])  # (n, L) the reset conversation is the prompt
        prompt_mask = torch.as_tensor(obs["attention_mask"][:, -L:])  # (n, L)
        with gathered(self.policy), autocast_region(self.policy.model):  # (FSDP: whole weights) cast once
            sampler = ConversationSampler(self.policy.model, prompt_ids, prompt_mask, self.config.group_size,
                                          self.config.temperature, self.config.top_p, self.lm.pad_token_id,
                                          self.lm.eos_token_id)
            episodes = run_turns(env, sampler, self.action_space_len, on_step=lambda infos, dones, n_steps, rewards:
                                 self._step_callbacks(callback, infos, dones, n_steps, locals()),
                                 turn_seconds=self._turn_seconds)
        if episodes is None:
            return None
        final_obs, final_infos, step_rewards = episodes
        return turn_rollout_samples(final_obs, final_infos, step_rewards, L, self.lm.pad_token_id)

