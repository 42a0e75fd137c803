"""GroupVecEnv: N llm-gym envs sharing one model handle, reset in groups, stepped in synchronous waves.

Differences from SB3's ``DummyVecEnv``:

- **No automatic reset.** A sub-env whose episode ended is not stepped again and is not reset: until
  the next ``reset()`` / ``reset_groups()`` of the whole vector env, ``step`` returns its terminal
  observation, reward 0.0, ``done=False`` and ``info={"waiting": True}`` for it (the action given for it
  is ignored). The step where its episode ends returns ``done=True`` with ``info["terminal_observation"]``
  as in SB3. Reason: a token-level policy samples all N sequences as one batch with one KV cache; the
  batch (a *wave*) ends when every sequence has ended, and the next wave starts on problems the
  algorithm chooses (G consecutive sub-envs on one problem for group sampling), not on whatever an
  automatic reset would draw. :attr:`GroupVecEnv.active` tells which sequences still run and
  :attr:`GroupVecEnv.all_done` when the wave is over.
- **One model handle.** All sub-envs must hold the same :class:`~llm_gym.lm.LanguageModel` object
  (``get_language_model`` caches handles, so the same ``model=`` argument is enough).
- :meth:`GroupVecEnv.reset_groups` resets sub-env i on ``problem_ids[i]``.

With :class:`~llm_gym.envs.sequence.SequenceEnv` sub-envs every episode is one step, so a wave is a
single ``step`` call.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from copy import deepcopy
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.patch_gym import _patch_env
from stable_baselines3.common.vec_env.util import dict_to_obs, obs_space_info

__all__ = ["GroupVecEnv", "group_vec_env_like", "make_group_vec_env"]


class GroupVecEnv(VecEnv):
    """A batched, group-aware vector env over N llm-gym envs that share one model handle.

    See the module docstring for the wave semantics (no automatic reset). Observations are dicts of
    stacked arrays, ``(N, *shape)`` per key, as in ``DummyVecEnv``.

    Args:
        env_fns: N callables, each returning a new env (optionally wrapped, e.g. in ``Monitor``).

    Raises:
        ValueError: no env, the same instance returned twice, or sub-envs holding different
            ``LanguageModel`` handles.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]]):
        if not env_fns:
            raise ValueError("GroupVecEnv needs at least one env_fn.")
        self.envs = [_patch_env(fn()) for fn in env_fns]
        if len({id(env.unwrapped) for env in self.envs}) != len(self.envs):
            raise ValueError("The env_fns returned the same env instance more than once: each must build a new env.")
        handles = {id(env.unwrapped.lm) for env in self.envs if hasattr(env.unwrapped, "lm")}
        if len(handles) > 1:
            raise ValueError(
                f"The {len(self.envs)} sub-envs hold {len(handles)} different LanguageModel handles; they must "
                f"share one. Build them with the same model= (get_language_model caches handles) or pass the "
                f"handle itself as model=."
            )
        env = self.envs[0]
        super().__init__(len(env_fns), env.observation_space, env.action_space)
        self.keys, shapes, dtypes = obs_space_info(env.observation_space)
        self.buf_obs = OrderedDict(
            [(k, np.zeros((self.num_envs, *tuple(shapes[k])), dtype=dtypes[k])) for k in self.keys])
        self._active = np.zeros(self.num_envs, dtype=bool)
        self._started = False
        self.metadata = env.metadata
        self.actions: np.ndarray | None = None

    # ----------------------------------------------------------------- waves
    @property
    def active(self) -> np.ndarray:
        """``(N,)`` bool, True while sub-env i's episode runs (a copy)."""
        return self._active.copy()

    @property
    def all_done(self) -> bool:
        """True when no sub-env's episode runs (the wave is over, or no reset happened yet)."""
        return not self._active.any()

    def reset_groups(self, problem_ids: Sequence[int]) -> VecEnvObs:
        """Reset sub-env i on problem ``problem_ids[i]`` (G consecutive equal ids = one group of G).

        Seeds set with :meth:`seed` are used as in :meth:`reset`; other options set with
        :meth:`set_options` are replaced.

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
        """Reset every sub-env (with the seeds and options set by :meth:`seed` / :meth:`set_options`).

        Returns:
            The observations, a dict of ``(N, *shape)`` arrays. Every sub-env becomes active.
        """
        for i, env in enumerate(self.envs):
            maybe_options = {"options": self._options[i]} if self._options[i] else {}
            obs, self.reset_infos[i] = env.reset(seed=self._seeds[i], **maybe_options)
            self._save_obs(i, obs)
        self._reset_seeds()
        self._reset_options()
        self._active[:] = True
        self._started = True
        return self._obs_from_buf()

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions, ``(N,)`` token ids (token envs) or ``(N, T)`` responses (sequence envs)."""
        self.actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step the active sub-envs; finished ones return their terminal obs, 0.0, False, ``{"waiting": True}``.

        Returns:
            ``(obs, rewards (N,), dones (N,), infos)``.

        Raises:
            RuntimeError: ``step`` before the first ``reset`` / ``reset_groups``.
        """
        if not self._started:
            raise RuntimeError("Call reset() or reset_groups() before step().")
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        dones = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict[str, Any]] = []
        for i, env in enumerate(self.envs):
            if not self._active[i]:
                infos.append({"waiting": True})
                continue
            obs, rewards[i], terminated, truncated, info = env.step(self.actions[i])
            dones[i] = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if dones[i]:
                info["terminal_observation"] = obs
                self._active[i] = False
            self._save_obs(i, obs)
            infos.append(info)
        return self._obs_from_buf(), rewards, dones, deepcopy(infos)

    # ----------------------------------------------------------------- VecEnv plumbing
    def close(self) -> None:
        """Close every sub-env."""
        for env in self.envs:
            env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        """RGB images of the sub-envs (llm-gym envs render text, so usually a list of None)."""
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
        """Attribute of each target sub-env (looked up through wrappers)."""
        return [env.get_wrapper_attr(attr_name) for env in self._get_target_envs(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute on each target sub-env (the outermost wrapper, as ``DummyVecEnv``)."""
        for env in self._get_target_envs(indices):
            setattr(env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call a method of each target sub-env and return the results."""
        return [env.get_wrapper_attr(method_name)(*method_args, **method_kwargs)
                for env in self._get_target_envs(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Whether each target sub-env is wrapped in ``wrapper_class``."""
        from stable_baselines3.common import env_util

        return [env_util.is_wrapped(env, wrapper_class) for env in self._get_target_envs(indices)]

    def _get_target_envs(self, indices: VecEnvIndices) -> list[gym.Env]:
        return [self.envs[i] for i in self._get_indices(indices)]


def make_group_vec_env(env_id: str, n_envs: int, monitor: bool = True,
                       wrapper_class: Callable[..., gym.Env] | None = None, wrapper_kwargs: dict | None = None,
                       **env_kwargs: Any) -> GroupVecEnv:
    """Build a :class:`GroupVecEnv` of ``n_envs`` ``gym.make(env_id, **env_kwargs)`` envs on one handle.

    The first env is built with ``env_kwargs``; the others get its ``LanguageModel`` as ``model=``, so
    the tokenizer (and weights, once loaded) exist once.

    Args:
        env_id: a registered id, e.g. ``"LLMMathToken-v0"`` or ``"LLMMath-v0"``.
        n_envs: N, the number of sub-envs (``n_prompts x group_size`` for one wave).
        monitor: wrap each sub-env in SB3's ``Monitor`` (episode return and length in ``info["episode"]``).
        wrapper_class: applied to each sub-env as ``wrapper_class(env, **wrapper_kwargs)`` (inside the
            ``Monitor``), as in SB3's ``make_vec_env``; e.g. ``llm_gym.wrappers.TurnLimit``.
        wrapper_kwargs: keyword arguments of ``wrapper_class``.
        **env_kwargs: passed to ``gym.make``.

    Returns:
        The vector env (not reset yet).

    Raises:
        ValueError: ``n_envs < 1``.
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}.")
    from stable_baselines3.common.monitor import Monitor

    first = gym.make(env_id, **env_kwargs)
    shared = {**env_kwargs, "model": first.unwrapped.lm}

    def _wrap(env: gym.Env) -> gym.Env:
        if wrapper_class is not None:
            env = wrapper_class(env, **(wrapper_kwargs or {}))
        return Monitor(env) if monitor else env

    env_fns: list[Callable[[], gym.Env]] = [lambda: _wrap(first)]
    env_fns += [lambda: _wrap(gym.make(env_id, **shared)) for _ in range(n_envs - 1)]
    return GroupVecEnv(env_fns)


#: Wrappers ``gym.make`` adds by itself: an env wrapped only in these is rebuilt exactly from its spec.
_MAKE_WRAPPERS = (gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker)


def group_vec_env_like(env: gym.Env, n_envs: int, monitor: bool = True) -> GroupVecEnv | None:
    """A :class:`GroupVecEnv` of ``n_envs`` copies of ``env`` (``env`` itself is the first), or None.

    Multi-turn rollouts sample the next turn of every episode in one batch, which needs one sub-env per
    episode. A user who passes one env made with ``gym.make(env_id, **kwargs)`` gets the same result as
    :func:`make_group_vec_env` ``(env_id, n_envs, **kwargs)``: the other copies are built from ``env.spec``
    with ``env``'s model handle, wrappers that record their arguments (llm-gym's and gymnasium's, e.g.
    ``TurnLimit``) included. When ``env`` has no spec (built from the class) or carries a wrapper the spec
    cannot rebuild (e.g. SB3's ``Monitor``), None is returned and the caller keeps the single env.

    Args:
        env: a gymnasium env (not a VecEnv).
        n_envs: sub-envs wanted, >= 1.
        monitor: wrap each sub-env in SB3's ``Monitor``.

    Returns:
        The vector env (not reset), or None.
    """
    from stable_baselines3.common.monitor import Monitor

    try:
        spec = env.spec  # with the wrappers that record their arguments (gymnasium's additional_wrappers)
    except Exception:  # noqa: BLE001 - a wrapper that cannot be described: no spec
        spec = None
    if spec is None or n_envs < 1:
        return None
    model = env.unwrapped.lm

    def _copy() -> gym.Env:
        return gym.make(spec, model=model)

    try:
        if n_envs > 1 and _wrapper_chain(_copy()) != _wrapper_chain(env):  # a wrapper the spec did not rebuild
            return None
    except ValueError:  # gymnasium: a wrapper that does not record its arguments cannot be recreated
        return None

    def _wrap(sub: gym.Env) -> gym.Env:
        return Monitor(sub) if monitor else sub

    env_fns: list[Callable[[], gym.Env]] = [lambda: _wrap(env)]
    env_fns += [lambda: _wrap(_copy()) for _ in range(n_envs - 1)]
    return GroupVecEnv(env_fns)


def _wrapper_chain(env: gym.Env) -> list[type]:
    """The classes of ``env``'s wrappers, outermost first, without the ones ``gym.make`` adds itself."""
    chain = []
    while isinstance(env, gym.Wrapper):
        if not isinstance(env, _MAKE_WRAPPERS):
            chain.append(type(env))
        env = env.env
    return chain
