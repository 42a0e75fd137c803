"""reasoning-gym's procedural tasks as llm-gym envs: ``LLMReasoningGym-v0`` (sequence) and ``LLMReasoningGymToken-v0``.

A thin adapter over the ``reasoning-gym`` package (the ``tasks`` extra; :mod:`llm_gym.tasks.reasoning_gym` holds
the dataset side): the package generates the problems and scores the answers; the env is an ordinary
:class:`~llm_gym.envs.sequence.SequenceEnv` (or :class:`~llm_gym.envs.token.TokenEnv`) over them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from llm_gym.envs.common import LLMEnvBase
from llm_gym.envs.sequence import SequenceEnv
from llm_gym.envs.token import TokenEnv
from llm_gym.lm import LanguageModel
from llm_gym.rewards import CombinedReward
from llm_gym.tasks.reasoning_gym import (
    TEST_SEED_OFFSET,
    ReasoningGymProblems,
    ReasoningGymScore,
    ReasoningGymSpec,
    import_reasoning_gym,
)
from llm_gym.validation import check_int

__all__ = ["DEFAULT_SIZE", "REASONING_GYM_TEMPLATE", "ReasoningGymEnv", "ReasoningGymTask",
           "ReasoningGymTokenEnv"]

#: The default prompt: the question, then reasoning-gym's answer convention (the answer in ``<answer>`` tags).
REASONING_GYM_TEMPLATE = "{question}\nGive your final answer between <answer> and </answer> tags."
# LLMEnvBase arguments that choose problems another way: the reasoning-gym dataset chooses them here.
_EXCLUDED = ("dataset", "question_column", "answer_column", "id_column", "format_weight")
#: Problems of an env built without ``size`` (nor ``n_problems``).
DEFAULT_SIZE = 100_000
_ENV_ARGUMENTS = frozenset(inspect.signature(LLMEnvBase.__init__).parameters) - {"self", "difficulty"}


class ReasoningGymTask:
    """Mixin of :class:`ReasoningGymEnv` and :class:`ReasoningGymTokenEnv`: a reasoning-gym dataset as the problems.

    ``gym.make("LLMReasoningGym-v0", task="leg_counting")``. Problems: the dataset's entries, each made when
    read (:class:`~llm_gym.tasks.reasoning_gym.ReasoningGymProblems`), so ``size`` can be ``10**7``. The prompt
    asks for the answer in ``<answer>`` tags (:data:`REASONING_GYM_TEMPLATE`). Reward: the component
    ``"score"``, the dataset's own ``score_answer(extract_answer(response), entry)`` in [0, 1] (partial credit
    where the dataset gives it); the full entry reaches it as the ``entry`` keyword argument, as every problem
    field reaches every reward function (``metadata`` too). ``info["accuracy"]`` is 1.0 when that score is 1
    (logged as ``rollout/accuracy``). A ``reward_fn`` replaces the reward (accuracy stays the dataset's check).

    Args:
        model: As :class:`~llm_gym.envs.sequence.SequenceEnv`.
        task: A reasoning-gym dataset name (``"leg_counting"``; unknown names raise, listing the valid ones), a
            list of names, a ``name -> weight`` mapping, or a list of ``{"name", "weight", "config"}`` dicts: a
            weighted composite (reasoning-gym's ``CompositeDataset``).
        size: Number of problems (the dataset's ``size``), an integer >= 1; None = ``n_problems``, else
            :data:`DEFAULT_SIZE`. ``n_problems`` (the other envs' name, which the command line passes) is the
            same number.
        seed: The dataset seed, an integer >= 0 with ``seed + size <= 2**31``.
        split: ``"train"`` (dataset seed ``seed``) or ``"test"`` (``seed + 2**31``: a disjoint seed range).
        config: The dataset's config keywords (one dataset), e.g. ``{"min_animals": 2}``.
        prompt_template: ``str.format`` template with ``{question}``.
        max_prompt_length: ``L``; None = the longest of the first 256 prompts plus a quarter, rounded up to a
            multiple of 32 (a longer prompt later raises at its ``reset``, naming this argument).
        **kwargs: The dataset's config keywords (``min_animals=2``, ``difficulty=...`` for the datasets that have
            one), and SequenceEnv's other arguments (``max_new_tokens``, ``reward_fn``, ``system_prompt``...).

    Raises:
        ImportError: reasoning-gym is not installed (names the extra).
        ValueError: an unknown task or config keyword (the message lists the valid ones), a config value the
            dataset refuses, a bad ``size`` / ``seed`` / ``split``, ``size`` and ``n_problems`` that differ,
            ``dataset``, a column argument or ``format_weight`` (the dataset chooses and scores the problems), or
            any SequenceEnv error.
    """

    #: Keywords beyond the signature are the dataset's own config (checked against it here), so a caller that
    #: fits keywords to the signature (``llm-gym train --env-kwargs``) passes them on.
    validates_extra_keywords = True


    def __init__(self, model: str | os.PathLike | LanguageModel | None = None, task: Any = "leg_counting",
                 size: int | None = None, seed: int = 0, split: str = "train", config: Mapping[str, Any] | None = None,
                 prompt_template: str = REASONING_GYM_TEMPLATE, max_prompt_length: int | None = None, **kwargs: Any):
        owner = type(self).__name__
        import_reasoning_gym(owner)
        given = sorted(key for key in _EXCLUDED if key in kwargs)
        if given:
            raise ValueError(f"{owner}: {given[0]} cannot be set: the reasoning-gym dataset chooses and scores the "
                             f"problems (set task, size, seed, split and the dataset's config keywords).")
        n_problems = kwargs.pop("n_problems", None)
        if size is not None and n_problems is not None and size != n_problems:
            raise ValueError(f"{owner}: size={size} and n_problems={n_problems} name the same number; give one.")
        size = check_int("size", size if size is not None else n_problems or DEFAULT_SIZE, minimum=1, owner=owner)
        seed = check_int("seed", seed, minimum=0, owner=owner)
        if seed + size > TEST_SEED_OFFSET:
            raise ValueError(f"{owner}: seed + size must be <= 2**31 (train and test seeds stay disjoint), got "
                             f"seed={seed}, size={size}.")
        if split not in ("train", "test"):
            raise ValueError(f"{owner}: split must be 'train' or 'test' (disjoint dataset seeds), got {split!r}.")
        dataset_config = {**dict(config or {}), **{k: v for k, v in kwargs.items() if k not in _ENV_ARGUMENTS}}
        env_kwargs = {k: v for k, v in kwargs.items() if k in _ENV_ARGUMENTS}
        self.rg_spec = ReasoningGymSpec.parse(task, dataset_config, size, seed + (TEST_SEED_OFFSET if split == "test"
                                                                                 else 0))
        self.curriculum_level: int | None = None
        problems = ReasoningGymProblems(self.rg_spec, split)
        self.scorer = ReasoningGymScore(self.rg_spec, problems.dataset)
        reward_fn = env_kwargs.pop("reward_fn", None)
        super().__init__(model, dataset=problems, split=split, seed=seed, prompt_template=prompt_template,
                         max_prompt_length=max_prompt_length,
                         reward_fn={"score": self.scorer} if reward_fn is None else reward_fn, **env_kwargs)
        self.task = self.rg_spec.label

    def _check_lengths(self, max_prompt_length: int | None) -> int:
        """``max_prompt_length``, checked on the first prompts; None = their longest plus a quarter (x32)."""
        if max_prompt_length is None:
            longest = max(self.lm.prompt_lengths(self.prompts[:256]))
            room = self.lm.context_length - self.max_new_tokens
            max_prompt_length = max(longest, min(-(-(longest * 5 // 4) // 32) * 32, room))
        return super()._check_lengths(max_prompt_length)

    def accuracy_values(self, prompts: list[str], texts: list[str], answers: list[str],
                        components: dict[str, np.ndarray], fields: dict[str, Any]) -> np.ndarray:
        """1.0 where the dataset's ``score_answer`` gives full marks (the ``"score"`` component, or a call of it)."""
        own = isinstance(self.reward, CombinedReward) and self.reward.components.get("score") is self.scorer
        scores = components["score"] if own else self.scorer(prompts, texts, answers, **fields)
        return (np.asarray(scores, dtype=np.float64) >= 1.0 - 1e-9).astype(np.float64)

    # ----------------------------------------------------------------- curriculum
    @property
    def curriculum_levels(self) -> range:
        """The task's reasoning-gym curriculum levels (``range(0)`` when no dataset of it defines one)."""
        return range(self.rg_spec.n_levels())

    def set_curriculum_level(self, level: int) -> None:
        """Regenerate the problems at reasoning-gym curriculum ``level`` (:meth:`ReasoningGymSpec.at_level`).

        Takes effect at the next ``reset``; the scorer follows the new dataset.

        Raises:
            ValueError: ``level`` outside :attr:`curriculum_levels`, or a prompt longer than ``max_prompt_length``.
        """
        spec = self.rg_spec.at_level(level)
        problems = ReasoningGymProblems(spec, self.split, level)
        self.set_problems(problems)
        self.scorer.spec, self.scorer._dataset = spec, problems.dataset
        self.curriculum_level = level


class ReasoningGymEnv(ReasoningGymTask, SequenceEnv):
    """A reasoning-gym task, one whole response per episode: ``gym.make("LLMReasoningGym-v0", task=...)``.

    :class:`ReasoningGymTask` (problems, reward, accuracy, curriculum) on :class:`~llm_gym.envs.sequence.SequenceEnv`
    (spaces, episode, info).

    Example:
        >>> env = gym.make("LLMReasoningGym-v0", task="leg_counting", min_animals=2)  # doctest: +SKIP
    """


class ReasoningGymTokenEnv(ReasoningGymTask, TokenEnv):
    """A reasoning-gym task, one token per step: ``gym.make("LLMReasoningGymToken-v0", task=...)``.

    :class:`ReasoningGymTask` on :class:`~llm_gym.envs.token.TokenEnv`.
    """
