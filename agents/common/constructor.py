"""The generated constructor: one explicit keyword-only parameter per config field, with the preset's default.

Like ``dataclasses`` does for a dataclass, an algorithm's ``__init__`` is generated from one source, the
fields of :class:`~agents.common.config.AlgorithmConfig` and the class's preset, so the signature, ``help()``,
the docs tables and the ``TypeError`` on a misspelt keyword always agree. The generated ``__init__`` builds
the :class:`AlgorithmConfig` from its keywords and hands it to the algorithm's builder
(:meth:`agents.common.base.LLMAlgorithm`'s, which validates and keeps it as ``model.config``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from agents.common.config import AlgorithmConfig
from llm_gym.validation import check_int

__all__ = ["SB3_ARGUMENTS", "check_sb3_arguments", "generated_init"]

#: Constructor keywords that are not config fields (SB3's ``BaseAlgorithm`` arguments), with their defaults.
SB3_ARGUMENTS: dict[str, Any] = {"policy_kwargs": None, "tensorboard_log": None, "verbose": 0, "seed": None,
                                 "device": "auto", "stats_window_size": 100, "doctor": True,
                                 "peft_config": None, "_init_setup_model": True}


def check_sb3_arguments(seed: Any, verbose: Any, tensorboard_log: Any, stats_window_size: Any, device: Any) -> None:
    """Check SB3's plain constructor arguments (also ``load``'s), so a wrong one fails here with its name.

    Raises:
        ValueError: ``seed`` not None or an integer in [0, 2**32 - 1] (NumPy's seed range; ``"abc"`` used to
            reach ``random.seed`` and fail there), ``verbose`` not 0, 1 or 2, ``stats_window_size`` not an
            integer >= 1, ``tensorboard_log`` not None or a path, or ``device`` not a string, torch.device or
            GPU index.
    """
    check_int("seed", seed, minimum=0, maximum=2**32 - 1, allow_none=True)
    check_int("verbose", verbose, minimum=0, maximum=2)
    check_int("stats_window_size", stats_window_size, minimum=1)
    if tensorboard_log is not None and not isinstance(tensorboard_log, (str, os.PathLike)):
        raise ValueError(f"tensorboard_log must be a folder path or None, got {tensorboard_log!r}.")
    if not isinstance(device, (str, torch.device, int)) or isinstance(device, bool):
        raise ValueError(f"device must be a string such as 'cpu', 'cuda' or 'auto', a torch.device or a GPU index; "
                         f"got {device!r}.")


def generated_init(class_name: str, defaults: AlgorithmConfig, build: Callable[..., None]) -> Callable[..., None]:
    """``__init__(self, policy, env, *, <every config field>=<preset default>, <SB3_ARGUMENTS>)``.

    Args:
        class_name: the algorithm's name, for ``__qualname__`` and the docstring.
        defaults: the class's preset (``cls.default_config()``): each field's default.
        build: called as ``build(self, policy, env, config, **sb3_arguments)`` with the
            :class:`AlgorithmConfig` of the keywords (not yet validated: ``build`` validates it).

    Returns:
        The ``__init__`` function; an unknown keyword raises ``TypeError`` naming it, as any Python function, and
        an invalid SB3 argument ``ValueError`` naming it (:func:`check_sb3_arguments`).
    """
    names = AlgorithmConfig.field_names()
    params = ", ".join([*(f"{n}=_d.{n}" for n in names), *(f"{k}=_sb3[{k!r}]" for k in SB3_ARGUMENTS)])
    src = (f"def __init__(self, policy, env, *, {params}):\n"
           f"    _check(seed, verbose, tensorboard_log, stats_window_size, device)\n"
           f"    _build(self, policy, env, _Config({', '.join(f'{n}={n}' for n in names)}), "
           f"{', '.join(f'{k}={k}' for k in SB3_ARGUMENTS)})\n")
    namespace = {"_d": defaults, "_sb3": SB3_ARGUMENTS, "_Config": AlgorithmConfig, "_build": build,
                 "_check": check_sb3_arguments}
    exec(src, namespace)  # noqa: S102 - generated from the dataclass's field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{class_name}.__init__"
    init.__doc__ = f"Build {class_name}; every keyword is a field of AlgorithmConfig (defaults: the preset)."
    return init
