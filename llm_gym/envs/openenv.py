"""OpenEnv environments as multi-turn envs: :class:`OpenEnvEnv` (``"LLMOpenEnv-v0"``).

A thin adapter over the ``openenv-core`` package (an optional extra: ``pip install -e ".[tasks]"``): the
OpenEnv environment (a server, or an ``Environment`` class run in this process) keeps its rules, observations
and rewards; llm-gym keeps the tokens. See :class:`OpenEnvEnv`.
"""

from __future__ import annotations

import functools
import inspect
import os
import typing
from collections.abc import Callable, Mapping
from typing import Any

from llm_gym.envs.external import ExternalEpisodeEnv
from llm_gym.envs.multiturn.base import TurnResult
from llm_gym.lm import LanguageModel
from llm_gym.validation import check_real

__all__ = ["OpenEnvEnv", "OpenEnvError", "OpenEnvTimeoutError", "import_openenv"]

_EXTRA = 'pip install -e ".[tasks]" (or pip install openenv-core==0.2.0)'
# A step/reset result as OpenEnv serializes it: {"observation": {...}, "reward": float | None, "done": bool}.
StepPayload = dict[str, Any]


class OpenEnvError(RuntimeError):
    """The OpenEnv environment failed: a server error, a lost connection, or a session closed after an error."""


class OpenEnvTimeoutError(OpenEnvError, TimeoutError):
    """The OpenEnv server did not answer within ``timeout`` seconds."""


def import_openenv(owner: str = "OpenEnvEnv") -> Any:
    """The ``openenv.core`` module (openenv-core), or an ImportError naming the extra that installs it.

    Raises:
        ImportError: openenv-core is not installed (the message says ``pip install -e ".[tasks]"``), or its
            client is the asynchronous one of openenv-core >= 0.2.1 (the message names the supported version).
    """
    try:
        from openenv import core
    except ImportError as exc:
        raise ImportError(f"{owner} needs the openenv-core package, an optional extra of llm-gym: {_EXTRA}.") from exc
    if inspect.iscoroutinefunction(core.EnvClient.reset):
        raise ImportError(f"{owner} drives openenv-core 0.2.0's synchronous EnvClient; the installed openenv-core "
                          f"has an asynchronous one. {_EXTRA}.")
    return core


@functools.cache
def _dict_client_class() -> type:
    """An ``openenv.core.EnvClient`` that sends action dicts and returns the server's result dicts as they are."""
    core = import_openenv()

    class DictClient(core.EnvClient):
        def _step_payload(self, action: Mapping[str, Any]) -> dict[str, Any]:
            return dict(action)

        def _parse_result(self, payload: dict[str, Any]) -> StepPayload:
            return payload

        def _parse_state(self, payload: dict[str, Any]) -> dict[str, Any]:
            return payload

    return DictClient


class _RemoteSession:
    """One WebSocket session with an OpenEnv server (openenv's ``EnvClient``), closed after any error."""

    def __init__(self, base_url: str, timeout: float, connect_timeout: float):
        self.base_url, self.timeout = base_url, timeout
        self._client = _dict_client_class()(base_url, connect_timeout_s=connect_timeout, message_timeout_s=timeout)
        self._broken = False

    def reset(self, seed: int) -> StepPayload:
        self._broken = False
        return self._call("reset", lambda: self._client.reset(seed=seed))

    def step(self, action: Mapping[str, Any]) -> StepPayload:
        if self._broken:
            raise OpenEnvError(f"The session with the OpenEnv server at {self.base_url} was closed after an "
                               f"error: call reset() to start a new episode.")
        return self._call("step", lambda: self._client.step(action))

    def _call(self, what: str, call: Callable[[], StepPayload]) -> StepPayload:
        from websockets.exceptions import ConnectionClosed

        try:
            return call()
        except BaseException as exc:  # every failure closes the session (a late answer would desynchronise it)
            self._broken = True
            self.close()
            where = f"the OpenEnv server at {self.base_url}"
            if isinstance(exc, TimeoutError):
                raise OpenEnvTimeoutError(f"{where} did not answer {what!r} within timeout={self.timeout} s; "
                                          f"the session was closed.") from exc
            if isinstance(exc, ConnectionClosed):
                raise OpenEnvError(f"Lost the connection to {where} during {what!r} ({exc}); the session was "
                                   f"closed.") from exc
            if isinstance(exc, ConnectionError):
                raise ConnectionError(f"Cannot reach {where} ({exc}). Is the server running (e.g. `uvicorn "
                                      f"my_env.server.app:app --host 127.0.0.1 --port 8000`)?") from exc
            if isinstance(exc, RuntimeError):  # EnvClient's "Server error: ... (code: ...)"
                raise OpenEnvError(f"{where} failed on {what!r}: {exc}. The session was closed.") from exc
            raise

    def close(self) -> None:
        self._client.close()


class _LocalSession:
    """An OpenEnv ``Environment`` run in this process, its results serialized as the server would send them."""

    def __init__(self, env: Any, action_cls: type | None):
        core = import_openenv()
        self.env = env() if callable(env) and not isinstance(env, core.Environment) else env
        if not isinstance(self.env, core.Environment):
            raise TypeError(f"OpenEnvEnv: env must be an openenv Environment subclass, instance or factory, got "
                            f"{type(self.env).__name__}.")
        self.action_cls = action_cls or typing.get_type_hints(type(self.env).step).get("action")
        if not (isinstance(self.action_cls, type) and issubclass(self.action_cls, core.Action)):
            raise TypeError(f"OpenEnvEnv: cannot tell the action class of {type(self.env).__name__} from its step() "
                            f"annotation ({self.action_cls!r}); pass action_cls=YourAction.")
        self._serialize = core.serialize_observation

    def reset(self, seed: int) -> StepPayload:
        return self._serialize(self.env.reset(seed=seed))

    def step(self, action: Mapping[str, Any]) -> StepPayload:
        return self._serialize(self.env.step(self.action_cls.model_validate(dict(action))))

    def close(self) -> None:
        self.env.close()


class OpenEnvEnv(ExternalEpisodeEnv):
    """An OpenEnv environment, one assistant turn per action: ``OpenEnvEnv(base_url=...)`` or ``env=MyEnv``.

    Backends: ``base_url`` (an OpenEnv server: one WebSocket session per gym env, through openenv's
    ``EnvClient``; a vector env of N copies needs a server with ``max_concurrent_envs >= N``), or ``env`` (an
    ``openenv.core.Environment`` subclass, factory or instance, run in this process; its results are
    serialized as a server would send them).

    Problems: one per reset seed (:class:`~llm_gym.envs.external.ExternalEpisodeEnv`: ``n_problems`` seeds
    from ``seed``, ``split="test"`` disjoint); the environment's ``reset(seed=...)`` must be reproducible. The
    prompt is the text of its first observation.

    Each turn: the turn's text becomes the action (``{action_field: text}``, or ``action_fn(text)``), the
    environment steps, and the text of its observation is the env message (a user message). Observation
    text: ``observation_fn(fields)``, else the field ``observation_field``, else the only field of the
    observation, else one ``"name: value"`` line per field (OpenEnv's ``reward``, ``done`` and ``metadata`` are
    not fields of it). The step's reward is the environment's (None = 0.0), component ``"env"``; ``done``
    terminates the episode, and its ``accuracy`` is 1.0 when the final reward is >= ``success_reward``.

    Errors: an unreachable server raises ``ConnectionError`` (naming the URL); no answer within ``timeout``
    seconds raises :class:`OpenEnvTimeoutError`; a server error or a lost connection raises
    :class:`OpenEnvError`. Each closes the session (the next ``reset`` opens a new one), as do ``close()`` and
    a failed constructor.

    Info (every step): ``env_observation`` (the observation's fields) and ``success`` (True only on a final
    turn that reached ``success_reward``).

    Args:
        model: As :class:`~llm_gym.envs.multiturn.MultiTurnEnv`.
        base_url: The server's URL (``"http://127.0.0.1:8000"``; ``ws://`` works too).
        env: Instead of ``base_url``: an ``Environment`` subclass, factory or instance run in this process.
        action_field: The action field the turn's text fills (default ``"message"``).
        action_fn: Instead: ``text -> action fields`` (a dict), for actions with several fields.
        action_cls: With ``env``: the ``Action`` class (default: the annotation of the env's ``step``).
        observation_field: The observation field shown to the model (default: see above).
        observation_fn: Instead: ``observation fields -> text``.
        success_reward: Final reward that counts as a success (``accuracy`` 1.0), a finite number.
        timeout: Seconds the server may take to answer one reset or step, > 0.
        connect_timeout: Seconds to open the session, > 0.
        n_problems: Number of reset seeds (problems), an integer >= 1 (each is reset once at construction).
        max_turns: As MultiTurnEnv (default 8).
        **kwargs: ExternalEpisodeEnv's, MultiTurnEnv's and SequenceEnv's arguments.

    Raises:
        ImportError: openenv-core is not installed (names the extra).
        ValueError: neither or both of ``base_url`` and ``env``, a bad number, or any ExternalEpisodeEnv error.
        TypeError: ``env`` is not an OpenEnv environment, or its action class cannot be told.
        ConnectionError, OpenEnvError, OpenEnvTimeoutError: as above, while resetting the seeds.
    """

    source = "openenv"

    def __init__(
        self,
        model: str | os.PathLike | LanguageModel | None = None,
        base_url: str | None = None,
        env: Any = None,
        action_field: str = "message",
        action_fn: Callable[[str], Mapping[str, Any]] | None = None,
        action_cls: type | None = None,
        observation_field: str | None = None,
        observation_fn: Callable[[dict[str, Any]], str] | None = None,
        success_reward: float = 1.0,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        n_problems: int = 16,
        max_turns: int = 8,
        **kwargs: Any,
    ):
        owner = type(self).__name__
        import_openenv(owner)
        if (base_url is None) == (env is None):
            raise ValueError(f"{owner}: pass exactly one of base_url (an OpenEnv server) and env (an OpenEnv "
                             f"Environment class run in this process).")
        self.success_reward = check_real("success_reward", success_reward, owner=owner)
        timeout = check_real("timeout", timeout, minimum=0, min_inclusive=False, owner=owner)
        connect_timeout = check_real("connect_timeout", connect_timeout, minimum=0, min_inclusive=False, owner=owner)
        self.base_url, self.action_field, self.observation_field = base_url, action_field, observation_field
        self._action_fn, self._observation_fn = action_fn, observation_fn
        self._session = (_RemoteSession(base_url, timeout, connect_timeout) if base_url is not None
                         else _LocalSession(env, action_cls))
        try:
            super().__init__(model, n_problems=n_problems, max_turns=max_turns, **kwargs)
        except BaseException:
            self._session.close()
            raise
        self.task = base_url or type(self._session.env).__name__

    def observation_text(self, fields: dict[str, Any]) -> str:
        """The text shown to the model for an observation's fields (see the class docstring).

        Raises:
            ValueError: ``observation_field`` is not a field of the observation (names the fields).
        """
        if self._observation_fn is not None:
            return str(self._observation_fn(fields))
        if self.observation_field is not None:
            if self.observation_field not in fields:
                raise ValueError(f"OpenEnvEnv: observation_field={self.observation_field!r} is not a field of the "
                                 f"observation; its fields are {sorted(fields)}.")
            return str(fields[self.observation_field])
        if len(fields) == 1:
            return str(next(iter(fields.values())))
        return "\n".join(f"{name}: {value}" for name, value in fields.items())

    def start_episode(self, seed: int) -> str:
        """Reset the environment with ``seed``; the text of its first observation."""
        return self.observation_text(self._session.reset(seed).get("observation") or {})

    def respond(self, turn_text: str) -> TurnResult:
        """Send the turn as the action; the observation's text, or (done) the final reward.

        Raises:
            OpenEnvError, OpenEnvTimeoutError, ConnectionError: the server failed (see the class docstring).
        """
        action = self._action_fn(turn_text) if self._action_fn is not None else {self.action_field: turn_text}
        result = self._session.step(action)
        fields = result.get("observation") or {}
        reward = 0.0 if result.get("reward") is None else float(result["reward"])
        if not result.get("done", False):
            info = {"env_observation": fields, "success": False}
            return TurnResult(self.observation_text(fields), reward, {"env": reward}, info=info)
        success = reward >= self.success_reward
        return TurnResult(None, reward, {"env": reward}, accuracy=float(success),
                          info={"env_observation": fields, "success": success})

    def close(self) -> None:
        """Close the session (the server's env instance is released)."""
        self._session.close()
        super().close()
