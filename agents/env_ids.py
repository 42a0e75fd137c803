"""Env ids of the ``llm-gym`` commands and checks: a registered id, a plugin's id, or Gymnasium's ``module:EnvId``.

Shared by ``llm-gym train``, ``llm-gym eval`` and ``llm-gym check`` (and so ``scripts/train.py`` and
``scripts/evaluate.py``). Every function here runs before a model loads: the id is resolved (the module of a
``module:EnvId`` is imported, then the bare id looked up in ``gymnasium.registry``), the keywords the command
would pass are fitted to what the env's constructor takes, and a held-out split is checked to really be held
out.

>>> bare_id("my_package.envs:MyGame-v0"), bare_id("LLMMath-v0")
('MyGame-v0', 'LLMMath-v0')
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from collections.abc import Mapping
from typing import Any

import gymnasium as gym

__all__ = ["EnvError", "accepted_keywords", "bare_id", "check_env_id", "entry_point_class", "fit_kwargs",
           "known_env_ids", "parse_env_kwargs", "require_llm_env", "split_dataset"]


class EnvError(ValueError):
    """An env id, keyword or split the command cannot use; the message names it and the fix."""


def bare_id(env_id: str) -> str:
    """The registry id of ``env_id``: ``"pkg.mod:Name-v0"`` -> ``"Name-v0"`` (Gymnasium's ``module:EnvId`` form)."""
    return env_id.split(":")[-1]


def known_env_ids() -> tuple[str, ...]:
    """llm-gym's env ids and those of installed plugins (``llm_gym.envs`` entry points), in that order."""
    import llm_gym

    return (*llm_gym.ENV_IDS, *llm_gym.MULTITURN_ENV_IDS, *llm_gym.EXTRA_ENV_IDS, *llm_gym.plugin_env_ids())


def check_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
    """Resolve ``env_id`` to its registration, as ``gym.make`` would, without building the env.

    ``"module:EnvId"`` imports ``module`` first (it registers ``EnvId`` when imported), as ``gym.make`` does.

    Returns:
        The env's :class:`gymnasium.envs.registration.EnvSpec`.

    Raises:
        EnvError: the module cannot be imported, or the id is not registered; the message lists the ids
            llm-gym knows (its own and its plugins') and explains the ``module:EnvId`` form.
    """
    import llm_gym  # noqa: F401  (registers llm-gym's envs and its plugins')

    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise EnvError(f"env {env_id!r}: cannot import module {module!r} ({exc}). In the module:EnvId form, "
                           f"module is a Python module that registers EnvId when imported.") from exc
    if name not in gym.registry:
        raise EnvError(
            f"unknown env id {env_id!r}. Known: {', '.join(known_env_ids())}. Another package's env: install it "
            f"(its llm_gym.envs entry point registers its ids on `import llm_gym`) or write module:EnvId, where "
            f"importing module registers EnvId (e.g. my_package.envs:MyGame-v0).")
    return gym.spec(name)


def entry_point_class(spec: gym.envs.registration.EnvSpec) -> Any:
    """The object ``spec.entry_point`` names (a class or a factory), imported.

    Raises:
        EnvError: it cannot be imported (a missing optional extra, for one: the message is the import error's).
    """
    from gymnasium.envs.registration import load_env_creator

    entry = spec.entry_point
    if not isinstance(entry, str):
        return entry
    try:
        return load_env_creator(entry)
    except (ImportError, AttributeError) as exc:
        raise EnvError(f"env {spec.id!r}: its entry point {entry!r} cannot be loaded: {exc}") from exc


def accepted_keywords(creator: Any) -> frozenset[str] | None:
    """The keyword arguments ``creator`` (an env class or factory) takes; None when it takes any.

    A class's ``__init__`` that forwards ``**kwargs`` to its base (``MultiTurnEnv`` to ``LLMEnvBase``, a
    plugin's env to ``GuessNumberEnv``...) takes its base's keywords too: the classes of the MRO are read until
    one has no ``**kwargs``. A class with ``validates_extra_keywords = True`` takes any keyword: its
    ``**kwargs`` are its own settings, which it checks itself (``LLMReasoningGym-v0``'s dataset config).
    """
    if getattr(creator, "validates_extra_keywords", False):
        return None  # its **kwargs are its own settings (e.g. a reasoning-gym dataset's config), checked by it
    names: set[str] = set()
    if inspect.isclass(creator):  # object.__init__ takes nothing: a chain of **kwargs ends there
        chain = [c.__init__ for c in creator.__mro__ if c is not object and "__init__" in vars(c)]
    else:
        chain = [creator]
    for function in chain:
        try:
            params = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):  # a builtin: nothing to read
            return None
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return frozenset(names - {"self"})
    return frozenset(names - {"self"}) if inspect.isclass(creator) else None


def fit_kwargs(spec: gym.envs.registration.EnvSpec, kwargs: Mapping[str, Any], given: Mapping[str, str],
               ) -> dict[str, Any]:
    """``kwargs`` without the llm-gym keywords the env does not take; a keyword the user gave must be taken.

    Args:
        spec: The env's registration (:func:`check_env_id`).
        kwargs: What the command would pass to ``gym.make`` (``model``, ``device``, ``split``... and the
            keywords of the user's flags).
        given: ``keyword -> flag`` for the keywords the user asked for (``{"difficulty": "--difficulty"}``,
            ``{"game": "--env-kwargs"}``): refused, not dropped, when the env does not take them.

    Returns:
        The keywords to pass.

    Raises:
        EnvError: a keyword of ``given`` that the env does not take (names the flag and the env's keywords).
    """
    accepted = accepted_keywords(entry_point_class(spec))
    if accepted is None:
        return dict(kwargs)
    accepted = accepted | set(spec.kwargs)
    refused = [key for key in kwargs if key in given and key not in accepted]
    if refused:
        flags = ", ".join(f"{given[k]} ({k}=)" for k in refused)
        raise EnvError(f"env {spec.id!r} does not take {flags}; its keywords: {', '.join(sorted(accepted))}. Drop "
                       f"the flag, or pass keywords it takes with --env-kwargs.")
    return {key: value for key, value in kwargs.items() if key in accepted}


def parse_env_kwargs(text: str | None) -> dict[str, Any]:
    """The ``--env-kwargs`` JSON object (``'{"game": "GuessTheNumber-v0"}'``) as a dict; ``{}`` for None.

    Raises:
        EnvError: not valid JSON, or not a JSON object.
    """
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EnvError(f"--env-kwargs must be a JSON object such as '{{\"game\": \"GuessTheNumber-v0\"}}', got "
                       f"{text!r} ({exc}).") from None
    if not isinstance(value, dict):
        raise EnvError(f"--env-kwargs must be a JSON object (keyword -> value), got {type(value).__name__}: {text!r}.")
    return value


def split_dataset(spec: gym.envs.registration.EnvSpec, kwargs: dict[str, Any], split: str) -> dict[str, Any]:
    """``kwargs`` for ``split`` of an env whose problems come from ``dataset=``: never the training problems again.

    A ``dataset`` that is a mapping of split name -> dataset (``{"train": "train.jsonl", "test": "test.jsonl"}``
    from ``--env-kwargs``) is replaced by its ``split`` entry; a ``datasets.DatasetDict`` is left to the env
    (it takes the split itself) once it is known to hold ``split``. A single file, list or ``Dataset`` has no
    splits: it is the training set, so only ``split="train"`` may read it.

    Returns:
        ``kwargs`` (a copy), with ``dataset`` replaced when it was a mapping of splits.

    Raises:
        EnvError: ``split`` other than ``"train"`` on a dataset without splits, or a mapping without ``split``
            (the message names the fix).
    """
    dataset = kwargs.get("dataset", spec.kwargs.get("dataset"))
    if dataset is None:
        return dict(kwargs)
    if isinstance(dataset, Mapping):
        if split not in dataset:
            raise EnvError(f"env {spec.id!r}: its dataset has the splits {list(dataset)}, not {split!r}. Add a "
                           f"{split!r} entry, or ask for one of those splits.")
        if type(dataset) is dict:  # our {"split": source} convention; a DatasetDict picks its split in the env
            return {**kwargs, "dataset": dataset[split]}
        return dict(kwargs)
    if split == "train":
        return dict(kwargs)
    shown = os.fspath(dataset) if isinstance(dataset, (str, os.PathLike)) else f"a {type(dataset).__name__}"
    raise EnvError(
        f"env {spec.id!r} reads its problems from dataset={shown!r}, which has no splits: split={split!r} would "
        f"be the training problems again. Give the splits, e.g. --env-kwargs "
        f"'{{\"dataset\": {{\"train\": \"train.jsonl\", \"test\": \"test.jsonl\"}}}}' (or a datasets.DatasetDict "
        f"with a {split!r} split), or read that dataset as it is with the train split.")


def require_llm_env(env: gym.Env | type, env_id: str) -> None:
    """Refuse an env that is not an llm-gym env (:class:`~llm_gym.envs.common.LLMEnvBase`, multi-turn included).

    Args:
        env: A built env (its ``unwrapped`` is checked), or an entry point (:func:`entry_point_class`: a class is
            checked before anything is built; a factory passes until its env is built).
        env_id: The id, for the message.

    Raises:
        EnvError: another kind of env (the commands need its tokenizer, problems and response scoring).
    """
    from llm_gym.envs.common import LLMEnvBase

    if isinstance(env, gym.Env):
        kind = type(env.unwrapped)
    elif inspect.isclass(env):
        kind = env
    else:
        return
    if not issubclass(kind, LLMEnvBase):
        raise EnvError(
            f"env {env_id!r} is a {kind.__module__}.{kind.__name__}, not an llm-gym env: the commands "
            f"train, eval and check need an env built on llm_gym.envs.SequenceEnv, TokenEnv or "
            f"llm_gym.MultiTurnEnv (docs/custom-env.md).")
