"""LLMAlgorithm: the one engine every algorithm is a preset of, composed of modules with one job each.

The algorithm holds its hyperparameters once, as ``self.config`` (an
:class:`~agents.common.config.AlgorithmConfig`, validated when it is set; CleanRL's ``args``, TRL's
``self.args``), and every part reads it. An iteration reads straight down through the parts:

* :mod:`agents.common.rollout` / :mod:`agents.common.turns`: collect ``n_prompts x group_size`` responses
  (the group filter of dynamic sampling included);
* :mod:`agents.common.preparation`: store them, compute the old and reference log-probs once, shape the
  rewards (KL in the reward, overlong shaping);
* :mod:`agents.common.update`: ``train()``: advantages, then epochs of minibatch gradient steps;
* :mod:`agents.common.loop`: ``learn()`` and logging; :mod:`agents.common.setup`: the policy, reference
  model and DDP/FSDP; :mod:`agents.common.saving`: ``save`` / ``load``; :mod:`agents.common.constructor`:
  the generated keyword-only constructor.

What differs between algorithms is only the config: each algorithm class is a ``preset`` of it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.type_aliases import Schedule

from agents.common.config import AlgorithmConfig
from agents.common.constructor import generated_init
from agents.common.distributed import init_distributed, is_main_process
from agents.common.doctor import make_doctor
from agents.common.guards import NonFiniteGuard
from agents.common.loop import LearnLoop
from agents.common.policies import LLMActorCriticPolicy, LLMPolicy
from agents.common.preparation import RolloutPreparation
from agents.common.rollout import RolloutCollector
from agents.common.saving import Saving
from agents.common.setup import ModelSetup, batched_multi_turn
from agents.common.update import PolicyUpdate

__all__ = ["BUILT_FROM", "CONFIG_ONLY_FIELDS", "LLMAlgorithm"]

#: The config fields that exist only in ``model.config`` (``learning_rate`` is also SB3's attribute, a view).
CONFIG_ONLY_FIELDS: frozenset[str] = frozenset(AlgorithmConfig.field_names()) - {"learning_rate"}
#: Fields the setup builds objects from (the policy's sampling and precision, sharding); with ``beta`` and
#: ``ent_coef`` switched on or off (the reference model, the entropy's gradient) a built model refuses them.
BUILT_FROM: tuple[str, ...] = ("temperature", "top_p", "mixed_precision", "gradient_checkpointing", "fsdp")


class LLMAlgorithm(ModelSetup, RolloutPreparation, PolicyUpdate, LearnLoop, Saving, NonFiniteGuard, RolloutCollector,
                   BaseAlgorithm):
    """Base class of the RL-for-LLM algorithms, in SB3's ``BaseAlgorithm`` idiom.

    One timestep is one env step: a whole response at sequence level, one token at token level. One
    iteration samples ``n_prompts`` problems, ``group_size`` responses each (``N = n_prompts * group_size``),
    then trains. Subclasses are presets: a class docstring, ``preset`` (the config fields they change) and
    ``policy_aliases``; the constructor is generated with an explicit keyword for every field of
    :class:`~agents.common.config.AlgorithmConfig` (each documented there), plus SB3's ``policy_kwargs``,
    ``tensorboard_log``, ``verbose``, ``seed``, ``device``, ``stats_window_size``, ``doctor`` (the training
    doctor: True, False, a ``DoctorConfig`` or a ``TrainingDoctor``; docs/troubleshooting.md) and
    ``peft_config`` (TRL's name: a ``peft.LoraConfig`` trains LoRA adapters only, and the reference model is
    the base model with the adapters disabled; docs/scaling.md).

    The hyperparameters live in one place, ``model.config`` (read ``model.config.clip_range``). It is frozen;
    ``model.config = model.config.replace(ent_coef=0.01)`` replaces it, validated like the constructor's
    keywords. The fields the model is built from (``temperature``, ``top_p``, ``mixed_precision``,
    ``gradient_checkpointing``, ``fsdp``, and ``beta`` or ``ent_coef`` between zero and positive) cannot change
    on a built model: ``save`` it and ``load(path, env=env, temperature=0.7)``, which builds it again.
    ``model.learning_rate`` is SB3's attribute and a view of ``model.config.learning_rate``; assigning another
    field on the model (``model.beta = 0``) raises ``AttributeError``.

    The two positional arguments of the (generated) constructor ``__init__(policy, env, *, ...)``:

    * ``policy``: ``"LLMPolicy"`` (``"LLMActorCriticPolicy"``: with a value head) or a policy class.
    * ``env``: an llm-gym env (or a VecEnv of them); its model handle provides tokenizer and initial weights.

    Raises:
        ValueError: an invalid field (the message names it), or an env that does not fit the sizes.
        TypeError: an unknown keyword.
    """

    policy_aliases: ClassVar[dict[str, type]] = {"LLMPolicy": LLMPolicy, "LLMActorCriticPolicy": LLMActorCriticPolicy}
    policy: LLMPolicy
    config: AlgorithmConfig
    """The hyperparameters, held once: validated when set; replace it with ``model.config.replace(...)``."""
    #: The config fields this algorithm changes from :class:`AlgorithmConfig`'s defaults (GRPO's).
    preset: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.default_config().validate()
        cls.__init__ = generated_init(cls.__name__, cls.default_config(), LLMAlgorithm._init)

    @classmethod
    def default_config(cls) -> AlgorithmConfig:
        """The preset: :class:`AlgorithmConfig` with ``preset`` applied along the class hierarchy."""
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged |= getattr(klass, "preset", {}) if issubclass(klass, LLMAlgorithm) else {}
        return AlgorithmConfig(**merged)

    def _init(self, policy, env, config: AlgorithmConfig, policy_kwargs, tensorboard_log, verbose, seed, device,
              stats_window_size, doctor, peft_config, _init_setup_model) -> None:
        """The generated constructor's body: keep the validated config, then SB3's ``BaseAlgorithm`` setup."""
        self.config = config  # validated here, once (__setattr__)
        env = batched_multi_turn(env, self.rollout_size, verbose)
        if init_distributed() and not is_main_process():  # rank 0 logs; the others stay quiet
            tensorboard_log, verbose, doctor = None, 0, False
        super().__init__(policy, env, config.learning_rate, policy_kwargs=policy_kwargs,
                         stats_window_size=stats_window_size, tensorboard_log=tensorboard_log, verbose=verbose,
                         device=device, support_multi_env=True, seed=seed,
                         supported_action_spaces=(spaces.Box, spaces.Discrete))
        self.model_name_or_path: str | None = None
        self.peft_config = peft_config
        self.doctor = make_doctor(doctor)
        if _init_setup_model:
            self._setup_model()

    def _check_preset(self, config: AlgorithmConfig) -> None:
        """Hook: a preset's own constraints on the config (e.g. GSPO's ratio level). No-op here.

        Raises:
            ValueError: a field the preset does not support.
        """

    # ------------------------------------------------------------------ the config, held once
    def __setattr__(self, name: str, value: Any) -> None:
        """Validate a new ``config``; refuse a config field set as an attribute (it would be read by nothing).

        Raises:
            TypeError: ``config`` set to something that is not an :class:`AlgorithmConfig`.
            ValueError: an invalid config (the message names the field), or one the preset does not support.
            AttributeError: a config field other than ``learning_rate`` assigned on the model.
        """
        if name == "config":
            self._set_config(value)
            return
        if name in CONFIG_ONLY_FIELDS:
            raise AttributeError(f"{name!r} is a field of model.config: set it with "
                                 f"model.config = model.config.replace({name}=...)")
        super().__setattr__(name, value)

    def _set_config(self, config: AlgorithmConfig) -> None:
        """Validate ``config``, check it against the preset, keep it; a new learning rate takes effect next update.

        Raises:
            TypeError: not an :class:`AlgorithmConfig`.
            ValueError: an invalid field, one the preset does not support, or a change of a field the built
                model was made from (:data:`BUILT_FROM`, ``beta`` or ``ent_coef`` switched on or off).
        """
        if not isinstance(config, AlgorithmConfig):
            raise TypeError(f"model.config must be an AlgorithmConfig, got {type(config).__name__}")
        self._check_preset(config.validate())
        previous = self.__dict__.get("config")
        if "policy" in self.__dict__ and previous is not None:  # built: the policy and reference model exist
            changed = [name for name in BUILT_FROM if getattr(config, name) != getattr(previous, name)]
            changed += [name for name in ("beta", "ent_coef") if (getattr(config, name) > 0) != (getattr(previous, name) > 0)]
            if changed:
                raise ValueError(f"{', '.join(changed)}: the model was built with the previous value; save it and "
                                 f"load(path, env=env, {changed[0]}=...) to build it with the new one.")
        self.__dict__["config"] = config
        if "lr_schedule" in self.__dict__ and config.learning_rate != previous.learning_rate:
            self._setup_lr_schedule()  # SB3 reads the schedule, not the rate: rebuild it from the new rate

    def _adopt_loose_fields(self) -> None:
        """Move config fields found in ``__dict__`` into ``config`` (validated).

        SB3's own ``load`` (an SB3-format zip, ``trust_pickle=True``) writes the saved attributes, its
        ``custom_objects`` and keyword overrides straight into ``__dict__``; a zip saved before the config was
        held once has every field there.
        """
        loose = {name: self.__dict__.pop(name) for name in AlgorithmConfig.field_names() if name in self.__dict__}
        if loose:
            self.config = self.config.replace(**loose)

    @property
    def learning_rate(self) -> float | Schedule:
        """SB3's ``learning_rate`` (a float or a schedule): a view of ``config.learning_rate``; settable."""
        return self.config.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float | Schedule) -> None:
        if value is not self.config.learning_rate:  # SB3's __init__ assigns the config's own value
            self.config = self.config.replace(learning_rate=value)

    @property
    def rollout_size(self) -> int:
        """Sequences per rollout, ``N = n_prompts * group_size``."""
        return self.config.n_prompts * self.config.group_size


LLMAlgorithm.__init__ = generated_init(LLMAlgorithm.__name__, LLMAlgorithm.default_config(), LLMAlgorithm._init)
