"""AlgorithmConfig: the one table every algorithm is a row of (DeepSeekMath's unified paradigm as a config).

DeepSeekMath (arXiv:2402.03300) section 5.2.1 says a method is three choices: the data source, the reward
function and the gradient coefficient. Here those choices are the fields of one dataclass, each documented
right under it (CleanRL's ``Args`` style): sampling (data source), KL placement and reward shaping
(reward function), and advantage estimator, ratio level, clip range, loss mode and aggregation (gradient
coefficient). ``GRPO``, ``DAPO``, ``GSPO``, ``PPO``, ``RLOO``, ``ReinforcePlusPlus``, ``CISPO``,
``DrGRPO`` and ``OnlineRFT`` are named presets: each one is a dict of the fields it changes
(:attr:`agents.common.base.LLMAlgorithm.preset`). The algorithm constructors, the flags of
``scripts/train.py`` and the defaults tables of ``docs/algorithms/`` are all generated from this class.

>>> AlgorithmConfig().beta, AlgorithmConfig(beta=0.0).beta
(0.04, 0.0)
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

from agents.common.advantages import GROUP_SCALES, PROCESS_CREDITS
from agents.common.guards import NONFINITE_MODES
from agents.common.losses import AGGREGATION_MODES, IMPORTANCE_SAMPLING_LEVELS, KL_ESTIMATORS
from agents.common.losses import LOSS_MODES as POLICY_LOSS_MODES
from agents.common.precision import MIXED_PRECISION
from llm_gym.validation import check_int, check_real

__all__ = ["ADVANTAGE_ESTIMATORS", "CHOICES", "KL_PLACEMENTS", "LOSS_MODES", "SUPERVISION_MODES", "AlgorithmConfig",
           "CheckedSchedule", "check_field_type", "field_docs"]

#: Valid ``advantage_estimator`` values (verl's ``adv_estimator`` names where verl has one).
ADVANTAGE_ESTIMATORS: tuple[str, ...] = (
    "grpo", "rloo", "reinforce_plus_plus", "reinforce_plus_plus_baseline", "gae", "rft",
)
#: Valid ``loss_mode`` values: PPO's clipped surrogate, CISPO's clipped IS weight, or weighted NLL (RFT).
LOSS_MODES: tuple[str, ...] = (*POLICY_LOSS_MODES, "sft")
#: Where the KL to the reference model acts: a loss term (GRPO) or a per-token reward penalty (PPO).
KL_PLACEMENTS: tuple[str, ...] = ("loss", "reward")
#: Valid ``advantage`` (supervision) values: outcome (DeepSeekMath 4.1.2) or process (4.1.3) supervision.
SUPERVISION_MODES: tuple[str, ...] = ("outcome", "process")
#: The allowed strings of every ``str`` field (a field typed ``str`` must have an entry: :func:`check_field_type`).
CHOICES: dict[str, tuple[str, ...]] = {
    "on_nonfinite": NONFINITE_MODES, "mixed_precision": MIXED_PRECISION, "advantage_estimator": ADVANTAGE_ESTIMATORS,
    "advantage": SUPERVISION_MODES, "process_credit": PROCESS_CREDITS, "scale_rewards": GROUP_SCALES,
    "loss_mode": LOSS_MODES, "importance_sampling_level": IMPORTANCE_SAMPLING_LEVELS, "kl_placement": KL_PLACEMENTS,
    "kl_estimator": KL_ESTIMATORS, "loss_aggregation": AGGREGATION_MODES,
}


def check_field_type(name: str, annotation: str, value: Any) -> None:
    """Check that ``value`` has the type its field is annotated with; never coerce it.

    ``bool`` fields take ``True`` / ``False`` only (not ``1``, ``"no"`` or ``"false"``, which Python would read
    as truthy), ``int`` fields Python or numpy integers (not bools, not ``2.0``), ``float`` fields finite real
    numbers (not bools, not strings), ``str`` fields one of :data:`CHOICES`; ``X | None`` also takes None.
    ``learning_rate`` also takes a schedule (a callable, checked each time it is read: :class:`CheckedSchedule`).

    Args:
        name: the field's name, for the message.
        annotation: the field's annotation as written (``"int | None"``; ``from __future__ import annotations``).
        value: the value to check.

    Raises:
        ValueError: the wrong type (the message names the field, the expected type and the value's type).
        TypeError: an annotation this function does not know (a new field needs a check here).

    >>> check_field_type("dynamic_sampling", "bool", "no")
    Traceback (most recent call last):
    ...
    ValueError: dynamic_sampling must be True or False (a bool), got 'no' (str); strings and numbers are not read as booleans.
    """
    kinds = [part.strip() for part in str(annotation).split("|")]
    kind = kinds[0]
    if kind not in ("bool", "int", "float", "str") or kinds[1:] not in ([], ["None"]):
        raise TypeError(f"AlgorithmConfig.{name}: no type check for the annotation {annotation!r}; add one to "
                        f"check_field_type.")
    if value is None and "None" in kinds:
        return
    if name == "learning_rate" and callable(value):
        return  # a schedule: its values are checked each time one is read (CheckedSchedule)
    none = " or None" if "None" in kinds else ""
    if kind == "bool" and not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False (a bool){none}, got {value!r} ({type(value).__name__}); "
                         f"strings and numbers are not read as booleans.")
    if kind == "int":
        check_int(name, value, allow_none="None" in kinds)
    elif kind == "float":
        check_real(name, value, allow_none="None" in kinds)
    elif kind == "str":
        if name not in CHOICES:
            raise TypeError(f"AlgorithmConfig.{name}: a str field needs its allowed values in CHOICES.")
        if not isinstance(value, str) or value not in CHOICES[name]:
            raise ValueError(f"{name} must be one of {CHOICES[name]}{none}, got {value!r}")


class CheckedSchedule:
    """A learning-rate schedule whose every value is checked: finite and >= 0, or a clear error.

    SB3 reads ``lr_schedule(progress_remaining)`` before each update (``progress_remaining`` goes from 1 at
    the start of ``learn`` to 0 at its end). A schedule that returns a negative rate would turn descent into
    ascent, and NaN would destroy the weights: each value is checked when it is read, and returned unchanged.

    >>> CheckedSchedule(lambda p: 1e-3 * p)(0.5)
    0.0005
    >>> CheckedSchedule(lambda p: 1e-3 * (2 * p - 1))(0.25)
    Traceback (most recent call last):
    ...
    ValueError: The learning_rate schedule returned -0.0005 at progress_remaining=0.25 (1 at the start of learn(), 0 at its end): a learning rate must be a finite number >= 0 (a negative rate is gradient ascent). Fix the schedule, e.g. clamp it with max(0.0, ...).
    """

    def __init__(self, schedule: Callable[[float], float]):
        self.schedule = schedule

    def __call__(self, progress_remaining: float) -> float:
        """The schedule's value at ``progress_remaining``, unchanged once checked.

        Raises:
            ValueError: a value that is not a finite real number >= 0 (names the progress value).
        """
        value = self.schedule(progress_remaining)
        ok = not isinstance(value, (bool, str, bytes))  # a number, NumPy scalar or 0-d tensor: what float() reads
        try:
            ok = ok and math.isfinite(float(value)) and float(value) >= 0
        except (OverflowError, TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several values
            ok = False
        if not ok:
            raise ValueError(f"The learning_rate schedule returned {value!r} at progress_remaining="
                             f"{progress_remaining:g} (1 at the start of learn(), 0 at its end): a learning rate "
                             f"must be a finite number >= 0 (a negative rate is gradient ascent). Fix the "
                             f"schedule, e.g. clamp it with max(0.0, ...).")
        return value


@dataclass(frozen=True)
class AlgorithmConfig:
    """Every hyperparameter of the RL algorithms; the defaults are GRPO's (DeepSeekMath, TRL).

    Each field is documented right below it; ``scripts/train.py --help`` prints the same text. Raises
    ``ValueError`` from :meth:`validate` (called by every algorithm's constructor) naming the field.

    An algorithm holds one instance, ``model.config`` (CleanRL's ``args``, TRL's ``trainer.args``), and every
    part of the loop reads it. It is frozen, so it stays the object that was validated: change a field with
    ``model.config = model.config.replace(beta=0.0)``, which the algorithm validates again.
    """

    # ------------------------------------------------------------------ sampling (the data source)
    n_prompts: int = 4
    """Prompts per rollout (problems drawn per iteration)."""
    group_size: int = 8
    """Responses sampled per prompt, G (DeepSeekMath 4.1; TRL ``num_generations``). 1 = no group baseline."""
    temperature: float = 1.0
    """Sampling temperature; the log-probs of the loss use the same temperature (TRL)."""
    top_p: float = 1.0
    """Nucleus sampling threshold, in (0, 1]; 1.0 = off."""
    # ------------------------------------------------------------------ optimisation
    learning_rate: float = 1e-6
    """AdamW step size (TRL GRPO's default; 0 freezes the weights); a float or an SB3 schedule."""
    batch_size: int | None = None
    """Sequences per optimizer step (minibatch); None = the whole rollout, one step per epoch."""
    micro_batch_size: int = 8
    """Sequences per forward/backward (gradient accumulation inside a minibatch); memory only, same result."""
    n_epochs: int = 1
    """Passes over each rollout (PPO's K epochs; TRL ``num_iterations``)."""
    max_grad_norm: float = 1.0
    """Gradient clipping: maximum global L2 norm of the gradient."""
    on_nonfinite: str = "raise"
    """A NaN/inf reward, log-prob, loss or gradient: "raise" (stop with an error naming it; the update is not
    applied) or "skip" (skip that update, warn once, count it in train/nonfinite_skips)."""
    # ------------------------------------------------------------------ precision and memory
    mixed_precision: str = "no"
    """Autocast of the rollouts' and the loss's forward passes (accelerate's names): "no" (float32), "bf16"
    or "fp16" (with loss scaling). Weights, optimizer state, log-probs, ratio, KL and losses stay float32."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass (transformers' gradient
    checkpointing): less activation memory for about one more forward of compute."""
    fsdp: bool = False
    """Under torchrun / accelerate with several processes: shard parameters, gradients and optimizer state
    over the ranks (torch FSDP2, one unit per decoder layer) instead of replicating the model (DDP). Also
    switched on by ``accelerate launch --use_fsdp``. Ignored in a single process. See docs/scaling.md."""
    # ------------------------------------------------------------------ advantage (gradient coefficient)
    advantage_estimator: str = "grpo"
    """How advantages are computed: "grpo" (group-normalised, DeepSeekMath 4.1.2), "rloo" (leave-one-out
    baseline, Ahmadian et al. 2024), "reinforce_plus_plus" (returns normalised over the batch, Hu 2025),
    "reinforce_plus_plus_baseline" (group mean subtracted first), "gae" (critic, arXiv:1506.02438 eq. 16),
    "rft" (1 for a reward >= reward_threshold else 0: Online RFT, DeepSeekMath 5.2.1)."""
    advantage: str = "outcome"
    """Supervision of the "grpo" estimator: "outcome" (4.1.2) or "process" (step rewards, 4.1.3)."""
    process_credit: str = "sum"
    """advantage="process": a token's advantage is the "sum" of the normalised rewards of the steps ending at
    or after it (DeepSeekMath 4.1.3) or their "min" minus the group's mean response value (PURE's min-form
    credit assignment, arXiv:2504.15275)."""
    scale_rewards: str = "group"
    """"grpo" estimator: divide centred rewards by the group std ("group"), the batch std ("batch", TRL) or
    not at all ("none": Dr.GRPO, arXiv:2503.20783)."""
    eps: float = 1e-4
    """Added to the std in the "grpo" advantage denominator (reward units)."""
    normalize_advantage: bool = False
    """Whiten the advantages over the rollout's real tokens (PPO: True, as SB3 and TRL)."""
    gamma: float = 1.0
    """Discount over response tokens ("gae", "reinforce_plus_plus")."""
    gae_lambda: float = 0.95
    """GAE lambda (arXiv:1506.02438 eq. 16; TRL 0.95)."""
    reward_threshold: float = 1.0
    """"rft" estimator: a response counts as correct when its reward is at least this (reward units)."""
    # ------------------------------------------------------------------ ratio and clipping
    loss_mode: str = "ppo_clip"
    """Per-token surrogate: "ppo_clip" (PPO eq. 7), "cispo" (clipped IS weight under stop-gradient,
    MiniMax-M1 arXiv:2506.13585 eq. 4) or "sft" (weighted NLL, no ratio: RFT)."""
    importance_sampling_level: str = "token"
    """Ratio level: "token", "sequence" (GSPO eq. 7, length-normalised) or "sequence-token" (GSPO eq. 13)."""
    clip_range: float = 0.2
    """Clip epsilon: the ratio is clipped below at 1 - clip_range (PPO eq. 7)."""
    clip_range_high: float | None = None
    """Upper clip epsilon (1 + clip_range_high); None = clip_range. DAPO clip-higher: 0.28 (eq. 10)."""
    # ------------------------------------------------------------------ KL to the reference model
    beta: float = 0.04
    """KL coefficient (DeepSeekMath eq. 3: 0.04); 0 = no reference model, no KL."""
    kl_placement: str = "loss"
    """Where the KL acts: "loss" (a beta * KL term per token, GRPO eq. 3) or "reward" (a -beta * KL reward
    on every token, InstructGPT eq. 2 / PPO)."""
    kl_estimator: str = "k3"
    """KL estimator: "k1" (log-ratio), "k2" (squared log-ratio / 2), "k3" (DeepSeekMath eq. 4)."""
    # ------------------------------------------------------------------ aggregation
    loss_aggregation: str = "seq-mean-token-mean"
    """How the (N, T) per-token loss becomes a scalar: "seq-mean-token-mean" (GRPO eq. 3), "token-mean"
    (DAPO eq. 8, PPO), "seq-mean-token-sum", "seq-mean-token-sum-norm" (Dr.GRPO)."""
    # ------------------------------------------------------------------ group filter and reward shaping
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling (section 3.2, eq. 11): drop groups whose rewards are all equal and sample
    more prompts until n_prompts mixed groups are found."""
    max_sampling_rounds: int = 4
    """Dynamic sampling: at most this many generation rounds per iteration (then a warning)."""
    overlong_buffer: int | None = 0
    """DAPO overlong shaping (eq. 13): the penalty starts this many tokens before max_new_tokens;
    0 = off, None = 20 % of max_new_tokens (DAPO: 4096 of 20480)."""
    overlong_penalty_factor: float = 1.0
    """Overlong shaping: the penalty at max_new_tokens tokens (reward units)."""
    mask_truncated: bool = False
    """DAPO overlong filtering: responses cut by the token budget leave the loss."""
    # ------------------------------------------------------------------ critic (PPO)
    vf_coef: float = 0.1
    """Value-loss weight c1 (PPO eq. 9; TRL 0.1); used when the policy has a value head."""
    clip_range_vf: float | None = 0.2
    """Value clipping around the rollout's values, reward units (TRL cliprange_value); None = unclipped."""
    ent_coef: float = 0.0
    """Entropy-bonus weight c2 (PPO eq. 9; SB3 and TRL: 0)."""
    target_kl: float | None = None
    """Stop the epochs when a minibatch's approx_kl > 1.5 * target_kl (SB3's rule); None = never."""

    def validate(self) -> AlgorithmConfig:
        """Check every field's type (:func:`check_field_type`, from its annotation), range and choice.

        Returns:
            ``self`` (for chaining).

        Raises:
            ValueError: a field of the wrong type (``dynamic_sampling="no"``: a bool field takes True or False
                only), out of range, or not one of its choices; the message names the field.
        """
        for field in fields(self):
            check_field_type(field.name, field.type, getattr(self, field.name))
        for name in ("n_prompts", "group_size", "micro_batch_size", "n_epochs", "max_sampling_rounds"):
            check_int(name, getattr(self, name), minimum=1)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, minimum=1)
        if self.batch_size is not None and self.batch_size > self.n_prompts * self.group_size:
            raise ValueError(f"batch_size={self.batch_size} must be in 1..n_prompts*group_size="
                             f"{self.n_prompts * self.group_size}")
        self._check_ranges()
        self._check_combinations()
        return self

    def _check_ranges(self) -> None:
        positive = ("temperature", "clip_range", "max_grad_norm")
        non_negative = ("beta", "eps", "overlong_penalty_factor", "vf_coef", "ent_coef")
        for name in positive:
            check_real(name, getattr(self, name), 0, min_inclusive=False)
        for name in non_negative:
            check_real(name, getattr(self, name), 0)
        for name in ("clip_range_high", "clip_range_vf", "target_kl"):
            if getattr(self, name) is not None:
                check_real(name, getattr(self, name), 0, min_inclusive=False)
        check_real("top_p", self.top_p, 0, 1, min_inclusive=False)
        check_real("gamma", self.gamma, 0, 1)
        check_real("gae_lambda", self.gae_lambda, 0, 1)
        check_real("reward_threshold", self.reward_threshold)
        if not callable(self.learning_rate):  # a schedule (callable) is checked at each read: CheckedSchedule
            check_real("learning_rate", self.learning_rate, 0)
        if self.overlong_buffer is not None:
            check_int("overlong_buffer", self.overlong_buffer, minimum=0)

    def _check_combinations(self) -> None:
        if self.dynamic_sampling and self.group_size < 2:
            raise ValueError("dynamic_sampling needs group_size >= 2: a group of one response never has mixed "
                             "rewards. Raise group_size or pass dynamic_sampling=False.")
        if self.advantage == "process" and self.advantage_estimator != "grpo":
            raise ValueError(f"advantage='process' (DeepSeekMath 4.1.3) is defined for advantage_estimator='grpo', "
                             f"got {self.advantage_estimator!r}; the token-reward estimators ('gae', "
                             f"'reinforce_plus_plus') already read step rewards as per-token rewards.")
        if self.loss_mode == "cispo" and self.importance_sampling_level != "token":
            raise ValueError("loss_mode='cispo' clips token-level importance weights: use "
                             "importance_sampling_level='token'.")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The names of every field, in declaration order."""
        return tuple(f.name for f in fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """``{field: value}`` (a plain dict; a schedule ``learning_rate`` stays a callable)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes: Any) -> AlgorithmConfig:
        """A copy with ``changes`` applied (``dataclasses.replace``); not validated (:meth:`validate` does).

        Raises:
            TypeError: a name that is not a field.
        """
        return dataclasses.replace(self, **changes)


@cache
def field_docs() -> dict[str, str]:
    """``{field: docstring}`` of :class:`AlgorithmConfig`, read from the string under each field (CleanRL style).

    The same text is the ``--help`` of ``scripts/train.py`` and the description column of the defaults
    tables in ``docs/algorithms/``.
    """
    tree = ast.parse(textwrap.dedent(inspect.getsource(AlgorithmConfig)))
    body = tree.body[0].body
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs
