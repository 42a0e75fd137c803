"""Rollout collection: sample ``n_prompts x group_size`` responses, step them through the env, one container out.

:class:`RolloutCollector` is the part of :class:`~agents.common.base.LLMAlgorithm` that talks to the env.
Sequence level: the prompts are encoded in one call, one batched ``generate`` (KV cache) samples all ``N``
responses, then each chunk of ``num_envs`` rows is reset once and stepped. A single sequence env is trained
through a :class:`~llm_gym.envs.vector.SequenceVecEnv` of ``N`` rows, so the rollout is one vector step and
its :class:`~llm_gym.scoring.ResponseScorer` calls every reward function once for all ``N`` responses;
``info["episode"]``, the wrappers and ``info`` are those of ``N`` separate ``env.step`` calls. Token level: waves of sub-envs
decoded token by token with the KV cache as the policy's state. Multi-turn: waves of conversations, one
batched turn at a time (:mod:`agents.common.turns`). DAPO's dynamic sampling (the group filter)
draws rounds until enough groups have mixed rewards.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from agents.common.advantages import informative_groups
from agents.common.buffers import RolloutSamples, last_token_index
from agents.common.distributed import all_gather_rows, is_distributed, world_size
from agents.common.fsdp import gathered
from agents.common.precision import autocast_region
from agents.common.turns import TurnCollector, in_waves, is_multi_turn
from llm_gym.decoding import GroupSampler
from llm_gym.envs.problems import TrainerState

__all__ = ["RolloutCollector", "rollout_metrics", "step_reward_tensors"]


class RolloutCollector(TurnCollector):
    """Mixin of :class:`~agents.common.base.LLMAlgorithm`: collection of one iteration's rollout.

    Reads ``self.env``, ``self.policy``, ``self.lm``, ``self.config`` (``n_prompts``, ``group_size``,
    ``dynamic_sampling``, ``max_sampling_rounds``), ``self._problem_rng`` and the SB3 counters.
    """

    def _sample_problems(self) -> np.ndarray:
        """Problem index of each of the N sequences: ``n_prompts`` draws, each repeated ``group_size`` times."""
        n_problems = self.env.get_attr("n_problems")[0]
        draws = self._problem_rng.integers(n_problems, size=self.config.n_prompts)
        return np.repeat(draws, self.config.group_size)

    def _reset_to(self, env: VecEnv, problem_ids: np.ndarray) -> dict[str, np.ndarray]:
        env.set_options([{"problem_id": int(k)} for k in problem_ids])
        return env.reset()

    def _step_callbacks(self, callback: BaseCallback, infos, dones, n_steps: int, local_vars: dict) -> bool:
        self.num_timesteps += n_steps * world_size()  # env steps over every rank (each steps the same count)
        if not is_distributed():  # with several ranks, collect_rollouts adds every rank's episodes at once
            self._update_info_buffer(infos, dones)
        callback.update_locals(local_vars)
        return callback.on_step()

    def _sequence_callbacks(self, callback: BaseCallback, env: VecEnv, infos, dones, local_vars: dict) -> bool:
        """The callback calls of one sequence-level vector step: one, or one per row for a single env's rows.

        A :class:`~llm_gym.envs.vector.SequenceVecEnv` (``steps_of_one_env``) is the user's single env serving
        the N rows of a rollout so they are scored in one call; to the callbacks its rows stay N steps of one
        env, as SB3 reports a single env (``CheckpointCallback(save_freq)`` counts responses).
        """
        if not getattr(env, "steps_of_one_env", False):
            return self._step_callbacks(callback, infos, dones, env.num_envs, local_vars)
        for r in range(len(infos)):
            row = {"infos": infos[r:r + 1], "dones": dones[r:r + 1], "rewards": local_vars["rewards"][r:r + 1]}
            if not self._step_callbacks(callback, row["infos"], row["dones"], 1, local_vars | row):
                return False
        return True

    def _collect_round(self, env: VecEnv, callback: BaseCallback) -> tuple[RolloutSamples, float] | None:
        """Draw ``n_prompts`` problems and sample ``group_size`` responses each: ``(rows, seconds)``, None if stopped.

        ``seconds`` is the generation time (sequence level) or the whole rollout's (token level, multi-turn).
        """
        problem_ids = self._sample_problems()  # (N,)
        if is_multi_turn(self.observation_space):
            start = time.perf_counter()
            rollout = self._collect_turns(env, callback, problem_ids)
            return None if rollout is None else (rollout, time.perf_counter() - start)
        if isinstance(self.action_space, spaces.Discrete):
            start = time.perf_counter()
            rollout = self._collect_tokens(env, callback, problem_ids)
            return None if rollout is None else (rollout, time.perf_counter() - start)
        return self._collect_sequences(env, callback, problem_ids)

    def _collect_groups(self, env: VecEnv, callback: BaseCallback
                        ) -> tuple[RolloutSamples, RolloutSamples, float] | None:
        """The training rollout, everything generated for it, and the generation time: the group filter.

        Without dynamic sampling both are one round. With it (DAPO arXiv:2503.14476 section 3.2, eq. 11),
        rounds of ``n_prompts`` groups are drawn and only groups whose rewards are not all equal are kept,
        until ``n_prompts`` are kept (the surplus of the last round is dropped) or ``max_sampling_rounds``
        rounds were drawn; then a ``UserWarning`` says how many were found and training uses those. Before
        the first round the env learns where training is (``set_trainer_state``: reward functions'
        ``trainer_state``, ``global_step`` = optimizer steps so far), when it has that method.

        With data parallelism every round's rows are gathered from all ranks (rank order), so the groups
        are counted globally (``world_size * n_prompts`` kept) and both results hold every rank's rows.
        """
        kept, generated, seconds = [], [], 0.0
        target = self.rollout_size * world_size()
        if env.has_attr("set_trainer_state"):  # reward functions' trainer_state (TRL's global_step)
            env.env_method("set_trainer_state", TrainerState(global_step=int(getattr(self, "_n_updates", 0)),
                                                             num_timesteps=int(self.num_timesteps)))
        for _ in range(self.config.max_sampling_rounds if self.config.dynamic_sampling else 1):
            collected = self._collect_round(env, callback)
            if collected is None:
                return None
            rollout, round_seconds = collected
            rollout = all_gather_rows(rollout)
            generated.append(rollout)
            seconds += round_seconds
            if not self.config.dynamic_sampling:
                return rollout, rollout, seconds
            informative = informative_groups(rollout.rewards.numpy(), self.config.group_size)  # (N,) bool
            kept.append(rollout.take(np.flatnonzero(informative)))
            if sum(r.n_sequences for r in kept) >= target:
                break
        else:
            n_found = sum(r.n_sequences for r in kept) // self.config.group_size
            ranks = f" x {world_size()} ranks" if is_distributed() else ""
            warnings.warn(f"Dynamic sampling: only {n_found} of n_prompts={self.config.n_prompts}{ranks} groups had "
                          f"mixed rewards "
                          f"after max_sampling_rounds={self.config.max_sampling_rounds} rounds "
                          f"({self.config.max_sampling_rounds * target} responses); training on those "
                          f"{n_found}. Raise max_sampling_rounds or use problems the policy sometimes solves.",
                          stacklevel=3)
        all_rows = RolloutSamples.concat(generated)
        self._dropped_groups = int(np.sum(~informative_groups(all_rows.rewards.numpy(), self.config.group_size))
                                   ) // self.config.group_size
        return RolloutSamples.concat(kept).take(np.arange(target)), all_rows, seconds

    def _collect_sequences(self, env: VecEnv, callback: BaseCallback, problem_ids: np.ndarray
                           ) -> tuple[RolloutSamples, float] | None:
        """Sequence level: one ``generate`` for all N, each chunk reset once and stepped (one scoring call each).

        With one chunk (``num_envs == N``) the prompts come from the reset; with several, from the env's batched
        prompt encoding (a reset is deterministic given ``problem_id``; each chunk's reset is checked against it).

        Raises:
            RuntimeError: a wrapper changed the prompt observation of a chunk (several chunks need the prompts
                before the resets; use ``llm_gym.make_group_vec_env`` with ``n_envs = N``).
        """
        chunks = np.split(problem_ids, len(problem_ids) // env.num_envs)
        if len(chunks) == 1:
            obs = self._reset_to(env, chunks[0])
            b_prompt_ids, b_prompt_mask = torch.as_tensor(obs["input_ids"]), torch.as_tensor(obs["attention_mask"])
        else:
            prompts, length = env.get_attr("prompts", [0])[0], env.get_attr("max_prompt_length", [0])[0]
            b_prompt_ids, b_prompt_mask = self.lm.encode_prompts([prompts[k] for k in problem_ids], length)  # (N, L)
        start = time.perf_counter()
        with gathered(self.policy):  # FSDP: whole weights while ranks sample different lengths
            gen = self.policy.sample_rollout(b_prompt_ids, b_prompt_mask, self.config.group_size)
        gen_seconds = time.perf_counter() - start
        b_response_ids = gen.response_ids.numpy()  # (N, T)
        b_rewards, b_infos = np.zeros(len(problem_ids), dtype=np.float32), []
        for c, chunk in enumerate(chunks):
            rows = slice(c * env.num_envs, (c + 1) * env.num_envs)
            if len(chunks) > 1:
                obs = self._reset_to(env, chunk)
                if not np.array_equal(obs["input_ids"], b_prompt_ids[rows].numpy()):
                    raise RuntimeError("A wrapper changed the prompt observation; with several chunks of sub-envs "
                                       "the prompts are encoded before the resets. Build the env with "
                                       "llm_gym.make_group_vec_env(env_id, n_envs=n_prompts*group_size).")
            _, rewards, dones, infos = env.step(b_response_ids[rows])  # callbacks see this step's infos, as in SB3
            b_rewards[rows], b_infos = rewards, b_infos + list(infos)
            if not self._sequence_callbacks(callback, env, infos, dones, locals()):
                return None
        rollout = RolloutSamples(b_prompt_ids, b_prompt_mask, gen.response_ids, gen.response_mask,
                                 torch.as_tensor(b_rewards), infos=b_infos)
        return rollout, gen_seconds

    def _collect_tokens(self, env: VecEnv, callback: BaseCallback, problem_ids: np.ndarray) -> RolloutSamples | None:
        """Token level: waves of ``num_envs`` sequences, each decoded token by token (KV cache, no prefix
        recomputation) and stepped through the env until every sequence of the wave has ended."""
        return in_waves(env, problem_ids, lambda chunk: self._token_wave(env, callback, chunk))

    def _token_wave(self, env: VecEnv, callback: BaseCallback, problem_ids: np.ndarray) -> RolloutSamples | None:
        n, lm = env.num_envs, self.lm
        T, L = self.action_space_len, env.get_attr("max_prompt_length")[0]
        obs = self._reset_to(env, problem_ids)
        prompt_ids = torch.as_tensor(obs["input_ids"][:, :L])  # (n, L)
        prompt_mask = torch.as_tensor(obs["attention_mask"][:, :L])  # (n, L)
        response = torch.full((n, T), lm.pad_token_id, dtype=torch.long)  # (n, T)
        token_rewards = torch.zeros((n, T))  # (n, T)
        active, final_infos = torch.ones(n, dtype=torch.bool), [{} for _ in range(n)]
        with gathered(self.policy), autocast_region(self.policy.model):  # (FSDP: whole weights) cast once
            sampler = GroupSampler(self.policy.model, prompt_ids, prompt_mask, self.config.group_size,
                                   self.config.temperature, self.config.top_p, lm.pad_token_id)
            return self._decode_wave(env, callback, sampler, prompt_ids, prompt_mask, response, token_rewards,
                                     active, final_infos)

    def _decode_wave(self, env, callback, sampler, prompt_ids, prompt_mask, response, token_rewards, active,
                     final_infos) -> RolloutSamples | None:
        """The token loop of a wave: sample, step every sub-env, advance the sampler until all have ended."""
        lm, T = self.lm, response.shape[1]
        for t in range(T):
            tokens = sampler.sample()  # pad for finished rows, as generate does
            _, rewards, dones, infos = env.step(tokens.numpy())
            response[active, t] = tokens[active]
            token_rewards[active, t] = torch.as_tensor(rewards, dtype=torch.float32)[active]
            for i in np.flatnonzero(dones):
                final_infos[i] = infos[i]
            if not self._step_callbacks(callback, infos, dones, int(active.sum()), locals()):
                return None
            active &= ~torch.as_tensor(dones)
            if not active.any():
                break
            sampler.advance(tokens, ~active)
        return RolloutSamples(prompt_ids, prompt_mask, response, lm.response_mask(response), token_rewards.sum(-1),
                              token_rewards=token_rewards, infos=final_infos)


def step_reward_tensors(rollout: RolloutSamples) -> RolloutSamples:
    """The rollout with process-supervision step rewards placed on their tokens (``token_rewards``, ``step_mask``).

    Without process supervision (no ``info["step_rewards"]``) the rollout is returned as it is. With it, every
    step reward ``(token_index, reward)`` is placed at its token and the outcome reward at the last token (the
    token env already paid them there), ``step_mask (N, T)`` marks those tokens, and ``rewards (N,)`` is the
    return ``token_rewards.sum(-1)`` at both levels.
    """
    if not any(info.get("step_rewards") for info in rollout.infos):
        return rollout
    n, t = rollout.response_mask.shape
    rows = torch.arange(n)
    last = last_token_index(rollout.response_mask)  # (N,)
    step_mask = torch.zeros((n, t))  # (N, T)
    step_mask[rows, last] = 1.0
    token_rewards = rollout.token_rewards
    if token_rewards is None:  # sequence level: the env reward is the outcome, step rewards are in info
        token_rewards = torch.zeros((n, t))  # (N, T)
        token_rewards[rows, last] = rollout.rewards.float()
    else:
        token_rewards = token_rewards.clone()
    for i, info in enumerate(rollout.infos):
        for index, reward in info.get("step_rewards", ()):
            step_mask[i, index] = 1.0
            if rollout.token_rewards is None:
                token_rewards[i, index] += float(reward)
    return rollout._replace(rewards=token_rewards.sum(-1), token_rewards=token_rewards, step_mask=step_mask)


def rollout_metrics(rewards: np.ndarray, group_ids: np.ndarray, infos: list[dict], response_mask: torch.Tensor,
                    gen_seconds: float) -> dict[str, float]:
    """The ``rollout/*`` and ``time/tokens_per_second`` metrics of one rollout (docs/metrics.md)."""
    lengths = response_mask.sum(-1).float()
    group_std = np.array([rewards[group_ids == g].std(ddof=1) if (group_ids == g).sum() > 1 else 0.0
                          for g in np.unique(group_ids)])
    stats = {
        "rollout/accuracy": float(np.mean([i.get("accuracy", np.nan) for i in infos])),
        "rollout/response_length": float(lengths.mean()),
        "rollout/truncated_fraction": float(np.mean([i.get("truncated_by_length", False) for i in infos])),
        "rollout/reward_std": float(group_std.mean()),
        "rollout/zero_std_groups": float(np.mean(group_std < 1e-8)),
        "time/tokens_per_second": float(lengths.sum()) / max(gen_seconds, 1e-9),
    }
    components = defaultdict(list)
    for info in infos:  # a multi-turn episode's components summed over its turns
        for name, value in info.get("episode_reward_components", info.get("reward_components", {})).items():
            components[name].append(value)
    stats |= {f"rollout/reward/{name}": float(np.mean(v)) for name, v in components.items()}
    levels = [info["curriculum_level"] for info in infos if "curriculum_level" in info]
    if levels:  # llm_gym.wrappers.Curriculum: the difficulty level reached
        stats["curriculum/level"] = float(max(levels))
    if any(info.get("step_rewards") for info in infos):  # process supervision
        steps = [[r for _, r in info.get("step_rewards", ())] for info in infos]
        stats["rollout/step_reward_sum"] = float(np.mean([sum(s) for s in steps]))
        stats["rollout/scored_steps"] = float(np.mean([len(s) for s in steps]))
    return stats
