"""The SB3 ``VecEnv`` plumbing shared by llm-gym's vector envs: observation buffers, attribute access, episode
statistics kept at the vector level (:class:`~llm_gym.envs.episodes.EpisodeStats`, SB3 ``Monitor``'s numbers)."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Sequence
from copy import deepcopy
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common import env_util
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs
from stable_baselines3.common.vec_env.util import dict_to_obs, obs_space_info

from llm_gym.envs.episodes import EpisodeStats

__all__ = ["RowVecEnv"]


class RowVecEnv(VecEnv):
    """Base of :class:`~llm_gym.envs.vector.GroupVecEnv` and :class:`~llm_gym.envs.vector.SequenceVecEnv`.

    ``N`` rows, row ``i`` served by ``envs[i]`` (several rows may share one env when its episodes are pure
    functions of the problem and the response, as sequence-level ones are). Observations are dicts of stacked
    arrays, ``(N, *shape)`` per key, as in ``DummyVecEnv``.

    Episode statistics (``monitor=True``): the vector env adds SB3 ``Monitor``'s ``info["episode"]`` (``r``,
    ``l``, ``t``) itself on the step that ends an episode, with Monitor's exact numbers, for every row whose
    env stack has no ``Monitor`` of its own (:class:`~llm_gym.envs.episodes.EpisodeStats`, in :attr:`stats`);
    ``env_is_wrapped(Monitor)`` is True for those rows, as SB3's tools expect of a monitored env.

    Args:
        envs: ``N`` env stacks, one per row.
        monitor: Keep the episode statistics at the vector level.
    """

    #: True when the rows are steps of ONE env (:class:`~llm_gym.envs.vector.SequenceVecEnv`): the algorithms
    #: then report them to callbacks one by one, as SB3 reports a single env's steps.
    steps_of_one_env: bool = False

    def __init__(self, envs: Sequence[gym.Env], monitor: bool):
        self.envs = list(envs)
        env = self.envs[0]
        VecEnv.__init__(self, len(self.envs), env.observation_space, env.action_space)  # explicit: see SequenceVecEnv
        self.keys, shapes, dtypes = obs_space_info(env.observation_space)
        self.buf_obs = OrderedDict(
            [(k, np.zeros((self.num_envs, *tuple(shapes[k])), dtype=dtypes[k])) for k in self.keys])
        self.monitored = [bool(monitor) and not env_util.is_wrapped(e, Monitor) for e in self.envs]
        self.stats: EpisodeStats | None = EpisodeStats(self.num_envs) if any(self.monitored) else None
        self._started = False
        self.metadata = env.metadata
        self.actions: np.ndarray | None = None

    def reset_groups(self, problem_ids: Sequence[int]) -> VecEnvObs:
        """Reset row i on problem ``problem_ids[i]`` (G consecutive equal ids = one group of G).

        Seeds set with :meth:`seed` are used as in :meth:`reset`; other options set with :meth:`set_options`
        are replaced.

        Args:
            problem_ids: N problem indices, ``(N,)``.

        Returns:
            The observations, a dict of ``(N, *shape)`` arrays.

        Raises:
            ValueError: ``len(problem_ids) != N``, or an index outside a sub-env's problems.
        """
        if len(problem_ids) != self.num_envs:
            raise ValueError(f"reset_groups needs {self.num_envs} problem ids (one per sub-env), got {len(problem_ids)}.")
        self._options = [{"problem_id": int(k)} for k in problem_ids]
        return self.reset()

    def reset(self) -> VecEnvObs:
        """Reset every row (with the seeds and options set by :meth:`seed` / :meth:`set_options`).

        Returns:
            The observations, a dict of ``(N, *shape)`` arrays.
        """
        for i in range(self.num_envs):
            self._reset_row(i, self._seeds[i], self._options[i])
        self._reset_seeds()
        self._reset_options()
        self._started = True
        return self._obs_from_buf()

    def _reset_row(self, i: int, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        """Reset row ``i``'s env, store its observation and reset info, start its episode statistics."""
        maybe_options = {"options": options} if options else {}
        obs, self.reset_infos[i] = self.envs[i].reset(seed=seed, **maybe_options)
        self._save_obs(i, obs)
        if self.stats is not None and self.monitored[i]:
            self.stats.reset(i)

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions: ``(N,)`` token ids (token envs) or ``(N, T)`` responses / turns."""
        self.actions = actions

    def _record(self, i: int, result: tuple[Any, float, bool, bool, dict[str, Any]], rewards: np.ndarray,
                dones: np.ndarray) -> dict[str, Any]:
        """Row ``i``'s step result into the buffers (as ``DummyVecEnv`` and ``Monitor`` do); returns its info."""
        obs, reward, terminated, truncated, info = result
        rewards[i], dones[i] = reward, terminated or truncated
        if self.stats is not None and self.monitored[i]:
            self.stats.step(i, reward, bool(dones[i]), info)
        info["TimeLimit.truncated"] = truncated and not terminated
        if dones[i]:
            info["terminal_observation"] = obs
        self._save_obs(i, obs)
        return info

    # ----------------------------------------------------------------- VecEnv plumbing
    def close(self) -> None:
        """Close every env (once each)."""
        for env in {id(e): e for e in self.envs}.values():
            env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        """RGB images of the rows (llm-gym envs render text, so usually a list of None)."""
        if self.render_mode != "rgb_array":
            warnings.warn(f"The render mode is {self.render_mode}, but get_images() needs 'rgb_array'.", stacklevel=2)
            return [None for _ in self.envs]
        return [env.render() for env in self.envs]  # type: ignore[misc]

    def _save_obs(self, env_idx: int, obs: VecEnvObs) -> None:
        for key in self.keys:
            if key is None:
                self.buf_obs[key][env_idx] = obs
            else:
                self.buf_obs[key][env_idx] = obs[key]  # type: ignore[call-overload]

    def _obs_from_buf(self) -> VecEnvObs:
        return dict_to_obs(self.observation_space, deepcopy(self.buf_obs))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attribute of each target row's env (looked up through wrappers)."""
        return [env.get_wrapper_attr(attr_name) for env in self._get_target_envs(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute on each target row's env (the outermost wrapper, as ``DummyVecEnv``)."""
        for env in self._get_target_envs(indices):
            setattr(env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call a method of each target row's env and return the results."""
        return [env.get_wrapper_attr(method_name)(*method_args, **method_kwargs)
                for env in self._get_target_envs(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Whether each target row's env is wrapped in ``wrapper_class`` (``Monitor``: also when the vector
        env keeps Monitor's statistics for the row)."""
        return [env_util.is_wrapped(self.envs[i], wrapper_class) or (wrapper_class is Monitor and self.monitored[i])
                for i in self._get_indices(indices)]

    def _get_target_envs(self, indices: VecEnvIndices) -> list[gym.Env]:
        return [self.envs[i] for i in self._get_indices(indices)]
