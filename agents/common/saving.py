"""Save and load: plain-data checkpoints (:mod:`agents.common.checkpoint`) behind SB3's ``save`` / ``load``.

:class:`Saving` is the part of :class:`~agents.common.base.LLMAlgorithm` that writes a checkpoint atomically
and builds an algorithm back from one with the saved ``model.config`` (optionally changed by keyword, as
SB3's ``load(path, env, **kwargs)``), so ``learn(M, reset_num_timesteps=False)`` continues exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

from stable_baselines3.common.base_class import BaseAlgorithm

from agents.common.checkpoint import (
    SB3_OVERRIDES,
    CheckpointError,
    PickledCheckpointError,
    algorithm_state,
    build_from_checkpoint,
    first_nonfinite_tensor,
    read_meta,
    saved_class,
    write_checkpoint,
)
from agents.common.config import AlgorithmConfig
from agents.common.distributed import is_main_process
from agents.common.guards import NonFiniteError, first_nonfinite_named

__all__ = ["Saving"]


class Saving:
    """Mixin of :class:`~agents.common.base.LLMAlgorithm`: ``save``, ``load`` and SB3's save hooks."""

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "lm", "ref_policy", "_rollout_stats", "_iteration",
                "doctor", "_train_stats", "_scaler", "peft_config", "_ddp"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []  # SB3-format saves only (trust_pickle); see save()

    def save(self, path: str | os.PathLike, exclude=None, include=None, allow_nonfinite: bool = False) -> None:
        """Save a plain-data checkpoint (:mod:`agents.common.checkpoint`), written atomically.

        The zip holds the config and counters as JSON and the weights, optimizer state and RNG states as
        tensors, everything exact resume needs; nothing in it is pickled. It is written to ``<path>.tmp`` and
        renamed over ``path``, so a crash or Ctrl-C mid-save never corrupts an existing checkpoint; a stale
        ``.tmp`` left by a killed save is replaced. The reference model is not saved (it is the env's model).
        ``exclude`` / ``include`` (SB3's) are not supported: every field is needed to resume.

        Weights or optimizer state holding NaN or infinity are refused: such a checkpoint cannot train, and
        saving it over a good one (``CheckpointCallback``) would lose the run. ``allow_nonfinite=True`` writes
        them anyway (to inspect them); ``load`` then needs ``allow_nonfinite=True`` too.

        Raises:
            TypeError: ``policy_kwargs`` that are not JSON data, or ``exclude`` / ``include`` given.
            NonFiniteError: NaN or infinity in the weights or optimizer state (names the first tensor), unless
                ``allow_nonfinite``; nothing is written.
        """
        if exclude or include:
            raise TypeError("llm-gym checkpoints always hold the whole state (exact resume); drop exclude/include.")
        if not isinstance(allow_nonfinite, bool):
            raise ValueError(f"save(): allow_nonfinite must be True or False, got {allow_nonfinite!r}.")
        meta, tensors = algorithm_state(self)  # under FSDP every rank takes part in gathering the full tensors
        bad = None if allow_nonfinite else first_nonfinite_tensor(tensors)
        if bad is not None:
            raise NonFiniteError(f"save({os.fspath(path)!r}) refused: {bad} holds NaN or infinity, so the checkpoint "
                                 f"could not train (a diverged update, or a non-finite checkpoint loaded with "
                                 f"allow_nonfinite=True). Nothing was written. Save the last good weights instead, "
                                 f"or pass allow_nonfinite=True to write these anyway (to inspect them).")
        if not is_main_process():  # data parallel: the weights are the same on every rank; rank 0 writes
            return
        target = Path(path)
        if target.suffix == "":
            target = target.with_suffix(".zip")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.unlink(missing_ok=True)  # a stale file from a killed save
        try:
            write_checkpoint(tmp, meta, tensors)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | os.PathLike, env=None, device: str = "auto", custom_objects: dict | None = None,
             print_system_info: bool = False, force_reset: bool = True, trust_pickle: bool = False,
             allow_nonfinite: bool = False, **kwargs):
        """Load a checkpoint written by :meth:`save`: the same weights, optimizer state, counters and RNG states.

        ``learn(M, reset_num_timesteps=False)`` afterwards continues exactly as the saved run would have (bit
        for bit on the same machine, constant learning rate). ``LLMAlgorithm.load`` returns the saved class.

        Args:
            path: the zip (``.zip`` is added when the name has no suffix).
            env: the env to train or predict on; its spaces must equal the saved ones (unless replaced through
                ``custom_objects``). The model is built with the saved hyperparameters before the env is
                attached, so any env the run trained on fits (its sub-env count divides the saved
                ``n_prompts * group_size``). None: the recorded ``model_name_or_path`` gives the model; attach
                an env later with ``set_env``.
            device: where to put the policy.
            custom_objects: replacements for saved values: ``observation_space``, ``action_space``,
                ``policy_class``, ``policy_kwargs``, or a config field such as ``learning_rate`` (needed when
                a schedule was used).
            print_system_info: SB3's argument, used only for an SB3-format zip (``trust_pickle=True``).
            force_reset: SB3's argument, used only for an SB3-format zip; a plain-data checkpoint always resets
                the env.
            trust_pickle: also load an SB3-format zip, which unpickles objects and can run code: only for a
                file you trust.
            allow_nonfinite: also load weights or optimizer state holding NaN or infinity (to inspect them;
                ``learn()`` then raises ``NonFiniteError``).
            **kwargs: changes to the saved config (``ent_coef=0.01``; validated like the constructor's
                keywords) or to SB3's ``seed``, ``verbose``, ``tensorboard_log``, ``stats_window_size``.

        Nothing in the file is trusted beyond its schema (docs/security.md): ``llm_gym.json`` must hold the
        known keys with their types and ``"version": 1``; the optimizer's hyperparameters are the config's
        (only the optimizer's state tensors are read); no path is read from it (pass ``tensorboard_log=``);
        each member has a size cap; every tensor must have the model's keys, shapes and dtypes.

        Raises:
            CheckpointError (a ValueError): the file breaks the schema, holds NaN or infinity (without
                ``allow_nonfinite``), holds another algorithm (names both classes), or the env's spaces differ;
                the message names the file and the key. PickledCheckpointError (a CheckpointError): a pickled
                SB3 zip without ``trust_pickle=True``. FileNotFoundError: no such file.
            ValueError: a changed field is invalid (names it).
            TypeError: a keyword that is neither a config field nor one of SB3's arguments above.
        """
        unknown = set(kwargs) - {*AlgorithmConfig.field_names(), *SB3_OVERRIDES}
        if unknown:
            raise TypeError(f"load() got unexpected keyword(s) {sorted(unknown)}: pass fields of AlgorithmConfig "
                            f"or SB3's {', '.join(SB3_OVERRIDES)}.")
        if not isinstance(allow_nonfinite, bool):
            raise ValueError(f"load(): allow_nonfinite must be True or False, got {allow_nonfinite!r}.")
        target = Path(path)
        if not target.exists() and target.suffix == "":
            target = target.with_suffix(".zip")
        try:
            meta = read_meta(target, custom_objects)
        except PickledCheckpointError:
            if not trust_pickle:
                raise
            meta = None
        if meta is None:  # an SB3-format zip the caller trusts
            return cls._load_sb3_zip(target, env, device, custom_objects, print_system_info, force_reset,
                                     allow_nonfinite, kwargs)
        root = next(k for k in reversed(cls.__mro__) if k is not Saving and issubclass(k, Saving))  # LLMAlgorithm
        klass = saved_class(cls, root, meta["algorithm"], target)
        return build_from_checkpoint(klass, target, meta, env, device, custom_objects or {}, kwargs, allow_nonfinite)

    @classmethod
    def _load_sb3_zip(cls, target: Path, env, device: str, custom_objects: dict | None, print_system_info: bool,
                      force_reset: bool, allow_nonfinite: bool, kwargs: dict):
        """SB3's own ``load`` of a trusted SB3-format zip (``trust_pickle=True``), its weights checked for NaN.

        Raises:
            CheckpointError: NaN or infinity in the weights, unless ``allow_nonfinite``.
        """
        fields = AlgorithmConfig.field_names()  # SB3 replaces only saved keys; the config is saved whole
        changes = {k: v for k, v in (custom_objects or {}).items() if k in fields} | kwargs
        model = BaseAlgorithm.load.__func__(cls, target, env=env, device=device, custom_objects=custom_objects,
                                            print_system_info=print_system_info, force_reset=force_reset, **changes)
        bad = None if allow_nonfinite else first_nonfinite_named(model.policy.state_dict().items())
        if bad is not None:
            raise CheckpointError(f"{target}: the weights hold NaN or infinity ({bad!r}). Pass "
                                  f"allow_nonfinite=True to load them anyway (to inspect them).")
        return model
