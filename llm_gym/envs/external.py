"""Multi-turn envs whose episodes another library plays: :class:`ExternalEpisodeEnv`.

The base of the thin adapters :class:`~llm_gym.envs.textarena.TextArenaEnv` (TextArena games) and
:class:`~llm_gym.envs.openenv.OpenEnvEnv` (OpenEnv environments). The other library owns the rules, the
observations and the scoring; llm-gym owns the tokens (:class:`~llm_gym.envs.multiturn.MultiTurnEnv`: token in,
token out, one step = one assistant turn).
"""

from __future__ import annotations

import os
from typing import Any

from llm_gym.envs.multiturn.base import MultiTurnEnv
from llm_gym.lm import LanguageModel
from llm_gym.tasks import Problem
from llm_gym.validation import check_int

__all__ = ["NO_ANSWER", "TEST_SEED_OFFSET", "ExternalEpisodeEnv", "episode_seeds"]

#: ``Problem.answer`` of an external episode: the other library scores it, there is no gold answer.
NO_ANSWER = "(scored by the environment)"
#: The ``split="test"`` seeds start here, so they never meet the training seeds ``seed .. seed + n - 1``.
TEST_SEED_OFFSET = 1_000_000
# Arguments of SequenceEnv that choose or score problems: an external env defines both itself.
_EXCLUDED = ("task", "dataset", "reward_fn", "format_weight", "difficulty", "question_column", "answer_column",
             "id_column", "few_shot")


def episode_seeds(n_problems: int, seed: int, split: str, owner: str = "") -> tuple[int, ...]:
    """The reset seeds of an external env's problems: ``seed + i`` (train) or ``TEST_SEED_OFFSET + seed + i``.

    Args:
        n_problems: Number of problems ``n``, an integer >= 1.
        seed: First seed, an integer >= 0.
        split: ``"train"`` or ``"test"`` (disjoint seeds for any ``seed`` below ``TEST_SEED_OFFSET - n``).
        owner: Class name for error messages.

    Returns:
        ``n`` seeds.

    Raises:
        ValueError: a bad ``n_problems``, ``seed`` or ``split``.

    Example:
        >>> episode_seeds(3, 0, "train"), episode_seeds(2, 5, "test")
        ((0, 1, 2), (1000005, 1000006))
    """
    n = check_int("n_problems", n_problems, minimum=1, owner=owner)
    first = check_int("seed", seed, minimum=0, owner=owner)
    if split not in ("train", "test"):
        raise ValueError(f"{owner}: split must be 'train' or 'test' (disjoint reset seeds), got {split!r}.")
    first += 0 if split == "train" else TEST_SEED_OFFSET
    return tuple(range(first, first + n))


class ExternalEpisodeEnv(MultiTurnEnv):
    """A :class:`MultiTurnEnv` whose problem ``k`` is another library's env reset with ``seeds[k]``.

    Problems: one per seed of :func:`episode_seeds` (``n_problems``, ``seed``, ``split``). The constructor
    resets the external env once per seed and keeps its first observation (:meth:`start_episode`) as the
    problem's ``question`` (``answer`` is :data:`NO_ANSWER`), so prompts, ``max_prompt_length`` and the spaces
    are fixed as in every llm-gym env, and ``reset(options={"problem_id": k})`` (group sampling: G copies on
    one problem) replays the same start. ``reset`` resets the external env with ``seeds[k]`` and checks that
    it starts as recorded; a different first observation is an error, since the prompt would then describe
    another episode than the one being played.

    Turns: :meth:`respond` (the subclass) sends the turn's text to the external env and turns its answer
    into a :class:`~llm_gym.envs.multiturn.TurnResult`. Info adds ``episode_seed`` (the external reset seed).

    Args:
        model: As :class:`MultiTurnEnv`.
        n_problems: Number of seeds (problems), an integer >= 1.
        seed: First seed, an integer >= 0.
        split: ``"train"`` or ``"test"`` (disjoint seeds).
        prompt_template: ``str.format`` template with ``{question}`` (the first observation).
        **kwargs: MultiTurnEnv's and SequenceEnv's arguments except those that choose or score problems
            (``task``, ``dataset``, ``reward_fn``, ``format_weight``, ``difficulty``, ``few_shot`` and the column
            names): the external env does both.

    Raises:
        ValueError: one of the excluded arguments, a bad ``n_problems`` / ``seed`` / ``split``, an external
            env whose first observation is empty, or any MultiTurnEnv error.
    """

    #: ``Problem.source`` and the first part of the problem ids (``"{source}/{split}/{seed}"``).
    source = "external"

    def __init__(
        self,
        model: str | os.PathLike | LanguageModel | None = None,
        n_problems: int = 100,
        seed: int = 0,
        split: str = "train",
        prompt_template: str = "{question}",
        **kwargs: Any,
    ):
        owner = type(self).__name__
        given = sorted(key for key in _EXCLUDED if key in kwargs)
        if given:
            raise ValueError(
                f"{owner}: {given[0]} cannot be set: the external environment chooses the problems (one per "
                f"reset seed: set n_problems, seed and split) and scores the episodes."
            )
        self.seeds = episode_seeds(n_problems, seed, split, owner)
        problems = [
            Problem(
                id=f"{self.source}/{split}/{s}",
                question=self._first_observation(s),
                answer=NO_ANSWER,
                source=self.source,
            )
            for s in self.seeds
        ]
        super().__init__(model, dataset=problems, split=split, seed=seed, prompt_template=prompt_template,
                         **kwargs)

    def _first_observation(self, seed: int) -> str:
        text = self.start_episode(seed)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(
                f"{type(self).__name__}: the environment's first observation after reset(seed={seed}) is "
                f"{text!r}; it must be non-empty text (it becomes the prompt)."
            )
        return text

    # ----------------------------------------------------------------- subclass hooks
    def start_episode(self, seed: int) -> str:
        """Reset the external env with ``seed`` and return its first observation as text.

        Raises:
            NotImplementedError: in the base class; subclasses implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement start_episode(seed) -> str.")

    # ----------------------------------------------------------------- episode
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Pick a problem (as MultiTurnEnv does) and reset the external env with its seed.

        Returns:
            ``(obs, info)`` as MultiTurnEnv, info with ``episode_seed``.

        Raises:
            ValueError: ``problem_id`` outside ``0 .. n_problems - 1``.
            RuntimeError: the external env's first observation differs from the recorded prompt (its reset is
                not reproducible from the seed).
        """
        obs, info = super().reset(seed=seed, options=options)
        k = self._problem_id
        text = self.start_episode(self.seeds[k])
        if text != self.problems[k].question:
            raise RuntimeError(
                f"{type(self).__name__}: reset(seed={self.seeds[k]}) of the environment started with another "
                f"observation than at construction, so the prompt would describe a different episode. Its "
                f"reset must be reproducible from the seed.\nRecorded: {self.problems[k].question[:200]!r}\n"
                f"Now: {text[:200]!r}"
            )
        return obs, info | {"episode_seed": self.seeds[k]}
