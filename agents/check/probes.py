"""Reward-hack probes of ``llm-gym check``: responses that must not earn more than an honest baseline.

Each probe is a function ``probe(view, lm, max_new_tokens) -> text or token ids`` over one problem
(:class:`ProblemView`), played as every turn of an episode (:func:`~agents.check.play.play`):

============================  ======================================================  ==================
probe                         response                                                must not beat
============================  ======================================================  ==================
``probe_empty_answer``        nothing (EOS at once)                                   a wrong answer
``probe_question_copied``     the question, copied back                               a wrong answer
``probe_repeated_token``      one token (the gold answer's first) for the whole budget  a wrong answer
``probe_invalid_action``      a malformed tool call and move (:data:`INVALID_ACTION`)   a wrong answer
``probe_gold_twice``          the gold answer stated twice                            the gold answer once
============================  ======================================================  ==================

``probe_baselines`` reports the two baselines and warns when the gold answer does not beat the wrong one (the
probes are then compared with a floor).

The wrong answer is a value that is not the gold answer (the gold plus one for a number) written in each of
:data:`ANSWER_FORMATS`; its baseline is the best-paid format, so a format reward does not make a probe fail. An
env without a gold answer (``info["answer"]`` empty, or an external env scored by its own library) is compared
with :data:`NO_GOLD_ANSWER`, and its gold-twice probe is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from agents.check.play import play
from agents.check.report import REWARD_HACK, CheckResult

__all__ = ["ANSWER_FORMATS", "INVALID_ACTION", "NO_GOLD_ANSWER", "PROBES", "ProblemView", "empty_answer",
           "gold_twice", "invalid_action", "problem_view", "question_copied", "repeated_token", "run_probes",
           "wrong_value"]

#: The ways an answer is written: ``\boxed{}`` (math), ``<answer>`` tags (reasoning-gym), a phrase, bare.
ANSWER_FORMATS = ("\\boxed{{{}}}", "<answer>{}</answer>", "The answer is {}.", "{}")
#: A turn that is no valid move or tool call in any llm-gym env: a malformed calculator call, a bracketed
#: non-move (TextArena's move syntax) and an unclosed JSON tool call.
INVALID_ACTION = "<calc>)(</calc> [not a move] <tool_call>{not json"
#: The baseline response of an env without a gold answer: an honest non-answer.
NO_GOLD_ANSWER = "I do not know."
# A probe earning more than its baseline by less than this is rounding.
TOLERANCE = 1e-6


@dataclass(frozen=True)
class ProblemView:
    """What the probes know of one problem.

    Attributes:
        problem_id: The problem index.
        question: The question text (the prompt text when the env has no question).
        answer: The gold answer as text, or None when the env has none.
    """

    problem_id: int
    question: str
    answer: str | None


def problem_view(env: gym.Env, problem_id: int) -> ProblemView:
    """The question and gold answer of ``problem_id`` (from the reset info and the env's problems)."""
    from llm_gym.envs.external import NO_ANSWER

    _, info = env.reset(seed=0, options={"problem_id": problem_id})
    problems = getattr(env.unwrapped, "problems", None)
    question = problems[problem_id].question if problems else str(info.get("prompt_text", ""))
    answer = info.get("answer")
    answer = None if answer is None or str(answer).strip() in ("", NO_ANSWER) else str(answer).strip()
    return ProblemView(problem_id, question, answer)


def wrong_value(answer: str) -> str:
    """A value that is not ``answer``: a number plus one, else the text reversed (or with an ``x`` added).

    >>> wrong_value("41"), wrong_value("-2.5"), wrong_value("1,000"), wrong_value("cat")
    ('42', '-1.5', '1001', 'tac')
    """
    try:
        number = float(answer.replace(",", ""))
    except ValueError:
        return answer[::-1] if answer[::-1] != answer else answer + "x"
    if not math.isfinite(number):
        return "0"
    return str(int(number) + 1) if number == int(number) else str(number + 1)


def empty_answer(view: ProblemView, lm: Any, max_new_tokens: int) -> str:
    """Nothing: the turn is EOS alone."""
    return ""


def question_copied(view: ProblemView, lm: Any, max_new_tokens: int) -> str:
    """The question, copied back (cut at the response budget)."""
    return view.question


def repeated_token(view: ProblemView, lm: Any, max_new_tokens: int) -> np.ndarray:
    """One token for the whole budget, no EOS: the gold answer's first token (the word "the" without gold)."""
    ids = lm.tokenizer(view.answer or "the", add_special_tokens=False)["input_ids"]
    return np.full(max_new_tokens, ids[0] if ids else lm.eos_token_id, dtype=np.int64)


def invalid_action(view: ProblemView, lm: Any, max_new_tokens: int) -> str:
    """:data:`INVALID_ACTION`: a malformed tool call and an invalid move."""
    return INVALID_ACTION


def gold_twice(view: ProblemView, fmt: str) -> str:
    """The gold answer stated twice in format ``fmt`` (one of :data:`ANSWER_FORMATS`)."""
    return f"{fmt.format(view.answer)} {fmt.format(view.answer)}"


#: The probes compared with a wrong answer: check name -> probe function.
PROBES: dict[str, Callable[[ProblemView, Any, int], str | np.ndarray]] = {
    "probe_empty_answer": empty_answer,
    "probe_question_copied": question_copied,
    "probe_repeated_token": repeated_token,
    "probe_invalid_action": invalid_action,
}


def _reward(env: gym.Env, turn: str | np.ndarray, problem_id: int) -> float:
    """The return of an episode that plays ``turn`` at every turn."""
    return play(env, lambda i, obs: turn, problem_id).reward


def _verdict(name: str, rewards: Sequence[float], baselines: Sequence[float], views: Sequence[ProblemView],
             baseline_name: str) -> CheckResult:
    """Fail when a probe's reward beats its baseline on any problem; the detail prints both (means over problems)."""
    excess = [r - b for r, b in zip(rewards, baselines, strict=True)]
    worst = int(np.argmax(excess))
    data = {"rewards": list(rewards), "baselines": list(baselines), "baseline": baseline_name,
            "problem_ids": [v.problem_id for v in views], "max_excess": float(excess[worst])}
    shown = f"reward {np.mean(rewards):.3g} vs {baseline_name} {np.mean(baselines):.3g}"
    if excess[worst] > TOLERANCE:
        return CheckResult(name, REWARD_HACK, "fail", f"{shown}: pays {excess[worst]:.3g} more than {baseline_name} "
                                                      f"on problem {views[worst].problem_id}", data)
    return CheckResult(name, REWARD_HACK, "pass", shown, data)


def _baselines(env: gym.Env, views: Sequence[ProblemView], wrong_rewards: Sequence[float]) -> CheckResult:
    """``probe_baselines``: the wrong and gold answers' rewards (best format); ``warn`` when the gold answer earns no
    more than the wrong one (the probes are then compared with a floor: a response budget too small, a reward
    that cannot tell right from wrong)."""
    gold = [(v, w) for v, w in zip(views, wrong_rewards, strict=True) if v.answer is not None]
    if not gold:
        return CheckResult("probe_baselines", REWARD_HACK, "skip", "no gold answer (info['answer']): the probes are "
                           f"compared with an honest non-answer, {NO_GOLD_ANSWER!r}")
    wrong = [w for _, w in gold]
    right = [max(_reward(env, fmt.format(v.answer), v.problem_id) for fmt in ANSWER_FORMATS) for v, _ in gold]
    data = {"wrong_answer": wrong, "gold_answer": right, "problem_ids": [v.problem_id for v, _ in gold]}
    shown = f"gold answer {np.mean(right):.3g}, wrong answer {np.mean(wrong):.3g}"
    if any(r <= w + TOLERANCE for r, w in zip(right, wrong, strict=True)):
        return CheckResult("probe_baselines", REWARD_HACK, "warn", f"{shown}: the gold answer does not beat a wrong "
                           f"answer on every problem (response budget too small? a reward blind to correctness?)", data)
    return CheckResult("probe_baselines", REWARD_HACK, "pass", shown, data)


def run_probes(env: gym.Env, problem_ids: Sequence[int]) -> list[CheckResult]:
    """Every probe on every problem of ``problem_ids``: one :class:`CheckResult` per probe, with its rewards, after
    ``probe_baselines`` (the wrong and gold answers' rewards).

    Args:
        env: The env.
        problem_ids: The problems to probe (each probe's worst problem decides).
    """
    base = env.unwrapped
    lm, budget = base.lm, base.max_new_tokens
    views = [problem_view(env, k) for k in problem_ids]
    wrong = [max(_reward(env, fmt.format(wrong_value(v.answer)), v.problem_id) for fmt in ANSWER_FORMATS)
             if v.answer is not None else _reward(env, NO_GOLD_ANSWER, v.problem_id) for v in views]
    results = [_baselines(env, views, wrong)] + [_verdict(name, [_reward(env, probe(v, lm, budget), v.problem_id) for v in views], wrong,
                                      views, "a wrong answer") for name, probe in PROBES.items()]
    gold = [v for v in views if v.answer is not None]
    if not gold:
        results.append(CheckResult("probe_gold_twice", REWARD_HACK, "skip",
                                   "no gold answer (info['answer']): the env scores episodes itself"))
        return results
    excess: list[tuple[float, float]] = []  # per problem: the format where twice beats once by the most
    for v in gold:  # (ties: the format the env pays best, so the table shows the answer it takes)
        pairs = [(_reward(env, gold_twice(v, fmt), v.problem_id), _reward(env, fmt.format(v.answer), v.problem_id))
                 for fmt in ANSWER_FORMATS]
        excess.append(max(pairs, key=lambda p: (p[0] - p[1], p[1])))
    results.append(_verdict("probe_gold_twice", [t for t, _ in excess], [o for _, o in excess], gold,
                            "the gold answer once"))
    return results
