"""Third-party envs by entry point: packages that declare ``llm_gym.envs`` entry points.

``import llm_gym`` calls :func:`load_plugins` after registering its own envs, so ``gym.make`` finds a
plugin's env ids as soon as ``llm_gym`` is imported. A package declares them in its ``pyproject.toml``::

    [project.entry-points."llm_gym.envs"]
    "MyGame-v0" = "my_package.envs:MyGameEnv"      # an env id: registered lazily, imported by gym.make
    my_package = "my_package.envs:register_envs"     # a hook: called at import, registers any ids it likes

An entry point whose name is a Gymnasium env id (``[namespace/]Name-vN``) is registered under that id with
its value as the entry point (``gymnasium.register(id, entry_point="module:attr")``): nothing of the plugin
is imported before ``gym.make``. Any other name is a hook: its value is loaded at import time and, when
callable, called with no arguments (a module entry point registers by being imported). A plugin that
fails (an import error, a hook that raises) is skipped with a :class:`PluginWarning` naming it; it never
breaks ``import llm_gym``. An id that is already registered (one of llm-gym's, or an earlier plugin's) is
kept as it is, with a warning.
"""

from __future__ import annotations

import re
import warnings
from importlib import metadata

from gymnasium.envs.registration import register, registry

__all__ = ["ENTRY_POINT_GROUP", "PluginWarning", "load_plugins", "plugin_env_ids"]

#: The entry-point group llm-gym reads.
ENTRY_POINT_GROUP = "llm_gym.envs"
# A Gymnasium env id with a version: "Name-v0", "namespace/Name-v12".
_ENV_ID = re.compile(r"(?:[\w:.-]+/)?[\w:.-]+-v\d+")
# plugin ("distribution: entry point name") -> env ids it registered; filled by load_plugins.
_LOADED: dict[str, tuple[str, ...]] = {}


class PluginWarning(UserWarning):
    """An ``llm_gym.envs`` entry point could not be loaded or registered; it was skipped."""


def _plugin_name(entry_point: metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    package = dist.metadata["Name"] if dist is not None else "?"
    return f"{package}: {entry_point.name} = {entry_point.value}"


def _load_one(entry_point: metadata.EntryPoint) -> tuple[str, ...]:
    """Register one entry point's envs; returns the ids it added. Raises whatever the plugin raises."""
    if _ENV_ID.fullmatch(entry_point.name):
        if entry_point.name in registry:
            warnings.warn(
                f"llm_gym plugin {_plugin_name(entry_point)!r}: env id {entry_point.name!r} is already "
                f"registered; the existing registration is kept.",
                PluginWarning,
                stacklevel=4,
            )
            return ()
        register(id=entry_point.name, entry_point=entry_point.value)
        return (entry_point.name,)
    before = set(registry)
    hook = entry_point.load()
    if callable(hook):
        hook()
    return tuple(sorted(set(registry) - before))


def load_plugins(group: str = ENTRY_POINT_GROUP) -> dict[str, tuple[str, ...]]:
    """Register the envs of every installed package's ``group`` entry points (idempotent per plugin).

    Args:
        group: The entry-point group (``"llm_gym.envs"``).

    Returns:
        ``plugin -> env ids it registered`` for every plugin loaded so far (``plugin`` is
        ``"distribution: name = value"``); a skipped plugin is not in it.

    Warns:
        PluginWarning: a plugin failed to load or register (named, with the error), or claims an id that is
            already registered.
    """
    for entry_point in metadata.entry_points(group=group):
        name = _plugin_name(entry_point)
        if name in _LOADED:
            continue
        try:
            _LOADED[name] = _load_one(entry_point)
        except Exception as exc:  # a broken plugin must not break `import llm_gym`
            warnings.warn(
                f"llm_gym plugin {name!r} failed to load and was skipped: {type(exc).__name__}: {exc}",
                PluginWarning,
                stacklevel=2,
            )
    return dict(_LOADED)


def plugin_env_ids() -> tuple[str, ...]:
    """Every env id registered by ``llm_gym.envs`` entry points so far, sorted."""
    return tuple(sorted({env_id for ids in _LOADED.values() for env_id in ids}))
