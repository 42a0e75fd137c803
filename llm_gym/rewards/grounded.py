"""Grounded step checks for arithmetic: a step earns credit only for true, *useful* work toward the answer.

The plain rule checker (:func:`~llm_gym.rewards.arithmetic.arithmetic_step_reward`) asks one question of each
step: is every equation in it true? Our process-supervised GRPO runs on arithmetic level 3 showed what a
policy does with that (docs/benchmarks.md, "Process vs outcome supervision"): with +1 per true step it wrote
one true equation and stopped (``4 + 10 = 14`` as the answer to ``4 + 10 + 10``); with -1 per false step it
wrote no checkable equation at all. :func:`grounded_arithmetic_step_reward` closes both holes:

* a step's equations must be true **and grounded**: every number on an equation's left side comes from the
  question (the prompt) or from a result of an earlier grounded step (or an earlier equation of the same
  step), so ``2 + 2 = 4`` under ``What is 4 + 10 + 10?`` earns nothing;
* it must make **progress**: a bare number (``14 = 14``), an identity (``3 + 4 = 3 + 4``) or an equation whose
  left side was already written in an earlier step is a restatement;
* the response must **reach the answer**: a step earns positive credit only in a response whose final
  answer (the math answer check, :func:`~llm_gym.rewards.math.math_answer_reward`) is correct, and the last
  step is paid for that; a chain that stops short earns at best 0 on its good steps and ``penalty`` on its
  last step;
* **prose** (a step with no checkable equation) is not scored (None), except as the last step, which
  always carries the answer's verdict.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from llm_gym.rewards.arithmetic import arithmetic_equations, normalize_notation
from llm_gym.rewards.math import math_answer_reward

__all__ = ["GROUNDED_STEP_KINDS", "classify_arithmetic_steps", "grounded_arithmetic_step_reward"]

#: The kinds :func:`classify_arithmetic_steps` assigns, in order of precedence within a step.
GROUNDED_STEP_KINDS: tuple[str, ...] = ("false", "ungrounded", "restatement", "grounded", "prose")

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SPACES = re.compile(r"\s+")


def _numbers(text: str) -> set[Fraction]:
    return {Fraction(m) for m in _NUMBER.findall(text)}


def classify_arithmetic_steps(prompt: str, steps: Sequence[str]) -> list[str]:
    """Classify each step of one response by what its equations do (see the module docstring).

    Args:
        prompt: The prompt the policy saw; every number in it (few-shot examples included) is available as
            an operand.
        steps: The response's step texts (a step may hold several lines; each ``=`` is checked).

    Returns:
        One kind per step, from :data:`GROUNDED_STEP_KINDS`: ``"false"`` (an equation does not hold),
        ``"ungrounded"`` (a true equation uses a number that is neither in the prompt nor an earlier
        result), ``"restatement"`` (only bare numbers, identities such as ``3 + 4 = 3 + 4``, or left sides
        already written in an earlier step),
        ``"grounded"`` (true, grounded, at least one new computation) or ``"prose"`` (no checkable
        equation). The first applicable kind in that order wins.

    >>> classify_arithmetic_steps("What is 4 + 10 + 10?", ["4 + 10 = 14", "14 + 10 = 24", "2 + 2 = 4", "4 = 4"])
    ['grounded', 'grounded', 'ungrounded', 'restatement']
    """
    available = _numbers(normalize_notation(prompt))
    written: set[str] = set()
    kinds = []
    for step in steps:
        equations = list(arithmetic_equations(step))
        new_left, kind = set(), "prose" if not equations else "restatement"
        for eq in equations:
            if not eq.holds:
                kind = "false"
                break
            if not _numbers(eq.left) <= available:
                kind = "ungrounded"
                break
            key = _SPACES.sub("", eq.left)
            if _NUMBER.fullmatch(key) is None and key not in written and _SPACES.sub("", eq.right) != key:
                kind, _ = "grounded", new_left.add(key)
            available |= _numbers(eq.right)  # a later equation of the same step may use this result
        if kind in ("grounded", "restatement"):
            written |= new_left
        kinds.append(kind)
    return kinds


def _step_values(kinds: list[str], correct: bool, reward: float, penalty: float) -> list[float | None]:
    """Map one response's step kinds and answer verdict to step rewards."""
    values: list[float | None] = []
    for kind in kinds:
        if kind == "prose":
            values.append(None)
        elif kind == "grounded":
            values.append(reward if correct else 0.0)
        else:
            values.append(penalty)
    if kinds:  # the last step carries the answer's verdict
        values[-1] = reward if correct and kinds[-1] in ("grounded", "prose") else penalty
    return values


def grounded_arithmetic_step_reward(prompts: list[str], steps: list[list[str]], answers: list[str],
                                    reward: float = 1.0, penalty: float = -1.0,
                                    **problem_fields: Any) -> list[list[float | None]]:
    """Process reward for arithmetic that pays only true, grounded progress toward the correct answer.

    Each step is classified by :func:`classify_arithmetic_steps` and the whole response (steps joined by
    newlines) is checked with :func:`~llm_gym.rewards.math.math_answer_reward` against the gold answer.
    Step rewards, for a response whose answer is correct / wrong:

    =====================================================  ==================  ==================
    step                                                    correct answer      wrong answer
    =====================================================  ==================  ==================
    grounded (true, operands from the question or earlier  ``reward``          0.0 (no positive
    results, a new computation)                                                credit)
    false, ungrounded (e.g. ``2 + 2 = 4`` unrelated to     ``penalty``         ``penalty``
    the question) or restatement
    prose (no checkable equation)                           None (not scored)   None
    the last step (any kind)                                ``reward`` if       ``penalty``
                                                            grounded or prose,
                                                            else ``penalty``
    =====================================================  ==================  ==================

    So the two hacks of the plain checker earn nothing: ``4 + 10 = 14`` as the whole answer to
    ``4 + 10 + 10`` is a last step that does not reach the answer (``penalty``), and prose without a
    checkable equation is scored only at its last step, by the answer. With ``--advantage process`` (the
    DeepSeekMath process advantages, section 4.1.3) every value is normalised over the group's steps, so
    only differences between values matter; the defaults are symmetric (+1 / -1).

    Args:
        prompts: ``N`` prompts (their numbers are the operands the question offers).
        steps: ``N`` lists of step texts.
        answers: ``N`` gold answers.
        reward: Value of a good step in a response with the correct answer (must exceed 0 and ``penalty``).
        penalty: Value of a false, ungrounded or restating step, and of the last step of a wrong answer
            (must be ``<= 0``).
        **problem_fields: Passed to the answer check.

    Returns:
        Per response, one ``float | None`` per step.

    Raises:
        ValueError: ``penalty > 0``, ``reward <= 0`` or the three lists differ in length.

    >>> grounded_arithmetic_step_reward(["What is 4 + 10 + 10?"] * 2, [["4 + 10 = 14"],
    ...     ["4 + 10 = 14", "14 + 10 = 24", "So \\\\boxed{24}"]], ["24", "24"])
    [[-1.0], [1.0, 1.0, 1.0]]
    """
    if penalty > 0 or reward <= 0:
        raise ValueError(f"grounded_arithmetic_step_reward needs reward > 0 >= penalty, got reward={reward}, "
                         f"penalty={penalty}: a penalty is 0 or negative, a reward positive.")
    if not len(prompts) == len(steps) == len(answers):
        raise ValueError(f"prompts, steps and answers must have one entry per response, got {len(prompts)}, "
                         f"{len(steps)} and {len(answers)}.")
    verdicts = math_answer_reward(list(prompts), ["\n".join(s) for s in steps], list(answers), **problem_fields)
    return [_step_values(classify_arithmetic_steps(prompt, row), bool(verdict and verdict > 0.5), reward, penalty)
            for prompt, row, verdict in zip(prompts, steps, verdicts, strict=True)]
