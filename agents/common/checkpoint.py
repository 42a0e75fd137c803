"""Checkpoints that are plain data: loading one never runs code stored in it, and resuming from one is exact.

A checkpoint is a zip with three members:

* ``llm_gym.json``: the format tag and version, the algorithm's class name, its :class:`AlgorithmConfig`,
  SB3's plain arguments, the policy class name and ``policy_kwargs``, the spaces (shapes, dtypes, bounds),
  the counters (``num_timesteps``, optimizer steps, ...), the problem sampler's state and the Python and NumPy
  RNG states. JSON only: nothing is unpickled.
* ``policy.pt``, ``optimizer.pt``, ``torch_rng.pt``: ``torch.save`` tensors and dicts of tensors and numbers,
  read back with ``torch.load(weights_only=True)``, which refuses anything but tensors and primitive types.

SB3's own zip format (a ``data`` member with cloudpickled objects) is refused unless the caller passes
``trust_pickle=True`` for a file they trust (:func:`read_meta`). docs/security.md says what is trusted.

Nothing in a checkpoint is trusted beyond its schema (:mod:`agents.common.checkpoint_schema` for the JSON,
:mod:`agents.common.checkpoint_tensors` for the tensors): known keys, types and version; the optimizer's
hyperparameters come from the config, never from ``optimizer.pt``; no path is read from it; each member has a
size cap; NaN or infinity in the weights is refused (on save and on load) unless ``allow_nonfinite=True``.
"""

from __future__ import annotations

import inspect
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

from agents.common.checkpoint_schema import (
    COUNTERS,
    FORMAT,
    MEMBERS,
    META,
    META_MAX_BYTES,
    TENSOR_FILES,
    VERSION,
    CheckpointError,
    PickledCheckpointError,
    check_meta,
    parse_meta,
    read_member,
)
from agents.common.checkpoint_tensors import (
    check_optimizer_state,
    check_policy_state,
    check_torch_rng,
    load_tensor_member,
    member_caps,
    named_state_tensors,
)
from agents.common.config import AlgorithmConfig
from agents.common.fsdp import full_state, is_sharded, load_full_state
from agents.common.guards import all_finite, first_nonfinite_named
from agents.common.precision import lora_from_dict, lora_to_dict

__all__ = ["COUNTERS", "peek_meta", "FORMAT", "META", "SB3_OVERRIDES", "VERSION", "CheckpointError", "PickledCheckpointError",
           "algorithm_state", "build_from_checkpoint", "capture_rng", "check_env_spaces", "describe_space",
           "first_nonfinite_tensor", "read_meta", "read_tensors", "restore_rng", "restore_state", "saved_class",
           "space_from_description", "write_checkpoint"]

#: SB3's constructor arguments a checkpoint records (``meta["sb3"]``); ``load(path, **kwargs)`` may change them.
#: ``tensorboard_log`` is recorded but never read back: a path is never taken from a checkpoint.
SB3_OVERRIDES: tuple[str, ...] = ("seed", "verbose", "tensorboard_log", "stats_window_size")


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


def read_meta(path: str | Path, custom: dict[str, Any] | None = None) -> dict[str, Any]:
    """``llm_gym.json`` of an llm-gym checkpoint, checked against the schema; no tensor is read.

    Args:
        path: the zip.
        custom: ``load``'s ``custom_objects`` (``policy_kwargs`` given there replace the file's).

    Raises:
        FileNotFoundError: no such file.
        PickledCheckpointError: an SB3-format zip (pickled objects); load it with ``trust_pickle=True`` only if
            you trust where it came from.
        CheckpointError: not a zip, not an llm-gym checkpoint, members other than the four ``save`` writes, a
            member over its size cap, or JSON that breaks the schema (names the file and the key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a checkpoint zip (written by model.save()).")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if META not in names:
                if "data" in names:
                    raise PickledCheckpointError(
                        f"{path} is a Stable-Baselines3 zip: its 'data' holds cloudpickled objects, and loading "
                        f"them can run arbitrary code. Load it with trust_pickle=True only if you trust the file's "
                        f"source, then save it again to get a plain-data checkpoint.")
                raise CheckpointError(f"{path} has no {META}: not an llm-gym checkpoint.")
            if sorted(names) != sorted(MEMBERS):
                raise CheckpointError(f"{path}: the zip holds the members {sorted(names)[:8]!r}, expected exactly "
                                      f"{list(MEMBERS)} (what model.save() writes).")
            raw = read_member(archive, path, META, META_MAX_BYTES)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable zip ({type(exc).__name__}: {exc}).") from exc
    meta = parse_meta(path, raw)
    check_meta(path, meta, custom or {})
    return meta


def peek_meta(path: str | Path) -> dict[str, Any]:
    """``llm_gym.json`` of a zip, read within its size cap and parsed with its format and version checked.

    For settings read before any model is built (``--resume``, ``llm-gym eval --checkpoint``): unlike
    :func:`read_meta` it does not require the other members nor check the schema (the load that follows
    does), but it never inflates more than the member's cap nor parses JSON nested without limit.

    Raises:
        CheckpointError: not a zip, no ``llm_gym.json``, over the cap, not JSON, or not an llm-gym checkpoint.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            raw = read_member(archive, path, META, META_MAX_BYTES)
    except CheckpointError:
        raise
    except (KeyError, zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: no readable {META} ({type(exc).__name__}: {exc}).") from exc
    return parse_meta(path, raw)


def read_tensors(path: Path, caps: dict[str, int]) -> dict[str, Any]:
    """The tensor members (``policy``, ``optimizer``, ``torch_rng``), each read within its size cap on the CPU.

    Raises:
        CheckpointError: a member over its cap (declared or inflated), or not plain tensors.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return {name: load_tensor_member(path, f"{name}.pt", read_member(archive, path, f"{name}.pt", caps[name]))
                    for name in TENSOR_FILES}
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise CheckpointError(f"{path}: not a readable zip ({type(exc).__name__}: {exc}).") from exc


def first_nonfinite_tensor(tensors: dict[str, Any]) -> str | None:
    """Where :func:`algorithm_state`'s tensors hold NaN or infinity first (``"policy.pt key 'lm_head.weight'"``,
    ``"optimizer.pt key 'state.3.exp_avg'"``), or None when the weights and optimizer state are finite."""
    policy, states = tensors["policy"], tensors["optimizer"].get("state", {})
    if all_finite(policy.values()) and all_finite(value for _, value in named_state_tensors(states)):
        return None
    bad = first_nonfinite_named(policy.items())
    if bad is not None:
        return f"policy.pt key {bad!r}"
    return f"optimizer.pt key {first_nonfinite_named(named_state_tensors(states))!r}"


def policy_kwargs_to_json(policy_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``policy_kwargs`` as JSON: an optimizer class becomes its dotted name (``"torch.optim.AdamW"``)."""
    out = dict(policy_kwargs)
    if "optimizer_class" in out:
        klass = out["optimizer_class"]
        out["optimizer_class"] = f"{klass.__module__}.{klass.__qualname__}"
    return out


def policy_kwargs_from_json(policy_kwargs: dict[str, Any], path: Path | str = "the checkpoint") -> dict[str, Any]:
    """The inverse of :func:`policy_kwargs_to_json`; only ``torch.optim`` optimizer classes are resolved by name.

    Raises:
        CheckpointError: an optimizer class outside ``torch.optim`` (pass it with ``custom_objects``).
    """
    out = dict(policy_kwargs)
    name = out.get("optimizer_class")
    if name is not None:
        module, _, attr = name.rpartition(".")
        klass = getattr(torch.optim, attr, None)
        if not module.startswith("torch.optim") or not (
                isinstance(klass, type) and issubclass(klass, torch.optim.Optimizer)):
            raise CheckpointError(f"{path}: {META}, key 'policy_kwargs.optimizer_class': {name!r} is not a "
                                  f"torch.optim optimizer; pass it with load(..., custom_objects={{'policy_kwargs': "
                                  f"{{'optimizer_class': ...}}}}).")
        out["optimizer_class"] = klass
    return out


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python number it holds (JSON has no NumPy types); anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def algorithm_state(model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(meta, tensors)`` of an algorithm: everything :func:`restore_state` needs, as plain data.

    Raises:
        TypeError: ``policy_kwargs`` that are not JSON data.
    """
    config = {name: _plain(value) for name, value in model.config.to_dict().items()}
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
        "state": {name: _plain(getattr(model, name, 0)) for name in COUNTERS},
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


def restore_state(model: Any, path: Path, meta: dict[str, Any], tensors: dict[str, Any],
                  allow_nonfinite: bool = False) -> None:
    """Check the tensors against the built ``model``, then load weights, optimizer state, counters, the problem
    sampler and the global RNGs into it.

    Only the optimizer's per-parameter state is loaded: its hyperparameters are the model's own (built from the
    config and ``policy_kwargs``), whatever ``optimizer.pt``'s ``param_groups`` say.

    Raises:
        CheckpointError: a tensor of the wrong key, shape or dtype, NaN or infinity in the weights or optimizer
            state (unless ``allow_nonfinite``), or an RNG state that cannot be restored (names file and key).
    """
    optimizer = model.policy.optimizer
    check_policy_state(path, tensors["policy"], model.policy.state_dict(), allow_nonfinite)
    optimizer_state = check_optimizer_state(path, tensors["optimizer"], optimizer, allow_nonfinite)
    check_torch_rng(path, tensors["torch_rng"])
    if is_sharded(model.policy):  # FSDP: each rank keeps its shards of the full tensors
        load_full_state(model.policy, optimizer, tensors["policy"], optimizer_state)
    else:
        model.policy.load_state_dict(tensors["policy"])
        optimizer.load_state_dict(optimizer_state)
    for name in COUNTERS:  # the schema's keys only: nothing else from the file is set on the model
        setattr(model, name, meta["state"][name])
    try:
        model._problem_rng = np.random.default_rng()
        model._problem_rng.bit_generator.state = meta["problem_rng"]
        restore_rng({**meta["rng"], "torch": tensors["torch_rng"]["cpu"], "cuda": tensors["torch_rng"]["cuda"]})
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise CheckpointError(f"{path}: {META}, key 'rng' or 'problem_rng': not a restorable RNG state "
                              f"({type(exc).__name__}: {exc}).") from exc
    if meta["doctor"] is not None and getattr(model, "doctor", None) is not None and model.doctor.enabled:
        model.doctor.load_state_dict(meta["doctor"])  # checked by the schema (check_meta)
    if meta["grad_scaler"] is not None:
        model._scaler.load_state_dict(meta["grad_scaler"])


def build_from_checkpoint(cls: type, path: Path, meta: dict[str, Any], env: Any, device: str,
                          custom: dict[str, Any], overrides: dict[str, Any] | None = None,
                          allow_nonfinite: bool = False) -> Any:
    """Build ``cls`` from a checkpoint's plain data, then read its tensors and restore its state (``load``).

    The object is built with the saved hyperparameters and then given ``env`` (unwrapped), so every env the
    run trained on fits: e.g. 32 token envs for ``n_prompts=32`` although PPO's default rollout holds 16,
    and a single multi-turn env is batched into ``n_prompts * group_size`` copies as in training. The tensor
    members are read only then, each within a size cap that follows the built model (:func:`member_caps`).

    Args:
        cls: the algorithm class the checkpoint was saved from.
        path: the zip.
        meta: :func:`read_meta`'s result (checked against the schema).
        env: the env to attach, or None.
        device: where to put the policy.
        custom: SB3's ``custom_objects``: spaces, ``policy_class``, ``policy_kwargs`` or config fields.
        overrides: ``load``'s keywords: config fields and :data:`SB3_OVERRIDES` replacing the saved values
            (config fields in ``custom`` too; ``overrides`` wins). ``tensorboard_log`` is only ever taken
            from here: a path is never read from a checkpoint.
        allow_nonfinite: accept NaN or infinity in the weights and optimizer state.

    Raises:
        CheckpointError: a learning-rate schedule was saved but not passed, the env's spaces differ from the
            saved ones (:func:`check_env_spaces`), or the tensors break the schema (:func:`restore_state`).
        ValueError: a replaced field is invalid, or the env's sub-env count does not divide the rollout size.
    """
    overrides = overrides or {}
    fields = AlgorithmConfig.field_names()
    changes = {k: v for k, v in custom.items() if k in fields} | {k: v for k, v in overrides.items() if k in fields}
    if meta["learning_rate_is_schedule"] and "learning_rate" not in changes:
        raise CheckpointError(f"{path}: the run used a learning-rate schedule, which is code and is not saved: "
                              f"pass load(..., custom_objects={{'learning_rate': schedule}}).")
    observation_space, action_space = (custom.get(name) or _space(path, name, meta[name])
                                       for name in ("observation_space", "action_space"))
    if env is not None:  # wrapped by the constructor, with the saved config (not the class defaults)
        env = maybe_make_env(env, meta["sb3"]["verbose"])
        try:
            check_env_spaces(env, observation_space, action_space)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {META}, keys 'observation_space' / 'action_space': {exc}") from exc
    policy_class = custom.get("policy_class") or _policy_class(cls, meta["policy_class"], path)
    policy_kwargs = custom.get("policy_kwargs") or _fitting_policy_kwargs(policy_class, meta["policy_kwargs"], path)
    sb3 = meta["sb3"] | {k: v for k, v in overrides.items() if k in SB3_OVERRIDES}
    model = cls(policy_class, env, **(dict(meta["config"]) | changes), policy_kwargs=policy_kwargs,
                seed=sb3["seed"], device=device, verbose=sb3["verbose"],
                tensorboard_log=overrides.get("tensorboard_log"), stats_window_size=sb3["stats_window_size"],
                peft_config=lora_from_dict(meta["peft_config"]), _init_setup_model=False)
    if env is None:
        model.observation_space, model.action_space = observation_space, action_space
    model.model_name_or_path = meta["model_name_or_path"]
    model._setup_model()
    tensors = read_tensors(path, member_caps(model.policy.state_dict(), model.policy.optimizer))
    restore_state(model, path, meta, tensors, allow_nonfinite)
    return model


def _space(path: Path, key: str, desc: dict[str, Any]) -> spaces.Space:
    """:func:`space_from_description` of a schema-checked description.

    Raises:
        CheckpointError: gymnasium refuses it (bounds that do not fit the dtype, for example).
    """
    try:
        return space_from_description(desc)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"{path}: {META}, key {key!r}: not a valid space ({type(exc).__name__}: {exc}).") from exc


def _fitting_policy_kwargs(policy_class: type, saved: dict[str, Any], path: Path) -> dict[str, Any]:
    """The checkpoint's ``policy_kwargs``, resolved, and accepted by ``policy_class``'s constructor.

    Raises:
        CheckpointError: a keyword the policy class does not take, or an optimizer outside ``torch.optim``.
    """
    params = inspect.signature(policy_class.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        for name in saved:
            if name not in params:
                raise CheckpointError(f"{path}: {META}, key 'policy_kwargs.{name}': {policy_class.__name__} takes "
                                      f"no such argument. Load another checkpoint, or pass the policy's "
                                      f"arguments with custom_objects={{'policy_kwargs': {{...}}}}.")
    return policy_kwargs_from_json(saved, path)


def saved_class(cls: type, base: type, name: str, path: Path) -> type:
    """The class a checkpoint was saved from: ``cls`` itself, or any subclass of ``base`` when ``cls`` is ``base``.

    Raises:
        CheckpointError: ``cls`` is another preset (the message names both classes), or no class has that name.
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
        raise CheckpointError(f"{path}: {META}, key 'algorithm': no algorithm class is named {name!r} (a class "
                              f"defined in your code must be imported before load).")
    raise CheckpointError(f"{path} holds a {name} checkpoint ({META} key 'algorithm'), not a {cls.__name__} one: "
                          f"load it with {name}.load(...) (or LLMAlgorithm.load, which returns the saved class).")


def _policy_class(cls: type, name: str, path: Path) -> type:
    """The policy class named ``name`` among ``cls``'s aliases and the library's policies.

    Raises:
        CheckpointError: an unknown (custom) policy class: pass it with ``custom_objects={"policy_class": ...}``.
    """
    from agents.common.policies import LLMActorCriticPolicy, LLMPolicy

    for klass in (*cls.policy_aliases.values(), LLMPolicy, LLMActorCriticPolicy):
        if klass.__name__ == name:
            return klass
    raise CheckpointError(f"{path}: {META}, key 'policy_class': unknown policy class {name!r}; pass it with "
                          f"load(..., custom_objects={{'policy_class': {name}}}).")
