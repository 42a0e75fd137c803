"""Process supervision as a wrapper: turn step rewards on for an existing llm-gym env."""

from __future__ import annotations

import gymnasium as gym

from llm_gym.envs.multiturn import is_multi_turn
from llm_gym.rewards.process import ProcessRewardFunction

__all__ = ["ProcessReward"]


class ProcessReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Score every reasoning step of each response with ``scorer`` (process supervision).

    Equivalent to building the env with ``process_reward_fn=scorer, step_delimiter=delimiter``: the
    wrapper sets them on the unwrapped env (:meth:`~llm_gym.envs.common.LLMEnvBase.set_process_reward_fn`),
    which splits responses into steps and reports ``info["step_rewards"]`` (``(token_index, reward)`` at
    each step's last token). A :class:`~llm_gym.envs.sequence.SequenceEnv` keeps the outcome reward as
    its reward (algorithms read the step rewards from ``info``); a
    :class:`~llm_gym.envs.token.TokenEnv` pays each step reward on its token. Because the setting lives in
    the base env, the wrapper composes with any other wrapper, inside or outside it, and applies to every
    wrapper stack around the same env instance; a second ``ProcessReward`` replaces the first scorer.

    Multi-turn envs (:class:`~llm_gym.envs.multiturn.MultiTurnEnv`) are rejected: they score whole turns
    and report no step rewards (``info["step_rewards"]`` is always ``[]``), so the scorer would never be
    called and the wrapper would silently do nothing.

    Args:
        env: An llm-gym env (``SequenceEnv`` or ``TokenEnv``, possibly wrapped).
        scorer: A process reward function ``scorer(prompts, steps, answers, **problem_fields)`` returning
            one value (or None) per step (:class:`~llm_gym.rewards.process.ProcessRewardFunction`), e.g.
            :func:`~llm_gym.rewards.process.arithmetic_step_reward` or a process reward model.
        delimiter: The text that ends a step (``"\\n"``: one step per line).

    Raises:
        TypeError: ``env`` is not an llm-gym env, or ``scorer`` is not callable.
        ValueError: ``env`` is a multi-turn env, or ``delimiter`` is not a non-empty string.

    Example:
        >>> from llm_gym.rewards.arithmetic import arithmetic_step_reward
        >>> env = ProcessReward(gym.make("LLMMath-v0"), arithmetic_step_reward)  # doctest: +SKIP
    """

    def __init__(self, env: gym.Env, scorer: ProcessRewardFunction, delimiter: str = "\n"):
        gym.utils.RecordConstructorArgs.__init__(self, scorer=scorer, delimiter=delimiter)
        super().__init__(env)
        if not hasattr(env.unwrapped, "set_process_reward_fn"):
            raise TypeError(f"ProcessReward needs an llm-gym env (SequenceEnv or TokenEnv), got "
                            f"{type(env.unwrapped).__name__}.")
        if not callable(scorer):
            raise TypeError(f"ProcessReward: scorer must be a callable scorer(prompts, steps, answers, **fields), "
                            f"got {type(scorer).__name__}.")
        if is_multi_turn(env.observation_space):
            raise ValueError(
                f"ProcessReward: {type(env.unwrapped).__name__} is a multi-turn env, which has no process "
                f"supervision (each step is a whole turn and info['step_rewards'] is always []), so the scorer "
                f"would never be called. Score the final turn with an outcome wrapper (RewardFunction, "
                f"RewardModel) instead, or use ProcessReward on a single-turn SequenceEnv or TokenEnv.")
        env.unwrapped.set_process_reward_fn(scorer, delimiter)
        self.scorer, self.delimiter = scorer, delimiter
