"""Checkpoints that are plain data: loading one never runs code stored in it, and resuming from one is exact.

A checkpoint is a zip with three members:

* ``llm_gym.json``: the format tag and version, the algorithm's class name, its :class:`AlgorithmConfig`,
  SB3's plain arguments, the policy class name and ``policy_kwargs``, the spaces (shapes, dtypes, bounds),
  the counters (``num_timesteps``, optimizer steps, ...), the problem sampler's state and the Python and NumPy
  RNG states. JSON only: nothing is unpickled.
* ``policy.pt``, ``optimizer.pt``, ``torch_rng.pt``: ``torch.save`` tensors and dicts of tensors and numbers,
  read back with ``torch.load(weights_only=True)``, which refuses anything but tensors and primitive types.

SB3's own zip format (a ``data`` member with cloudpickled objects) is refused unless the caller passes
``trust_pickle=True`` for a file they trust (:func:`read_checkpoint`). docs/security.md says what is trusted.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.utils import check_for_correct_spaces

from agents.common.fsdp import full_state, is_sharded, load_full_state
from agents.common.precision import lora_from_dict, lora_to_dict

__all__ = ["FORMAT", "PickledCheckpointError", "capture_rng", "check_env_spaces", "describe_space", "read_checkpoint",
           "restore_rng", "space_from_description", "write_checkpoint"]

FORMAT, VERSION = "llm-gym-checkpoint", 1
META, TENSOR_FILES = "llm_gym.json", ("policy", "optimizer", "torch_rng")


class PickledCheckpointError(ValueError):
    """The file holds pickled Python objects (SB3's format), which could run code when loaded."""


def capture_rng() -> dict[str, Any]:
    """The global RNG states: ``{"python": JSON, "numpy": JSON, "torch": uint8 tensor, "cuda": [tensors]}``."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global Python, NumPy and torch (and CUDA, when both have it) RNGs from :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def describe_space(space: spaces.Space) -> dict[str, Any]:
    """A JSON description of a ``Dict`` / ``Box`` / ``Discrete`` space (what SB3 compares on load).

    Raises:
        TypeError: another space type, or a ``Box`` whose bounds are not one value each.
    """
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: describe_space(v) for k, v in space.spaces.items()}}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n)}
    if isinstance(space, spaces.Box) and np.unique(space.low).size == 1 and np.unique(space.high).size == 1:
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": space.low.flat[0].item(), "high": space.high.flat[0].item()}
    raise TypeError(f"Cannot describe {space!r} as plain data (llm-gym checkpoints hold Dict, Box, Discrete).")


def space_from_description(desc: dict[str, Any]) -> spaces.Space:
    """The space :func:`describe_space` described."""
    if desc["type"] == "Dict":
        return spaces.Dict({k: space_from_description(v) for k, v in desc["spaces"].items()})
    if desc["type"] == "Discrete":
        return spaces.Discrete(desc["n"])
    return spaces.Box(desc["low"], desc["high"], shape=tuple(desc["shape"]), dtype=np.dtype(desc["dtype"]))


def check_env_spaces(env: Any, observation_space: spaces.Space, action_space: spaces.Space,
                     owner: str = "the checkpoint") -> None:
    """Check that ``env`` (a gymnasium env or a VecEnv) has the spaces a model was built for.

    Args:
        env: the env to attach.
        observation_space, action_space: the model's (saved) spaces.
        owner: who holds the spaces, for the message (``"the checkpoint"``, ``"the model"``).

    Raises:
        ValueError: the spaces differ; the message shows both and says how to make a matching env.
    """
    try:
        check_for_correct_spaces(env, observation_space, action_space)
    except ValueError as err:
        raise ValueError(
            f"The env's spaces differ from {owner}'s: {err}. Make the env with the training run's env id and "
            f"arguments (same max_new_tokens and max_prompt_length, sequence vs token level); to evaluate on "
            f"another budget, load with custom_objects={{'observation_space': env.observation_space, "
            f"'action_space': env.action_space}}.") from err


def write_checkpoint(path: Path, meta: dict[str, Any], tensors: dict[str, Any]) -> None:
    """Write ``meta`` (JSON) and ``tensors`` (``policy``, ``optimizer``, ``torch_rng``) into the zip ``path``.

    Raises:
        TypeError: ``meta`` is not JSON-serialisable (names the offending value).
    """
    try:
        text = json.dumps({"format": FORMAT, "version": VERSION, **meta}, indent=1, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"Checkpoint metadata must be plain JSON data: {exc}. Pass JSON-able policy_kwargs "
                        f"(numbers, strings, lists, dicts).") from exc
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(META, text)
        for name in TENSOR_FILES:
            buffer = io.BytesIO()
            torch.save(tensors[name], buffer)
            archive.writestr(f"{name}.pt", buffer.getvalue())


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """``(meta, tensors)`` of an llm-gym checkpoint, without unpickling anything.

    Raises:
        FileNotFoundError: no such file.
        PickledCheckpointError: an SB3-format zip (pickled objects); load it with ``trust_pickle=True`` only if
            you trust where it came from.
        ValueError: not a zip, or not an llm-gym checkpoint (names what is missing).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a checkpoint zip (written by model.save()).")
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if META not in names:
            if "data" in names:
                raise PickledCheckpointError(
                    f"{path} is a Stable-Baselines3 zip: its 'data' holds cloudpickled objects, and loading them "
                    f"can run arbitrary code. Load it with trust_pickle=True only if you trust the file's "
                    f"source, then save it again to get a plain-data checkpoint.")
            raise ValueError(f"{path} has no {META}: not an llm-gym checkpoint.")
        meta = json.loads(archive.read(META))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: unknown checkpoint format {meta.get('format')!r} (expected {FORMAT!r}).")
        tensors = {name: torch.load(io.BytesIO(archive.read(f"{name}.pt")), map_location=device, weights_only=True)
                   for name in TENSOR_FILES}
    return meta, tensors


def policy_kwargs_to_json(policy_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``policy_kwargs`` as JSON: an optimizer class becomes its dotted name (``"torch.optim.AdamW"``)."""
    out = dict(policy_kwargs)
    if "optimizer_class" in out:
        klass = out["optimizer_class"]
        out["optimizer_class"] = f"{klass.__module__}.{klass.__qualname__}"
    return out


def policy_kwargs_from_json(policy_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`policy_kwargs_to_json`; only ``torch.optim`` classes are resolved by name.

    Raises:
        ValueError: an optimizer class outside ``torch.optim`` (pass it with ``custom_objects``).
    """
    out = dict(policy_kwargs)
    name = out.get("optimizer_class")
    if name is not None:
        module, _, attr = name.rpartition(".")
        if not module.startswith("torch.optim") or not isinstance(getattr(torch.optim, attr, None), type):
            raise ValueError(f"The checkpoint's optimizer_class {name!r} is not a torch.optim class; pass it with "
                             f"load(..., custom_objects={{'policy_kwargs': {{'optimizer_class': ...}}}}).")
        out["optimizer_class"] = getattr(torch.optim, attr)
    return out


#: Counters saved with a checkpoint and restored on load (everything exact resume needs besides the tensors).
COUNTERS: tuple[str, ...] = ("num_timesteps", "_n_updates", "_episode_num", "generated_tokens", "_nonfinite_skips",
                             "_current_progress_remaining")


def algorithm_state(model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(meta, tensors)`` of an algorithm: everything :func:`restore_state` needs, as plain data.

    Raises:
        TypeError: ``policy_kwargs`` that are not JSON data.
    """
    config = model.config.to_dict()
    schedule = callable(config["learning_rate"])
    if schedule:
        config["learning_rate"] = None
    rng = capture_rng()
    meta = {
        "algorithm": type(model).__name__, "config": config, "learning_rate_is_schedule": schedule,
        "policy_class": model.policy_class.__name__, "policy_kwargs": policy_kwargs_to_json(model.policy_kwargs),
        "observation_space": describe_space(model.observation_space),
        "action_space": describe_space(model.action_space), "model_name_or_path": model.model_name_or_path,
        "sb3": {"seed": model.seed, "verbose": model.verbose, "tensorboard_log": model.tensorboard_log,
                "stats_window_size": model._stats_window_size},
        "state": {name: getattr(model, name, 0) for name in COUNTERS},
        "problem_rng": model._problem_rng.bit_generator.state, "rng": {"python": rng["python"], "numpy": rng["numpy"]},
        "doctor": model.doctor.state_dict() if getattr(model, "doctor", None) is not None else None,
        "peft_config": lora_to_dict(getattr(model, "peft_config", None)),
        "grad_scaler": model._scaler.state_dict() if model._scaler.is_enabled() else None,
    }
    if is_sharded(model.policy):  # FSDP: gathered to full tensors (every rank takes part)
        policy_state, optimizer_state = full_state(model.policy, model.policy.optimizer)
    else:
        policy_state, optimizer_state = model.policy.state_dict(), model.policy.optimizer.state_dict()
    tensors = {"policy": policy_state, "optimizer": optimizer_state,
               "torch_rng": {"cpu": rng["torch"], "cuda": rng["cuda"]}}
    return meta, tensors


def restore_state(model: Any, meta: dict[str, Any], tensors: dict[str, Any]) -> None:
    """Load weights, optimizer state, counters, the problem sampler and the global RNGs into a built ``model``."""
    if is_sharded(model.policy):  # FSDP: each rank keeps its shards of the full tensors
        load_full_state(model.policy, model.policy.optimizer, tensors["policy"], tensors["optimizer"])
    else:
        model.policy.load_state_dict(tensors["policy"])
        model.policy.optimizer.load_state_dict(tensors["optimizer"])
    for name, value in meta["state"].items():
        setattr(model, name, value)
    model._problem_rng = np.random.default_rng()
    model._problem_rng.bit_generator.state = meta["problem_rng"]
    if meta.get("doctor") is not None and getattr(model, "doctor", None) is not None and model.doctor.enabled:
        model.doctor.load_state_dict(meta["doctor"])
    if meta.get("grad_scaler") is not None:
        model._scaler.load_state_dict(meta["grad_scaler"])
    restore_rng({**meta["rng"], "torch": tensors["torch_rng"]["cpu"], "cuda": tensors["torch_rng"]["cuda"]})


def build_from_checkpoint(cls: type, meta: dict[str, Any], tensors: dict[str, Any], env: Any, device: str,
                      custom: dict[str, Any]) -> Any:
    """Build ``cls`` from a checkpoint's plain data and restore its state (``LLMAlgorithm.load``).

    The object is built with the saved hyperparameters and then given ``env`` (unwrapped), so every env the
    run trained on fits: e.g. 32 token envs for ``n_prompts=32`` although PPO's default rollout holds 16,
    and a single multi-turn env is batched into ``n_prompts * group_size`` copies as in training.

    Raises:
        ValueError: a learning-rate schedule was saved but not passed, the env's spaces differ
            (:func:`check_env_spaces`), or its sub-env count does not divide the saved rollout size.
    """
    config = dict(meta["config"])
    if meta.get("learning_rate_is_schedule") or "learning_rate" in custom:
        if "learning_rate" not in custom:
            raise ValueError("The checkpoint was trained with a learning-rate schedule, which is code and is "
                             "not saved: pass load(..., custom_objects={'learning_rate': schedule}).")
        config["learning_rate"] = custom["learning_rate"]
    observation_space = custom.get("observation_space") or space_from_description(meta["observation_space"])
    action_space = custom.get("action_space") or space_from_description(meta["action_space"])
    if env is not None:  # wrapped by the constructor, with the saved config (not the class defaults)
        env = maybe_make_env(env, meta["sb3"]["verbose"])
        check_env_spaces(env, observation_space, action_space)
    policy_class = custom.get("policy_class") or _policy_class(cls, meta["policy_class"])
    policy_kwargs = custom.get("policy_kwargs") or policy_kwargs_from_json(meta["policy_kwargs"])
    sb3 = meta["sb3"]
    model = cls(policy_class, env, **config, policy_kwargs=policy_kwargs, seed=sb3["seed"], device=device,
                verbose=sb3["verbose"], tensorboard_log=sb3["tensorboard_log"],
                stats_window_size=sb3["stats_window_size"], peft_config=lora_from_dict(meta.get("peft_config")),
                _init_setup_model=False)
    if env is None:
        model.observation_space, model.action_space = observation_space, action_space
    model.model_name_or_path = meta["model_name_or_path"]
    model._setup_model()
    restore_state(model, meta, tensors)
    return model


def saved_class(cls: type, base: type, name: str, path: Path) -> type:
    """The class a checkpoint was saved from: ``cls`` itself, or any subclass of ``base`` when ``cls`` is ``base``.

    Raises:
        ValueError: ``cls`` is another preset (the message names both classes).
    """
    if cls.__name__ == name:
        return cls
    if cls is base:
        stack = list(base.__subclasses__())
        while stack:
            klass = stack.pop()
            if klass.__name__ == name:
                return klass
            stack.extend(klass.__subclasses__())
    raise ValueError(f"{path} holds a {name} checkpoint, not a {cls.__name__} one: load it with {name}.load(...) "
                     f"(or LLMAlgorithm.load, which returns the saved class).")


def _policy_class(cls: type, name: str) -> type:
    """The policy class named ``name`` among ``cls``'s aliases and the library's policies.

    Raises:
        ValueError: an unknown (custom) policy class: pass it with ``custom_objects={"policy_class": ...}``.
    """
    from agents.common.policies import LLMActorCriticPolicy, LLMPolicy

    for klass in (*cls.policy_aliases.values(), LLMPolicy, LLMActorCriticPolicy):
        if klass.__name__ == name:
            return klass
    raise ValueError(f"Unknown policy class {name!r} in the checkpoint: pass it with "
                     f"load(..., custom_objects={{'policy_class': {name}}}).")
