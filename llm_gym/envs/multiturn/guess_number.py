"""Guess a secret integer with higher/lower feedback: :class:`GuessNumberEnv` (``"LLMGuessNumber-v0"``)."""

from __future__ import annotations

import os
import re
import unicodedata
from typing import Any

from llm_gym.envs.multiturn.base import MultiTurnEnv, TurnResult
from llm_gym.lm import LanguageModel
from llm_gym.tasks import Problem
from llm_gym.validation import check_int

__all__ = ["GUESS_QUESTION", "GuessNumberEnv"]

GUESS_QUESTION = (
    "I am thinking of an integer between {low} and {high}. Guess it: reply with one integer, and I "
    "will tell you whether my number is higher or lower."
)
# A number as written: a radix literal ("0x10") or digits with optional decimal parts ("11.7", "1.2.3"), signed.
# Only a plain integer is a guess: "11.7" is not 7 (nor 11), "0x10" not 10. "42." ends a sentence: 42.
_NUMBER = re.compile(r"-?(?:0[xXbBoO][0-9a-fA-F]\w*|\d+(?:\.\d+)*)")
_WHOLE = re.compile(r"-?\d+")
_MAX_SECRETS = 10_000


class GuessNumberEnv(MultiTurnEnv):
    """Guess a secret integer in ``[low, high]``; the env answers ``"higher"`` or ``"lower"``.

    Problems are synthetic: one :class:`~llm_gym.tasks.Problem` per secret (id
    ``"guess_number/{low}-{high}/{secret}"``, the same question for all, ``answer`` = the secret), so reset
    draws the secret from ``np_random`` (reproducible with ``reset(seed=...)``) and
    ``options={"problem_id": k}`` picks secret ``low + k``.

    Each turn's guess is the last number in its text, which must be a whole integer written in decimal
    (``"42"``, ``"-3"``, ``"42."`` at the end of a sentence). A guess below the secret gets ``"higher"``, above
    it ``"lower"`` (as a user message); no number, or a last number that is not a whole integer (``"11.7"``,
    ``"0x10"``), is an invalid move and gets a reminder to reply with one integer. The correct guess
    terminates the episode with reward 1.0 (``accuracy`` 1.0). Every other step pays 0.0; ``max_turns``
    (default 7, enough for binary search over 1..100) truncates with accuracy 0. Info adds ``guess`` (this
    turn's integer, or None: an invalid move, or an integer with more digits than any secret, which only
    its sign places, above or below the range).

    Args:
        model: As :class:`MultiTurnEnv`.
        low: Smallest secret, an integer.
        high: Largest secret, an integer >= ``low``, with at most 10,000 secrets.
        max_turns: As MultiTurnEnv.
        prompt_template: ``str.format`` template with ``{question}``.
        **kwargs: MultiTurnEnv's and SequenceEnv's arguments, except ``task``, ``dataset``, ``n_problems``
            and ``reward_fn`` (the env defines its problems and reward).

    Raises:
        ValueError: a bad ``low`` / ``high``, one of the excluded arguments, or any MultiTurnEnv error.
    """

    def __init__(
        self,
        model: str | os.PathLike | LanguageModel | None = None,
        low: int = 1,
        high: int = 100,
        max_turns: int = 7,
        prompt_template: str = "{question}",
        **kwargs: Any,
    ):
        owner = type(self).__name__
        self.low = check_int("low", low, owner=owner)
        self.high = check_int("high", high, minimum=self.low, owner=owner)
        if self.high - self.low + 1 > _MAX_SECRETS:
            raise ValueError(
                f"{owner}: [low, high] = [{low}, {high}] holds more than {_MAX_SECRETS} secrets (one "
                f"problem each); narrow the range."
            )
        given = sorted(
            key for key in ("task", "dataset", "n_problems", "reward_fn") if kwargs.get(key) is not None
        )
        if given:
            raise ValueError(
                f"{owner}: {given[0]} cannot be set: the env has one problem per secret in [low, high] "
                f"and rewards a correct guess; set low and high instead."
            )
        question = GUESS_QUESTION.format(low=self.low, high=self.high)
        problems = [
            Problem(
                id=f"guess_number/{self.low}-{self.high}/{s}",
                question=question,
                answer=str(s),
                source="guess_number",
            )
            for s in range(self.low, self.high + 1)
        ]
        super().__init__(
            model, max_turns=max_turns, dataset=problems, prompt_template=prompt_template, **kwargs
        )
        self.task = "guess_number"

    @property
    def secret(self) -> int:
        """The current episode's secret (raises ``RuntimeError`` before the first reset)."""
        if self._problem_id is None:
            raise RuntimeError("Call reset() before reading the secret.")
        return int(self.problems[self._problem_id].answer)

    def respond(self, turn_text: str) -> TurnResult:
        """``"higher"`` / ``"lower"`` for a wrong guess, None (final, reward 1.0) for the secret.

        Args:
            turn_text: The turn's text; its last number is the guess, if it is a whole integer.

        Returns:
            A :class:`TurnResult`.
        """
        numbers = _NUMBER.findall(turn_text)
        if not numbers or not _WHOLE.fullmatch(numbers[-1]):
            return TurnResult(
                f"Please reply with one integer between {self.low} and {self.high}.", info={"guess": None}
            )
        guess = self._integer(numbers[-1])
        if guess is None:  # more digits than any secret: only its sign matters
            return TurnResult("higher" if numbers[-1].startswith("-") else "lower", info={"guess": None})
        if guess == self.secret:
            return TurnResult(None, 1.0, {"accuracy": 1.0}, 1.0, info={"guess": guess})
        return TurnResult("higher" if guess < self.secret else "lower", info={"guess": guess})

    def _integer(self, text: str) -> int | None:
        """``int(text)`` for a plain integer, or None when it has more digits than ``low`` and ``high``.

        Such an integer lies outside ``[low, high]``, and ``int`` may refuse it (Python's 4,300-digit limit).
        """
        body = text.lstrip("-")
        start = next((i for i, c in enumerate(body) if unicodedata.decimal(c) != 0), len(body))  # leading zeros
        if len(body) - start > max(len(str(abs(self.low))), len(str(abs(self.high)))):
            return None
        return int(text[: len(text) - len(body)] + (body[start:] or "0"))
