"""reasoning-gym's procedural datasets as llm-gym problems, made on demand, scored by the dataset's own check.

A thin adapter over the ``reasoning-gym`` package (an optional extra: ``pip install -e ".[tasks]"``): the package
generates the problems (entry ``k`` of a dataset is a pure function of its seed and ``k``), scores answers
(``score_answer(answer, entry)``) and defines difficulty curricula; llm-gym keeps the tokens.

- :class:`ReasoningGymSpec`: which datasets (one, or a weighted composite), their config keywords, ``size`` and
  ``seed``; :meth:`ReasoningGymSpec.build` makes the dataset with reasoning-gym's own factory.
- :class:`ReasoningGymProblems`: the dataset's entries as :class:`~llm_gym.tasks.Problem` records, problem ``k``
  built when read (a ``size`` of ``10**7`` costs nothing). Each problem's ``extra`` holds ``metadata`` and the
  full ``entry``, so reward functions receive them as keyword arguments.
- :class:`ReasoningGymScore`: the reward function ``score_answer(extract_answer(response), entry)``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from llm_gym.tasks.lazy import ProblemSequence
from llm_gym.tasks.problem import Problem

__all__ = ["NO_ANSWER", "TEST_SEED_OFFSET", "ReasoningGymProblems", "ReasoningGymScore", "ReasoningGymSpec",
           "import_reasoning_gym", "reasoning_gym_tasks"]

_EXTRA = 'pip install -e ".[tasks]" (or pip install reasoning-gym==0.1.25)'
#: The ``split="test"`` dataset seed is ``seed + TEST_SEED_OFFSET``: entry ``k`` is drawn from ``Random(seed + k)``,
#: so train (``seed .. seed + size - 1``) and test seeds never meet while ``seed + size <= TEST_SEED_OFFSET``, and
#: every seed stays below 2**32 (some datasets seed numpy with it).
TEST_SEED_OFFSET = 2**31
#: ``Problem.answer`` of an entry without a single gold answer (its ``score_answer`` decides).
NO_ANSWER = "(scored by reasoning-gym)"


def import_reasoning_gym(owner: str = "LLMReasoningGym-v0") -> Any:
    """The ``reasoning_gym`` module, or an ImportError naming the extra that installs it.

    Raises:
        ImportError: reasoning-gym is not installed (the message says ``pip install -e ".[tasks]"``).
    """
    try:
        import reasoning_gym
    except ImportError as exc:
        raise ImportError(f"{owner} needs the reasoning-gym package, an optional extra of llm-gym: {_EXTRA}.") from exc
    return reasoning_gym


def reasoning_gym_tasks() -> tuple[str, ...]:
    """The dataset names registered in the installed reasoning-gym, sorted (``"composite"`` left out).

    Raises:
        ImportError: reasoning-gym is not installed (names the extra).
    """
    import_reasoning_gym("reasoning_gym_tasks")
    from reasoning_gym.factory import DATASETS

    return tuple(sorted(name for name in DATASETS if name != "composite"))


@dataclasses.dataclass(frozen=True, eq=True)
class ReasoningGymSpec:
    """What defines a reasoning-gym dataset: its tasks (name, weight, config keywords), ``size`` and ``seed``.

    Attributes:
        tasks: ``(name, weight, config)`` per dataset; one dataset is built with ``create_dataset(name, **config)``,
            several make reasoning-gym's weighted ``CompositeDataset`` (each entry drawn from one of them with
            probability proportional to its weight).
        size: Number of entries (reasoning-gym's virtual size).
        seed: The dataset seed (entry ``k`` is drawn from ``Random(seed + k)``).
    """

    tasks: tuple[tuple[str, float, Mapping[str, Any]], ...]
    size: int
    seed: int

    @classmethod
    def parse(cls, task: Any, config: Mapping[str, Any], size: int, seed: int) -> ReasoningGymSpec:
        """The spec of the env's ``task`` argument.

        Args:
            task: A dataset name (``"leg_counting"``); a list of names (equal weights); a mapping ``name -> weight``;
                or a list of reasoning-gym ``DatasetSpec``-like dicts ``{"name", "weight", "config"}``.
            config: Config keywords of a single dataset (``{"min_animals": 2}``); with several datasets, give
                each its own ``config`` in the list of dicts instead.
            size: Number of entries.
            seed: The dataset seed.

        Raises:
            ValueError: an unknown dataset name (the message lists the valid ones), a bad weight, a repeated name,
                ``config`` with several datasets, or an empty task list.
            TypeError: ``task`` of another type.
        """
        if isinstance(task, str):
            tasks = [(task, 1.0, dict(config))]
        else:
            tasks = _task_list(task)
            if config:
                raise ValueError(f"config keywords {sorted(config)} apply to one dataset; with several, give each its "
                                 f'own: task=[{{"name": ..., "weight": 1.0, "config": {{...}}}}, ...].')
        valid = reasoning_gym_tasks()
        names = [name for name, _, _ in tasks]
        for name, weight, _ in tasks:
            if name not in valid:
                raise ValueError(f"unknown reasoning-gym task {name!r}. The datasets of the installed reasoning-gym "
                                 f"are: {', '.join(valid)}.")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
                raise ValueError(f"task {name!r}: weight must be a number > 0, got {weight!r}.")
        if len(set(names)) != len(names):
            raise ValueError(f"task lists a dataset more than once: {names}.")
        return cls(tuple((name, float(weight), dict(cfg)) for name, weight, cfg in tasks), int(size), int(seed))

    @property
    def label(self) -> str:
        """The task's name in ids and logs: the dataset name, or ``"composite"``."""
        return self.tasks[0][0] if len(self.tasks) == 1 else "composite"

    def build(self) -> Any:
        """The reasoning-gym dataset (``create_dataset``, or a ``CompositeDataset`` of several).

        Raises:
            ValueError: a config keyword the dataset does not have (the message lists its keywords), or a value
                its ``validate`` refuses (the message gives reasoning-gym's reason).
        """
        import_reasoning_gym()
        from reasoning_gym.composite import CompositeConfig, CompositeDataset, DatasetSpec
        from reasoning_gym.factory import DATASETS, create_dataset

        for name, _, cfg in self.tasks:
            known = {f.name for f in dataclasses.fields(DATASETS[name][1]) if f.init} - {"seed", "size"}
            unknown = sorted(set(cfg) - known)
            if unknown:
                raise ValueError(f"reasoning-gym task {name!r} has no config keyword {unknown[0]!r}; its keywords are: "
                                 f"{', '.join(sorted(known))} (seed and size are the env's).")
        try:
            if len(self.tasks) == 1:
                name, _, cfg = self.tasks[0]
                return create_dataset(name, **cfg, size=self.size, seed=self.seed)
            specs = [DatasetSpec(name, weight, dict(cfg)) for name, weight, cfg in self.tasks]
            return CompositeDataset(CompositeConfig(size=self.size, seed=self.seed, datasets=specs))
        except AssertionError as exc:  # reasoning-gym's config.validate()
            raise ValueError(f"reasoning-gym refused the config of {self.label!r}: {exc or 'invalid value'} "
                             f"(config: {[dict(cfg) for _, _, cfg in self.tasks]}).") from None

    def __hash__(self) -> int:
        return hash(json.dumps([self.tasks, self.size, self.seed], sort_keys=True, default=repr))

    def n_levels(self) -> int:
        """Levels of the tasks' reasoning-gym curricula (the most of any task's attributes); 0 if none has one."""
        import_reasoning_gym()
        from reasoning_gym.factory import create_curriculum, has_curriculum

        counts = [max((len(attr.levels) for attr in create_curriculum(name).attributes.values()), default=1)
                  for name, _, _ in self.tasks if has_curriculum(name)]
        return max(counts, default=0)

    def at_level(self, level: int) -> ReasoningGymSpec:
        """This spec with each task's config at curriculum ``level`` (reasoning-gym's ``BaseCurriculum``).

        Each task with a curriculum gets ``set_global_level(level)`` (an attribute with fewer levels stays at
        its last) and ``generate_configuration`` over its config (the curriculum's fields win); a task without
        one keeps its config.

        Args:
            level: ``0 .. n_levels() - 1``.

        Raises:
            ValueError: ``level`` outside that range, or no task has a curriculum.
        """
        import_reasoning_gym()
        from reasoning_gym.factory import create_curriculum, has_curriculum

        n = self.n_levels()
        if not n:
            raise ValueError(f"no reasoning-gym curriculum for {[name for name, _, _ in self.tasks]}: these datasets "
                             f"define no difficulty levels.")
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < n:
            raise ValueError(f"curriculum level must be an integer in 0..{n - 1}, got {level!r}.")
        tasks = []
        for name, weight, cfg in self.tasks:
            if has_curriculum(name):
                curriculum = create_curriculum(name)
                curriculum.set_global_level(level)
                config = curriculum.generate_configuration(dict(cfg))
                cfg = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                       if f.init and f.name not in ("seed", "size")}
            tasks.append((name, weight, cfg))
        return dataclasses.replace(self, tasks=tuple(tasks))


def _task_list(task: Any) -> list[tuple[str, Any, Mapping[str, Any]]]:
    """``(name, weight, config)`` of a list of names, a ``name -> weight`` mapping or a list of spec dicts.

    Raises:
        TypeError: another type, or a list item that is neither a name nor a mapping.
        ValueError: an empty list, or a spec dict without ``name``.
    """
    if isinstance(task, Mapping):
        items = [(name, weight, {}) for name, weight in task.items()]
    elif isinstance(task, Sequence):
        items = []
        for item in task:
            if isinstance(item, str):
                items.append((item, 1.0, {}))
            elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
                items.append((item["name"], item.get("weight", 1.0), dict(item.get("config") or {})))
            else:
                raise TypeError(f'task list items must be dataset names or {{"name", "weight", "config"}} dicts, got '
                                f"{item!r:.80}.")
    else:
        raise TypeError(f"task must be a reasoning-gym dataset name, a list of names, a name -> weight mapping or a "
                        f"list of {{'name', 'weight', 'config'}} dicts; got {type(task).__name__}.")
    if not items:
        raise ValueError("task is empty: name at least one reasoning-gym dataset.")
    return items


class ReasoningGymProblems(ProblemSequence):
    """The entries of a reasoning-gym dataset as problems, entry ``k`` generated when problem ``k`` is read.

    Problem ``k``: ``id`` ``"reasoning_gym/{label}/{split}/{k}"`` (``/L{level}`` after the label at a curriculum
    level), the entry's ``question``, its ``answer`` as written (:data:`NO_ANSWER` when it has none),
    ``source`` ``"reasoning_gym/{dataset}"``, ``difficulty`` the curriculum level (None without one) and
    ``extra``: ``{"metadata": entry["metadata"], "entry": entry}``.

    Args:
        spec: The dataset.
        split: ``"train"`` or ``"test"`` (only named in the ids: the spec's seed already differs).
        level: The curriculum level the spec was made at, or None.
        dataset: The built dataset, if already built (else :meth:`ReasoningGymSpec.build`).
    """

    def __init__(self, spec: ReasoningGymSpec, split: str, level: int | None = None, dataset: Any = None):
        self.spec, self.split, self.level = spec, split, level
        self.dataset = spec.build() if dataset is None else dataset

    def __len__(self) -> int:
        return self.spec.size

    def key(self) -> tuple:
        return self.spec, self.split, self.level

    def make(self, k: int) -> Problem:
        """Problem ``k`` from entry ``k`` of the dataset (see the class docstring)."""
        entry = self.dataset[k]
        label = self.spec.label if self.level is None else f"{self.spec.label}/L{self.level}"
        source = entry.get("metadata", {}).get("source_dataset", self.spec.label)
        fields = {"id": f"reasoning_gym/{label}/{self.split}/{k}", "question": entry["question"],
                  "source": f"reasoning_gym/{source}", "difficulty": self.level,
                  "extra": {"metadata": entry.get("metadata", {}), "entry": entry}}
        answer = entry.get("answer")
        try:
            return Problem(answer=answer if isinstance(answer, str) else NO_ANSWER, **fields)
        except ValueError:  # an empty, NaN or infinite answer text: score_answer still has the entry
            return Problem(answer=NO_ANSWER, **fields)


class ReasoningGymScore:
    """The reward function of a reasoning-gym dataset: ``score_answer(extract_answer(response), entry)``.

    The answer is the text of the last ``<answer>...</answer>`` in the response (reasoning-gym's
    ``extract_answer``; None without one, which scores 0); the entry comes from the ``entry`` keyword argument
    (each problem's field, see :class:`ReasoningGymProblems`). An answer that makes ``score_answer`` raise scores
    0.0. Holds only the :class:`ReasoningGymSpec` when pickled (a worker process rebuilds the dataset once).

    Args:
        spec: The dataset (its ``score_answer``; a composite's forwards to the entry's source dataset).
        dataset: The built dataset, if already built.

    Example:
        >>> score = ReasoningGymScore(ReasoningGymSpec.parse("leg_counting", {}, 10, 0))  # doctest: +SKIP
        >>> score(["p"], ["<answer>4</answer>"], ["4"], entry=[{"answer": "4", "metadata": {}}])  # doctest: +SKIP
        [1.0]
    """

    __name__ = "score"

    def __init__(self, spec: ReasoningGymSpec, dataset: Any = None):
        self.spec = spec
        self._dataset = dataset

    @property
    def dataset(self) -> Any:
        """The dataset whose ``score_answer`` scores (built on first use)."""
        if self._dataset is None:
            self._dataset = self.spec.build()
        return self._dataset

    def __call__(self, prompts: list[str], responses: list[str], answers: list[str], *,
                 entry: list[dict[str, Any]], **fields: Any) -> list[float]:
        """Score ``N`` responses: one value in [0, 1] each (the dataset's ``score_answer``)."""
        from reasoning_gym.utils import extract_answer

        scores = []
        for response, item in zip(responses, entry, strict=True):
            try:
                scores.append(float(self.dataset.score_answer(extract_answer(response), entry=item)))
            except Exception:  # noqa: BLE001 - a malformed answer the dataset cannot parse: no credit
                scores.append(0.0)
        return scores

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "_dataset": None}

    def __eq__(self, other: Any) -> bool:
        return type(other) is type(self) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash((type(self), self.spec))

    def __repr__(self) -> str:
        return f"ReasoningGymScore({self.spec.label!r})"
