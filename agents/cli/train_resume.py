"""``--resume`` of ``llm-gym train`` (= ``scripts/train.py``): read a checkpoint's settings without loading a
tensor, refuse flags that contradict them, and set the flags to what will run."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Any

from agents import ALGORITHMS, AlgorithmConfig
from agents.cli.train_flags import explicit_flags
from agents.common.checkpoint import META, peek_meta


def read_checkpoint_settings(path: str) -> dict[str, Any]:
    """The plain-JSON settings of a checkpoint (its ``llm_gym.json``), read without loading any tensor.

    Raises:
        SystemExit: no such file, or not an llm-gym checkpoint (the message names the file and the fix).
    """
    target = Path(path)
    if not target.exists() and target.suffix == "":
        target = target.with_suffix(".zip")
    try:
        meta = peek_meta(target)  # within the member's size cap and nesting limit
        if not (isinstance(meta.get("config"), dict) and isinstance(meta.get("state"), dict)
                and isinstance(meta["state"].get("num_timesteps"), int) and "algorithm" in meta):
            raise ValueError(f"{META} lacks the algorithm, config or num_timesteps")
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        raise SystemExit(f"--resume {path}: not a readable llm-gym checkpoint ({type(exc).__name__}: {exc}). Pass a "
                         f"model.zip or checkpoints/model_*.zip written by this script.") from None
    return meta


def checkpoint_flag_values(meta: dict[str, Any]) -> dict[str, Any]:
    """``{flag dest: value}`` of what a checkpoint fixes: algorithm, config, seed, LoRA and model."""
    names = {cls.__name__: key for key, cls in ALGORITHMS.items()}
    values: dict[str, Any] = {"algo": names.get(meta["algorithm"], meta["algorithm"]),
                              **{k: v for k, v in meta["config"].items() if k in AlgorithmConfig.field_names()}}
    if meta.get("learning_rate_is_schedule"):
        values.pop("learning_rate", None)  # a schedule is code: LLMAlgorithm.load asks for it
    values["seed"] = meta.get("sb3", {}).get("seed")
    lora = meta.get("peft_config") or {}
    values["lora_r"] = lora.get("r", 0)
    for dest, key in (("lora_alpha", "lora_alpha"), ("lora_dropout", "lora_dropout"),
                      ("lora_target_modules", "target_modules")):
        if lora:
            values[dest] = lora.get(key)
    if meta.get("model_name_or_path"):
        values["model"] = meta["model_name_or_path"]
    return values


def _modules(value: Any) -> Any:
    """LoRA target modules as compared on resume: ``"all-linear"``, None or a sorted list."""
    if value in ("all-linear", ["all-linear"]) or value is None:
        return value if value is None else "all-linear"
    return sorted(value)


def _same(flag: str, given: Any, saved: Any) -> bool:
    """Whether a flag's value equals the checkpoint's (module lists in any order, paths after resolving)."""
    if flag == "lora_target_modules":
        return _modules(given) == _modules(saved)
    if flag == "model":
        return _model_path(given) == _model_path(saved)
    return given == saved


def _model_path(model: Any) -> str | None:
    """What ``model=`` loads (``llm_gym.models.resolve_model``: a .gguf file's folder, an alias's folder), resolved;
    None when it does not load."""
    from llm_gym.models import resolve_model

    try:
        name = resolve_model(model)[0]
    except (FileNotFoundError, ImportError):
        return None
    return str(Path(name).resolve()) if Path(name).exists() else name


def resume_settings(args: argparse.Namespace, argv: list[str] | None) -> None:
    """``--resume``: refuse flags that contradict the checkpoint, then set ``args`` to what will run.

    The checkpoint fixes the algorithm, its config, the seed, LoRA and the model; a flag given for any of them
    must equal the saved value (``--model`` compared as what it loads). Everything else (env, evaluation,
    device, logging, ``--no-doctor``, ``--total-timesteps`` as the total) applies. Afterwards ``args`` holds
    the checkpoint's values (its model when that folder still loads), so ``results.json`` records what ran.

    Raises:
        SystemExit: a conflicting flag (the message names each flag and both values), an unreadable
            checkpoint, or ``--total-timesteps`` not above the checkpoint's env steps.
    """
    meta = read_checkpoint_settings(args.resume)
    saved, given = checkpoint_flag_values(meta), explicit_flags(argv, args.algo)
    conflicts = [f"--{dest.replace('_', '-')} {given[dest]!r} (the checkpoint has {value!r})"
                 for dest, value in saved.items() if dest in given and not _same(dest, given[dest], value)]
    if conflicts:
        raise SystemExit(f"--resume {args.resume} continues that run with its own algorithm, config, seed, LoRA and "
                         f"model, and these flags contradict it: {'; '.join(conflicts)}. Drop them (or give the "
                         f"checkpoint's values), or start a new run without --resume.")
    done = meta["state"]["num_timesteps"]
    if args.total_timesteps <= done:
        raise SystemExit(f"--total-timesteps {args.total_timesteps} is the total to reach, and {args.resume} is "
                         f"already at {done} env steps: nothing to train. Pass a larger --total-timesteps.")
    for dest, value in saved.items():
        if dest != "model" or _model_path(value) is not None:  # a model folder that still loads
            setattr(args, dest, value)
