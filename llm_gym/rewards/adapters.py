"""Adapters from other libraries' reward-function conventions to llm-gym's.

:func:`from_trl` turns a reward function written for TRL's ``GRPOTrainer`` (documented at
https://huggingface.co/docs/trl/grpo_trainer, "Using a custom reward function") into an llm-gym reward
function, so the same function scores in both trainers.

>>> def reward_len(completions, **kwargs):       # TRL's documented example
...     return [-abs(20 - len(completion)) for completion in completions]
>>> fn = from_trl(reward_len)
>>> fn(["2 + 3 = ?"], ["The answer is 5."], ["5"]), fn.__name__
([-4], 'reward_len')
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from llm_gym.rewards.base import reward_fn_name

__all__ = ["TRL_FIELD_NAMES", "from_trl"]

#: llm-gym problem fields renamed to the dataset-column names TRL reward functions read.
TRL_FIELD_NAMES = {"solutions": "solution", "problem_ids": "problem_id"}


def _no_op(*args: Any, **kwargs: Any) -> None:
    """Stands in for TRL's ``log_extra`` / ``log_metric`` callbacks (nothing is logged)."""


def _encoder(tokenizer: Any) -> Callable[[str], list[int]] | None:
    """``text -> token ids`` (no special tokens) from a HF tokenizer or a :class:`~llm_gym.lm.LanguageModel`."""
    if tokenizer is None:
        return None
    tok = tokenizer if hasattr(tokenizer, "encode") else getattr(tokenizer, "tokenizer", None)
    if tok is None or not hasattr(tok, "encode"):
        raise TypeError(f"from_trl: tokenizer must be a Hugging Face tokenizer (or a LanguageModel), got "
                        f"{type(tokenizer).__name__}.")
    return lambda text: list(tok.encode(text, add_special_tokens=False))


def trl_kwargs(answers: Sequence[str], problem_fields: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments a TRL reward function gets besides prompts, completions and completion_ids.

    Dataset columns: ``answer`` (the gold answers), ``solution`` and ``problem_id`` (llm-gym's
    ``solutions`` / ``problem_ids`` fields), any other problem field under its own name. Trainer
    arguments: ``trainer_state=None`` (there is no ``transformers.TrainerState``), and no-op ``log_extra``
    and ``log_metric`` callables.
    """
    columns = {TRL_FIELD_NAMES.get(key, key): list(value) if isinstance(value, (list, tuple)) else value
               for key, value in problem_fields.items()}
    return {**columns, "answer": list(answers), "trainer_state": None, "log_extra": _no_op, "log_metric": _no_op}


def from_trl(fn: Callable[..., Any], tokenizer: Any = None, name: str | None = None) -> Callable[..., Any]:
    """Adapt a TRL ``GRPOTrainer`` reward function to llm-gym's ``fn(prompts, responses, answers, **fields)``.

    TRL calls ``fn(prompts=..., completions=..., completion_ids=..., **kwargs)`` with every dataset column
    (but ``prompt``) and ``trainer_state`` as keyword arguments, and reads one float (or None) per
    completion. The adapted function calls ``fn`` once per batch the same way, in TRL's standard
    (non-conversational) format: ``prompts`` and ``completions`` are lists of strings.

    - ``completion_ids``: each response re-encoded with ``tokenizer`` (no special tokens; llm-gym's reward
      signature does not carry the sampled ids, so they can differ from them, e.g. no EOS), or None
      without a tokenizer.
    - Dataset columns: ``answer`` (the gold answers), ``solution`` and ``problem_id`` (from the env's
      ``solutions`` and ``problem_ids`` fields), other problem fields under their own names.
    - ``trainer_state=None``, ``log_extra`` and ``log_metric`` that log nothing.
    - An ``async def`` reward function (TRL 1.x runs those concurrently) is run with ``asyncio.run``.

    The result is an ordinary llm-gym reward function: ``SequenceEnv(reward_fn=from_trl(fn))``,
    ``CombinedReward``, the ``RewardFunction`` wrapper; it keeps ``fn``'s name (:func:`reward_fn_name`)
    for logging, and :func:`~llm_gym.rewards.call_reward_fn` validates what it returns (None = no opinion;
    NaN, which TRL tolerates, is rejected).

    Args:
        fn: A TRL reward function, e.g. ``def reward_len(completions, **kwargs)``.
        tokenizer: A Hugging Face tokenizer or :class:`~llm_gym.lm.LanguageModel` for ``completion_ids``;
            None passes ``completion_ids=None``.
        name: The name to log under; default ``reward_fn_name(fn)``.

    Returns:
        ``reward(prompts, responses, answers, **problem_fields) -> fn's list``, with ``__name__`` set and
        the TRL function in ``__wrapped__``.

    Raises:
        TypeError: ``fn`` is not callable, or ``tokenizer`` has no ``encode``.

    Example:
        >>> def accuracy(completions, answer, **kwargs):
        ...     return [float(a in c) for c, a in zip(completions, answer)]
        >>> from_trl(accuracy)(["1 + 1?"], ["It is 2"], ["2"])
        [1.0]
    """
    if not callable(fn):
        raise TypeError(f"from_trl: fn must be a TRL reward function fn(completions, **kwargs), got "
                        f"{type(fn).__name__}.")
    encode = _encoder(tokenizer)
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)

    def reward(prompts: list[str], responses: list[str], answers: list[str], **problem_fields: Any) -> Any:
        completion_ids = None if encode is None else [encode(r) for r in responses]
        out = fn(prompts=list(prompts), completions=list(responses), completion_ids=completion_ids,
                 **trl_kwargs(answers, problem_fields))
        return asyncio.run(out) if is_async else out

    reward.__name__ = reward.__qualname__ = reward_fn_name(fn) if name is None else name
    reward.__doc__ = getattr(fn, "__doc__", None)
    reward.__wrapped__ = fn  # type: ignore[attr-defined]
    return reward
