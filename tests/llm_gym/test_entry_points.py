"""Third-party envs by entry point: a real package installed with pip, then `import llm_gym` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llm_gym.plugins import ENTRY_POINT_GROUP

PYPROJECT = f"""
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "llm-gym-tiny-plugin"
version = "0.0.1"

[project.entry-points."{ENTRY_POINT_GROUP}"]
"TinyPlugin-v0" = "tiny_plugin_envs:TinyGuessEnv"
"LLMMath-v0" = "tiny_plugin_envs:TinyGuessEnv"
tiny_hook = "tiny_plugin:register_envs"
broken = "tiny_plugin:broken_hook"
missing = "tiny_plugin_not_installed:register_envs"

[tool.setuptools]
py-modules = ["tiny_plugin", "tiny_plugin_envs"]
"""
HOOKS = '''
import gymnasium as gym


def register_envs():
    gym.register("TinyPluginHook-v0", entry_point="tiny_plugin_envs:TinyGuessEnv", kwargs={"max_turns": 2})


def broken_hook():
    raise RuntimeError("this plugin is broken")
'''
ENVS = '''
from llm_gym.envs.multiturn import GuessNumberEnv


class TinyGuessEnv(GuessNumberEnv):
    """Guess a number in 1..3."""

    def __init__(self, **kwargs):
        super().__init__(low=1, high=3, **kwargs)
'''
# Run with the plugin on sys.path: import llm_gym, then make the plugin's envs.
SCRIPT = '''
import json, sys, warnings

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import llm_gym
lazy = "tiny_plugin_envs" not in sys.modules
import gymnasium as gym

kwargs = {"model": sys.argv[1], "device": "cpu", "max_prompt_length": None}
env = gym.make("TinyPlugin-v0", **kwargs)
hook = gym.make("TinyPluginHook-v0", **kwargs)
_, info = env.reset(seed=0)
print(json.dumps({
    "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
    "lazy": lazy,
    "plugin_ids": list(llm_gym.plugin_env_ids()),
    "env": [type(env.unwrapped).__name__, env.unwrapped.high, env.unwrapped.max_turns],
    "hook": [type(hook.unwrapped).__name__, hook.unwrapped.max_turns],
    "math": gym.spec("LLMMath-v0").entry_point,
    "answer": info["answer"],
}))
'''


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    """The tiny plugin package, pip-installed (no network: --no-build-isolation --no-deps) into a folder."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "src"
    source.mkdir()
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "tiny_plugin.py").write_text(HOOKS)
    (source / "tiny_plugin_envs.py").write_text(ENVS)
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps",
                    "--no-index", "--target", str(target), str(source)], check=True, timeout=120)
    assert (target / "llm_gym_tiny_plugin-0.0.1.dist-info" / "entry_points.txt").is_file()
    return target


def test_plugin_envs_are_registered_by_import_llm_gym_and_a_broken_one_only_warns(plugin_dir, tiny_model_dir):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(tiny_model_dir)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    # "Name-vN" entry points: registered without importing the plugin; gym.make imports it
    assert out["lazy"] and out["env"] == ["TinyGuessEnv", 3, 7] and out["answer"] in ("1", "2", "3")
    # a hook: called at import, registers what it likes (with its kwargs)
    assert out["hook"] == ["TinyGuessEnv", 2]
    assert out["plugin_ids"] == ["TinyPlugin-v0", "TinyPluginHook-v0"]
    # llm-gym's own ids win; broken plugins are skipped with a warning naming them
    assert out["math"] == "llm_gym.envs.sequence:SequenceEnv"
    warnings = "\n".join(out["warnings"])
    assert "PluginWarning: llm_gym plugin 'llm-gym-tiny-plugin: broken = tiny_plugin:broken_hook' failed to " \
           "load and was skipped: RuntimeError: this plugin is broken" in warnings
    assert "'llm-gym-tiny-plugin: missing = tiny_plugin_not_installed:register_envs' failed to load" in warnings
    assert "ModuleNotFoundError" in warnings
    assert "env id 'LLMMath-v0' is already registered; the existing registration is kept" in warnings


def test_module_colon_env_id_works_with_gym_make(tiny_model_dir):
    import gymnasium as gym

    env = gym.make("llm_gym:LLMGuessNumber-v0", model=str(tiny_model_dir), device="cpu", max_prompt_length=None)
    assert type(env.unwrapped).__name__ == "GuessNumberEnv"
