"""The schema of a checkpoint: what ``load`` accepts from ``llm_gym.json`` and from the tensor files.

A checkpoint may come from anyone, so ``load`` trusts none of its plain data beyond this schema (rules in
docs/security.md):

* ``llm_gym.json``: known keys only, each with its type and range, and ``"version": 1``; a missing, extra or
  wrong key is a :class:`CheckpointError` naming the file and the key (``config.beta``).
* ``policy.pt``: exactly the model's state-dict keys, each a dense tensor of the model's shape and dtype.
* ``optimizer.pt``: only the per-parameter *state* tensors are read (their keys, shapes and dtypes those the
  optimizer writes); the hyperparameters (``param_groups``: ``lr``, ``maximize``, ...) come from the config
  and ``policy_kwargs``, never from the file.
* ``torch_rng.pt``: torch's RNG state tensors.
* No path is taken from a checkpoint (``tensorboard_log`` is recorded but not read) and every member has a
  size cap, checked on the size the zip declares and on the bytes actually inflated.
* NaN or infinity in the weights or the optimizer state is refused unless ``allow_nonfinite=True``.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

import torch

from agents.common.config import AlgorithmConfig, check_field_type
from agents.common.guards import all_finite
from agents.common.precision import lora_from_dict, lora_to_dict

__all__ = ["COUNTERS", "FORMAT", "MEMBERS", "META", "META_MAX_BYTES", "OPTIMIZER_KWARGS", "RNG_MAX_BYTES",
           "TENSOR_FILES", "VERSION", "CheckpointError", "Keys", "PickledCheckpointError", "check_meta", "parse_meta",
           "read_member"]

FORMAT, VERSION = "llm-gym-checkpoint", 1
META, TENSOR_FILES = "llm_gym.json", ("policy", "optimizer", "torch_rng")
#: Every member of a checkpoint zip; ``load`` refuses a zip with any other.
MEMBERS: tuple[str, ...] = (META, *(f"{name}.pt" for name in TENSOR_FILES))
#: Size caps (bytes once inflated) of ``llm_gym.json`` and ``torch_rng.pt``; the weights' caps follow the model.
META_MAX_BYTES, RNG_MAX_BYTES = 16 * 2**20, 4 * 2**20
#: Counters saved with a checkpoint and restored on load (everything exact resume needs besides the tensors).
COUNTERS: tuple[str, ...] = ("num_timesteps", "_n_updates", "_episode_num", "generated_tokens", "_nonfinite_skips",
                             "_current_progress_remaining")
#: The optimizer settings ``policy_kwargs["optimizer_kwargs"]`` may carry in a checkpoint (checked); others,
#: such as ``maximize``, are refused: pass them yourself with ``custom_objects={"policy_kwargs": ...}``.
OPTIMIZER_KWARGS: tuple[str, ...] = ("weight_decay", "betas", "eps", "amsgrad", "momentum", "dampening", "nesterov")
POLICY_KWARGS: tuple[str, ...] = ("optimizer_class", "optimizer_kwargs", "separate_critic", "value_head_init_std")
TOP_KEYS: tuple[str, ...] = ("format", "version", "algorithm", "config", "learning_rate_is_schedule", "policy_class",
                             "policy_kwargs", "observation_space", "action_space", "model_name_or_path", "sb3",
                             "state", "problem_rng", "rng", "doctor", "peft_config", "grad_scaler")
TAMPERED = ("It was changed after model.save() wrote it, or written by another program; load another "
            "checkpoint.")
BOX_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
              "float32", "float64")


class CheckpointError(ValueError):
    """A checkpoint that is not what ``save()`` writes: the message names the file, the member and the key."""


class PickledCheckpointError(CheckpointError):
    """The file holds pickled Python objects (SB3's format), which could run code when loaded."""


def _show(value: Any) -> str:
    """``repr(value)``, cut to 80 characters (a hostile value can be megabytes long)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _key(value: Any) -> str:
    """A dict key for a message: a short printable string as it is, anything else as :func:`_show` gives it."""
    return value if isinstance(value, str) and len(value) <= 80 and value.isprintable() else _show(value)


class Keys:
    """Type and range checks of one member's values; every failure is a :class:`CheckpointError` naming the
    file, the member and the key (``"config.beta"``, ``"state.3.exp_avg"``)."""

    def __init__(self, path: Path, member: str):
        self.path, self.member = path, member

    def fail(self, key: str, problem: str, fix: str = TAMPERED) -> NoReturn:
        """Raise the error for ``key``.

        Raises:
            CheckpointError: always.
        """
        where = f"key {key!r}" if key else "top level"
        raise CheckpointError(f"{self.path}: {self.member}, {where}: {problem}. {fix}")

    def mapping(self, key: str, value: Any, required: Any = (), optional: Any = ()) -> dict:
        """``value`` as a dict with every ``required`` key and no key outside ``required`` and ``optional``
        (a key must also have the type of the allowed ones: ``True`` is not the parameter index 1)."""
        if not isinstance(value, dict):
            self.fail(key, f"expected a dict, got {type(value).__name__}")
        allowed = {*required, *optional}
        types = {type(a) for a in allowed}
        extra = [k for k in value if k not in allowed or type(k) not in types]
        missing = [k for k in required if k not in value]
        prefix = f"{key}." if key else ""
        if missing:
            self.fail(f"{prefix}{_key(missing[0])}", f"missing ({len(missing)} key(s) missing)")
        if extra:
            self.fail(f"{prefix}{_key(extra[0])}", f"unknown key ({len(extra)} unknown; known: "
                                                   f"{_show(sorted(map(str, allowed)))})")
        return value

    def integer(self, key: str, value: Any, minimum: int | None = None, maximum: int | None = None,
                none: bool = False) -> None:
        """An ``int`` (not a bool) in ``[minimum, maximum]``, or None when ``none``."""
        if value is None and none:
            return
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, f"expected an integer{' or null' if none else ''}, got {_show(value)}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.fail(key, f"{_show(value)} is out of range [{minimum}, {maximum}]")

    def real(self, key: str, value: Any, minimum: float | None = None, maximum: float | None = None,
             none: bool = False, open_min: bool = False) -> None:
        """An int or float (not a bool; JSON has no NaN here) in range, or None when ``none``."""
        if value is None and none:
            return
        if not isinstance(value, (int, float)) or isinstance(value, bool) or abs(value) > 1.7e308:
            self.fail(key, f"expected a finite number{' or null' if none else ''}, got {_show(value)}")
        low = minimum is not None and (value <= minimum if open_min else value < minimum)
        if low or (maximum is not None and value > maximum):
            self.fail(key, f"{_show(value)} is out of range ({minimum}, {maximum})")

    def text(self, key: str, value: Any, none: bool = False, identifier: bool = False) -> None:
        """A string of at most 4096 printable characters (a Python identifier when ``identifier``)."""
        if value is None and none:
            return
        if not isinstance(value, str) or len(value) > 4096 or not value.isprintable():
            self.fail(key, f"expected a printable string of at most 4096 characters, got {_show(value)}")
        if identifier and not value.isidentifier():
            self.fail(key, f"expected a class name, got {_show(value)}")

    def flag(self, key: str, value: Any) -> None:
        """``true`` or ``false``."""
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {_show(value)}")

    def sequence(self, key: str, value: Any, length: int | None = None, max_length: int = 4096) -> list:
        """A list (of exactly ``length`` items when given)."""
        if not isinstance(value, list) or len(value) > max_length or (length is not None and len(value) != length):
            self.fail(key, f"expected a list{f' of {length} items' if length is not None else ''}, got "
                           f"{_show(value)}")
        return value

    def tensor(self, key: str, value: Any, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None,
               floating: bool = False, allow_nonfinite: bool = True) -> None:
        """A dense tensor of ``shape`` and ``dtype`` (when given), finite unless ``allow_nonfinite``."""
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided or value.is_meta \
                or value.is_quantized:
            self.fail(key, f"expected a dense tensor, got {type(value).__name__}")
        if shape is not None and tuple(value.shape) != tuple(shape):
            self.fail(key, f"shape {tuple(value.shape)}, expected {tuple(shape)}")
        if (dtype is not None and value.dtype != dtype) or (floating and not value.is_floating_point()):
            self.fail(key, f"dtype {value.dtype}, expected {dtype or 'a floating-point dtype'}")
        if not allow_nonfinite and value.is_floating_point() and not all_finite([value]):
            self.fail(key, "holds NaN or infinity", "Weights or optimizer state that are not finite cannot train. "
                      "Load with allow_nonfinite=True only to inspect them (learn() then raises NonFiniteError).")


# ---------------------------------------------------------------------------------------------- zip members
def read_member(archive: zipfile.ZipFile, path: Path, name: str, cap: int) -> bytes:
    """The bytes of member ``name``, at most ``cap`` of them once inflated (declared and actual size).

    Raises:
        CheckpointError: the declared or the inflated size is over ``cap``, or the member is corrupt.
    """
    keys = Keys(path, name)
    info = archive.getinfo(name)
    over = (f"over this member's cap of {cap} bytes (a zip bomb, or a checkpoint of another model: load it "
            f"with the env it was trained on)")
    if info.file_size > cap:
        keys.fail("", f"the zip declares {info.file_size} bytes once inflated, {over}")
    out = bytearray()
    try:
        with archive.open(info) as member:
            while chunk := member.read(2**20):
                out += chunk
                if len(out) > cap:
                    keys.fail("", f"inflates to more than {cap} bytes, {over}")
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        keys.fail("", f"cannot be inflated ({type(exc).__name__}: {exc})")
    return bytes(out)


# ---------------------------------------------------------------------------------------------- llm_gym.json
def parse_meta(path: Path, raw: bytes) -> dict[str, Any]:
    """``llm_gym.json``'s JSON (no NaN or Infinity constants), with its format and version checked.

    Raises:
        CheckpointError: not UTF-8 JSON, nested too deeply, not an llm-gym checkpoint, or another version.
    """
    keys = Keys(path, META)

    def constant(name: str) -> NoReturn:
        keys.fail("", f"holds the constant {name}, which save() never writes")

    try:
        meta = json.loads(raw.decode("utf-8"), parse_constant=constant)
    except CheckpointError:
        raise
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        keys.fail("", f"not valid JSON ({type(exc).__name__}: {_show(str(exc))})")
    if not isinstance(meta, dict):
        keys.fail("", f"expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        keys.fail("format", f"{_show(meta.get('format'))} is not {FORMAT!r}: not an llm-gym checkpoint")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version != VERSION:
        keys.fail("version", f"{_show(version)}: this llm-gym reads checkpoint version {VERSION}",
                  "A newer llm-gym wrote it (upgrade llm-gym), or it was edited.")
    return meta


def check_meta(path: Path, meta: dict[str, Any], custom: dict[str, Any]) -> None:
    """Check every key of ``llm_gym.json`` (:func:`parse_meta`'s result) against the schema.

    Args:
        path: the checkpoint, for messages.
        meta: the parsed JSON.
        custom: ``load``'s ``custom_objects``: ``policy_kwargs`` given there replace the file's, which are then
            only type-checked.

    Raises:
        CheckpointError: a missing, unknown or wrong key (names the file and the key).
    """
    keys = Keys(path, META)
    keys.mapping("", meta, required=TOP_KEYS)
    keys.text("algorithm", meta["algorithm"], identifier=True)
    keys.text("policy_class", meta["policy_class"], identifier=True)
    keys.text("model_name_or_path", meta["model_name_or_path"], none=True)
    _check_config(keys, meta["config"], meta["learning_rate_is_schedule"])
    _check_policy_kwargs(keys, meta["policy_kwargs"], replaced="policy_kwargs" in custom)
    for name in ("observation_space", "action_space"):
        _check_space(keys, name, meta[name], depth=0)
    sb3 = keys.mapping("sb3", meta["sb3"], required=("seed", "verbose", "tensorboard_log", "stats_window_size"))
    keys.integer("sb3.seed", sb3["seed"], 0, 2**32 - 1, none=True)
    keys.integer("sb3.verbose", sb3["verbose"], 0, 2)
    keys.text("sb3.tensorboard_log", sb3["tensorboard_log"], none=True)  # recorded, never read: not a path to use
    keys.integer("sb3.stats_window_size", sb3["stats_window_size"], 1, 10**9)
    state = keys.mapping("state", meta["state"], required=COUNTERS)
    for name in COUNTERS[:-1]:
        keys.integer(f"state.{name}", state[name], 0, 2**62)
    keys.real("state._current_progress_remaining", state["_current_progress_remaining"], -1e18, 1.0)
    _check_rng_states(keys, meta["problem_rng"], meta["rng"])
    _check_optional_parts(keys, meta)


def _check_config(keys: Keys, config: Any, schedule: Any) -> None:
    """``config``: every field of :class:`AlgorithmConfig`, each of its type and range (``validate``)."""
    keys.flag("learning_rate_is_schedule", schedule)
    keys.mapping("config", config, required=AlgorithmConfig.field_names())
    for field in fields(AlgorithmConfig):
        value = config[field.name]
        if field.name == "learning_rate" and schedule:
            if value is not None:
                keys.fail("config.learning_rate", "learning_rate_is_schedule is true (a schedule was saved), so "
                                                  "the rate must be null")
            continue
        try:
            check_field_type(field.name, field.type, value)
        except ValueError as exc:
            keys.fail(f"config.{field.name}", str(exc))
    try:
        AlgorithmConfig(**{**config, "learning_rate": 0.0 if schedule else config["learning_rate"]}).validate()
    except ValueError as exc:  # validate's messages start with the field's name
        name = max((f for f in AlgorithmConfig.field_names() if str(exc).startswith(f)), key=len, default="")
        keys.fail(f"config.{name}" if name else "config", str(exc))


def _check_policy_kwargs(keys: Keys, policy_kwargs: Any, replaced: bool) -> None:
    """``policy_kwargs``: the policy's own settings; optimizer settings only from :data:`OPTIMIZER_KWARGS`."""
    if replaced:  # custom_objects gives them: the file's are not read
        keys.mapping("policy_kwargs", policy_kwargs, optional=policy_kwargs if isinstance(policy_kwargs, dict) else ())
        return
    fix = ("Optimizer settings come from your code, not from a checkpoint (only these are read: "
           f"{', '.join(OPTIMIZER_KWARGS)}); pass others yourself with "
           "load(..., custom_objects={'policy_kwargs': {...}}).")
    kwargs = keys.mapping("policy_kwargs", policy_kwargs, optional=POLICY_KWARGS)
    if "optimizer_class" in kwargs:
        keys.text("policy_kwargs.optimizer_class", kwargs["optimizer_class"])
    if "separate_critic" in kwargs:
        keys.flag("policy_kwargs.separate_critic", kwargs["separate_critic"])
    if "value_head_init_std" in kwargs:
        keys.real("policy_kwargs.value_head_init_std", kwargs["value_head_init_std"], 0.0, 1e6)
    if "optimizer_kwargs" not in kwargs:
        return
    options = kwargs["optimizer_kwargs"]
    if not isinstance(options, dict):
        keys.fail("policy_kwargs.optimizer_kwargs", f"expected a dict, got {type(options).__name__}")
    for name in options:
        if name not in OPTIMIZER_KWARGS:
            keys.fail(f"policy_kwargs.optimizer_kwargs.{_key(name)}", "not read from a checkpoint", fix)
    key = "policy_kwargs.optimizer_kwargs."
    for name in ("weight_decay", "momentum", "dampening"):  # each in [0, 1]: a larger weight decay from a
        if name in options:                                   # file would shrink the weights to 0 in a few steps
            keys.real(key + name, options[name], 0.0, 1.0)
    if "eps" in options:
        keys.real(key + "eps", options["eps"], 0.0, 1.0, open_min=True)
    for name in ("amsgrad", "nesterov"):
        if name in options:
            keys.flag(key + name, options[name])
    if "betas" in options:
        for i, beta in enumerate(keys.sequence(key + "betas", options["betas"], length=2)):
            keys.real(f"{key}betas.{i}", beta, 0.0, 0.999999)  # torch requires [0, 1)


def _check_space(keys: Keys, key: str, desc: Any, depth: int) -> None:
    """A space description (:func:`~agents.common.checkpoint.describe_space`): Dict (at most 4 levels and 64
    entries), Discrete, or Box of a numeric dtype with at most 2**24 elements."""
    if depth > 4 or not isinstance(desc, dict):
        keys.fail(key, "expected a space description (a dict, at most 4 levels deep)")
    kind = desc.get("type")
    if kind == "Dict":
        keys.mapping(key, desc, required=("type", "spaces"))
        spaces = desc["spaces"]
        if not isinstance(spaces, dict) or not 0 < len(spaces) <= 64:
            keys.fail(f"{key}.spaces", "expected a dict of 1 to 64 spaces")
        for name, sub in spaces.items():
            keys.text(f"{key}.spaces", name)
            _check_space(keys, f"{key}.spaces.{name}", sub, depth + 1)
    elif kind == "Discrete":
        keys.mapping(key, desc, required=("type", "n"))
        keys.integer(f"{key}.n", desc["n"], 1, 2**62)
    elif kind == "Box":
        keys.mapping(key, desc, required=("type", "shape", "dtype", "low", "high"))
        shape = keys.sequence(f"{key}.shape", desc["shape"], max_length=8)
        size = 1
        for i, n in enumerate(shape):
            keys.integer(f"{key}.shape.{i}", n, 0, 2**24)
            size *= n
        if size > 2**24:
            keys.fail(f"{key}.shape", f"{size} elements, at most 2**24")
        if desc["dtype"] not in BOX_DTYPES:
            keys.fail(f"{key}.dtype", f"{_show(desc['dtype'])} is not one of {BOX_DTYPES}")
        bound = keys.flag if desc["dtype"] == "bool" else keys.real  # describe_space writes the dtype's scalars
        bound(f"{key}.low", desc["low"])
        bound(f"{key}.high", desc["high"])
        if desc["low"] > desc["high"]:
            keys.fail(f"{key}.low", "low is above high")
    else:
        keys.fail(f"{key}.type", f"{_show(kind)} is not 'Dict', 'Box' or 'Discrete'")


def _check_rng_states(keys: Keys, problem_rng: Any, rng: Any) -> None:
    """The problem sampler's PCG64 state and the Python and NumPy (MT19937) global RNG states."""
    keys.mapping("problem_rng", problem_rng, required=("bit_generator", "state", "has_uint32", "uinteger"))
    if problem_rng["bit_generator"] != "PCG64":
        keys.fail("problem_rng.bit_generator", f"{_show(problem_rng['bit_generator'])} is not 'PCG64'")
    pcg = keys.mapping("problem_rng.state", problem_rng["state"], required=("state", "inc"))
    for name in ("state", "inc"):
        keys.integer(f"problem_rng.state.{name}", pcg[name], 0, 2**128 - 1)
    keys.integer("problem_rng.has_uint32", problem_rng["has_uint32"], 0, 1)
    keys.integer("problem_rng.uinteger", problem_rng["uinteger"], 0, 2**32 - 1)
    keys.mapping("rng", rng, required=("python", "numpy"))
    version, internal, gauss = keys.sequence("rng.python", rng["python"], length=3)
    keys.integer("rng.python.0", version, 3, 3)
    for i, word in enumerate(keys.sequence("rng.python.1", internal, length=625)):
        keys.integer(f"rng.python.1.{i}", word, 0, 2**32 - 1 if i < 624 else 624)
    keys.real("rng.python.2", gauss, none=True)
    kind, words, pos, has_gauss, cached = keys.sequence("rng.numpy", rng["numpy"], length=5)
    if kind != "MT19937":
        keys.fail("rng.numpy.0", f"{_show(kind)} is not 'MT19937'")
    for i, word in enumerate(keys.sequence("rng.numpy.1", words, length=624)):
        keys.integer(f"rng.numpy.1.{i}", word, 0, 2**32 - 1)
    keys.integer("rng.numpy.2", pos, 0, 624)
    keys.integer("rng.numpy.3", has_gauss, 0, 1)
    keys.real("rng.numpy.4", cached)


def _check_optional_parts(keys: Keys, meta: dict[str, Any]) -> None:
    """The doctor's state, the LoRA config and the fp16 loss scale: null, or what their own loaders accept."""
    if meta["doctor"] is not None:
        from agents.common.doctor import TrainingDoctor

        keys.mapping("doctor", meta["doctor"], optional=meta["doctor"] if isinstance(meta["doctor"], dict) else ())
        try:
            TrainingDoctor().load_state_dict(meta["doctor"])  # a throwaway doctor: the loader is the schema
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            keys.fail("doctor", f"not a training doctor's state ({type(exc).__name__}: {_show(str(exc))})")
    if meta["peft_config"] is not None:
        _check_lora(keys, meta["peft_config"])
    if meta["grad_scaler"] is not None:
        scaler = keys.mapping("grad_scaler", meta["grad_scaler"], required=(
            "scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"))
        keys.real("grad_scaler.scale", scaler["scale"], 0.0, 3e38, open_min=True)
        keys.real("grad_scaler.growth_factor", scaler["growth_factor"], 1.0, 1e6, open_min=True)
        keys.real("grad_scaler.backoff_factor", scaler["backoff_factor"], 0.0, 1.0, open_min=True)
        keys.integer("grad_scaler.growth_interval", scaler["growth_interval"], 1, 2**62)
        keys.integer("grad_scaler._growth_tracker", scaler["_growth_tracker"], 0, 2**62)


#: LoRA settings a checkpoint may set (each checked); every other key of peft's ``LoraConfig`` must keep its
#: default: some name code (``megatron_core`` is a module peft imports) or start other procedures (LoftQ, EVA).
LORA_INFO: tuple[str, ...] = ("peft_type", "peft_version", "base_model_name_or_path", "revision", "task_type")


def _check_lora(keys: Keys, peft_config: Any) -> None:
    """``peft_config``: a LoRA config whose settings are plain LoRA (rank, alpha, dropout, target modules...)."""
    import peft

    config = keys.mapping("peft_config", peft_config, optional=peft_config if isinstance(peft_config, dict) else ())
    if config.get("peft_type") != "LORA":
        keys.fail("peft_config.peft_type", f"{_show(config.get('peft_type'))} is not 'LORA'")
    defaults = lora_to_dict(peft.LoraConfig())
    for name, value in config.items():
        key = f"peft_config.{_key(name)}"
        if name in ("r",):
            keys.integer(key, value, 1, 2**16)
        elif name in ("lora_alpha", "lora_dropout"):
            keys.real(key, value, 0.0, 1.0 if name == "lora_dropout" else 1e6)
        elif name in ("use_rslora", "fan_in_fan_out", "use_dora", "lora_bias", "init_lora_weights", "inference_mode"):
            keys.flag(key, value)
        elif name == "bias" and value not in ("none", "all", "lora_only"):
            keys.fail(key, f"{_show(value)} is not 'none', 'all' or 'lora_only'")
        elif name in ("target_modules", "exclude_modules", "modules_to_save", "layers_pattern"):
            for i, module in enumerate([value] if isinstance(value, str) or value is None else
                                       keys.sequence(key, value)):
                keys.text(f"{key}.{i}", module, none=True)
        elif name in LORA_INFO:
            keys.text(key, value, none=True)
        elif name not in ("bias",) and (name not in defaults or value != defaults[name]):
            keys.fail(key, f"{_show(value)}: a checkpoint may not change this LoRA setting from its default "
                           f"{_show(defaults.get(name))}",
                      "Build the model with your own peft_config and load its weights instead.")
    try:
        lora_from_dict(config)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        keys.fail("peft_config", f"not a LoRA config ({type(exc).__name__}: {_show(str(exc))})")
