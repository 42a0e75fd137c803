"""Property-based: any constructor config gives either a clear ValueError naming a field, or a run with finite weights;
every field refuses a value of the wrong type; a learning-rate schedule is checked each time it is read.

Hypothesis draws values for a few fields at a time, valid or not (negative, zero, NaN, infinity, huge, wrong
type, unknown names), builds a preset on the tiny model and, when construction succeeds, runs one short
``learn``. Nothing may fail in any other way: no crash deep in the loss, no silent NaN weights.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agents import ALGORITHMS, GRPO, AlgorithmConfig, NonFiniteError
from agents.common.config import CHOICES, CheckedSchedule, check_field_type

ANY_NUMBER = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-5, 40),
                       st.sampled_from([0, 1, 2, -1, 0.5, 1e30, -1e-9]))
FIELDS = {
    "n_prompts": st.one_of(st.integers(-1, 3), st.just(2.5)),
    "group_size": st.one_of(st.integers(-1, 3), st.just(True)),
    "batch_size": st.one_of(st.none(), st.integers(-1, 10)),
    "micro_batch_size": st.integers(-1, 4),
    "n_epochs": st.integers(-1, 2),
    "learning_rate": ANY_NUMBER,
    "clip_range": ANY_NUMBER,
    "clip_range_high": st.one_of(st.none(), ANY_NUMBER),
    "beta": ANY_NUMBER,
    "temperature": ANY_NUMBER,
    "top_p": ANY_NUMBER,
    "max_grad_norm": ANY_NUMBER,
    "eps": ANY_NUMBER,
    "gamma": ANY_NUMBER,
    "kl_estimator": st.sampled_from(["k1", "k2", "k3", "k4"]),
    "loss_aggregation": st.sampled_from(["token-mean", "seq-mean-token-mean", "sum"]),
    "kl_placement": st.sampled_from(["loss", "reward", "advantage"]),
    "advantage_estimator": st.sampled_from(["grpo", "rloo", "reinforce_plus_plus", "vtrace"]),
}


def digit_reward(prompts, responses, answers, **fields):
    return [sum(c.isdigit() for c in r) / max(len(r), 1) for r in responses]


@pytest.mark.usefixtures("one_thread")
@example(algo="cispo", changes={"learning_rate": 454403.0})  # finite huge weights: logits overflow in sampling
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(algo=st.sampled_from(sorted(ALGORITHMS)),
       changes=st.dictionaries(st.sampled_from(sorted(FIELDS)), st.none(), min_size=1, max_size=3).flatmap(
           lambda keys: st.fixed_dictionaries({k: FIELDS[k] for k in keys})))
def test_any_config_is_a_clear_error_or_a_finite_run(algo, changes, make_env):
    cls = ALGORITHMS[algo]
    config = {"n_prompts": 1, "group_size": 2, "learning_rate": 1e-3, **changes}
    if algo == "ppo" and "group_size" not in changes:
        config["group_size"] = 1
    try:
        model = cls("LLMPolicy", make_env(reward_fn=digit_reward, max_new_tokens=6), device="cpu", seed=0,
                    **config)
    except ValueError as exc:
        named = [f for f in AlgorithmConfig.field_names() if f in str(exc)] + (["env"] if "envs" in str(exc) else [])
        assert named, f"the error names no field: {exc}"
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model.learn(2 * model.rollout_size)  # a step to non-finite weights is caught before the next
        except NonFiniteError:
            return  # a config that overflows (e.g. a huge learning rate) is stopped before any update
    weights = torch.cat([p.detach().flatten() for p in model.policy.parameters()])
    assert bool(torch.isfinite(weights).all()), f"{algo} {config}: non-finite weights"
    assert math.isfinite(model.config.learning_rate)


# ------------------------------------------------------------------------------ every field is checked for its type
def wrong_values(name: str, annotation: str) -> st.SearchStrategy:
    """Values of the wrong type for a field annotated ``annotation`` (``"int | None"``...): what Python would
    accept silently (``"no"`` is truthy, ``True == 1``, ``2.0 == 2``)."""
    optional = "None" in annotation
    junk = st.one_of(st.lists(st.integers(0, 3), max_size=2), st.just(b"1"), st.just(object()),
                     st.just(complex(1, 0)), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
    none = st.nothing() if optional else st.none()
    kind = annotation.split("|")[0].strip()
    if kind == "bool":
        return st.one_of(junk, none, st.integers(-2, 2), st.floats(), st.sampled_from(["no", "false", "False", "0", ""]))
    if kind == "int":
        return st.one_of(junk, none, st.booleans(), st.floats(), st.text(max_size=3), st.just("8"))
    if kind == "float":
        values = st.one_of(junk, none, st.booleans(), st.text(max_size=3), st.just("0.1"),
                           st.floats(allow_nan=True).filter(lambda x: not math.isfinite(x)))
        return values if name != "learning_rate" else values.filter(lambda v: not callable(v))
    choices = CHOICES[name]
    return st.one_of(junk, none, st.booleans(), st.integers(), st.sampled_from([c.encode() for c in choices]),
                     st.sampled_from([c.upper() + " " for c in choices]), st.text(max_size=4).filter(
                         lambda s: s not in choices))


FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(AlgorithmConfig)}


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_every_field_refuses_a_value_of_the_wrong_type_by_name(data):
    """Introspects every field of AlgorithmConfig and its annotation: a value of the wrong type is a ValueError
    naming the field, never coerced (``dynamic_sampling="no"`` used to turn dynamic sampling on)."""
    name = data.draw(st.sampled_from(sorted(FIELD_TYPES)), label="field")
    value = data.draw(wrong_values(name, FIELD_TYPES[name]), label="value")
    with pytest.raises((TypeError, ValueError), match=rf"\b{name}\b"):
        AlgorithmConfig(**{name: value}).validate()


def test_every_annotation_has_a_type_check_and_every_str_field_its_choices():
    for name, annotation in FIELD_TYPES.items():
        check_field_type(name, annotation, getattr(AlgorithmConfig(), name))  # TypeError for an unknown annotation
        if annotation.startswith("str"):
            assert name in CHOICES, name
    assert {a.split("|")[0].strip() for a in FIELD_TYPES.values()} == {"bool", "int", "float", "str"}
    assert {n for n, a in FIELD_TYPES.items() if a == "bool"} >= {"dynamic_sampling", "gradient_checkpointing"}


@pytest.mark.parametrize(("field", "value"), [("dynamic_sampling", "no"), ("gradient_checkpointing", "false"),
                                              ("fsdp", 1), ("normalize_advantage", "False"), ("mask_truncated", 0)])
def test_the_constructor_refuses_a_truthy_non_bool(make_env, field, value):
    with pytest.raises(ValueError, match=rf"{field} must be True or False \(a bool\), got {value!r}"):
        GRPO("LLMPolicy", make_env(), device="cpu", **{field: value})


@pytest.mark.parametrize(("argument", "value"), [("seed", "abc"), ("seed", -1), ("seed", 1.5), ("verbose", "1"),
                                                 ("stats_window_size", 0), ("tensorboard_log", 3)])
def test_sb3_arguments_are_checked_by_name(make_env, argument, value):
    with pytest.raises(ValueError, match=rf"^{argument} must be"):
        GRPO("LLMPolicy", make_env(), device="cpu", **{argument: value})


# ------------------------------------------------------------------------------ a schedule is checked at each read
@settings(max_examples=60, deadline=None)
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.booleans(), st.none(),
                       st.text(max_size=3), st.sampled_from([torch.tensor(1e-3), torch.tensor(-1.0), np.float32(2e-4),
                                                             torch.ones(2), b"1"])), progress=st.floats(0, 1))
def test_a_schedule_value_is_returned_unchanged_or_refused_naming_the_progress(value, progress):
    schedule = CheckedSchedule(lambda p: value)
    numeric = isinstance(value, (int, float, np.floating)) or (isinstance(value, torch.Tensor) and value.numel() == 1)
    valid = numeric and not isinstance(value, bool) and math.isfinite(float(value)) and float(value) >= 0
    if valid:
        assert schedule(progress) is value
    else:
        with pytest.raises(ValueError, match=rf"learning_rate schedule returned .* at progress_remaining={progress:g}"):
            schedule(progress)


@pytest.mark.usefixtures("one_thread")
def test_a_schedule_that_goes_negative_mid_run_stops_with_a_clear_error(make_env):
    """Starts at 1e-3 (fine), reaches 0 at half-way and is negative after: gradient ascent, silently, before."""
    model = GRPO("LLMPolicy", make_env(reward_fn=digit_reward, max_new_tokens=6), n_prompts=1, group_size=2,
                 learning_rate=lambda p: 1e-3 * (2 * p - 1), device="cpu", seed=0)
    with pytest.raises(ValueError, match=r"returned -0\.001 at progress_remaining=0 .*negative rate is gradient ascent"):
        model.learn(4)  # rollouts of 2: progress 0.5, then 0


@pytest.mark.usefixtures("one_thread")
def test_progress_remaining_stays_in_0_1_when_the_last_rollout_overshoots(make_env):
    """learn(3) with rollouts of 2 collects 4 steps: SB3's 1 - 4/3 is negative, and ``lambda p: p * lr`` gave a
    negative learning rate. The progress is kept in [0, 1]."""
    model = GRPO("LLMPolicy", make_env(reward_fn=digit_reward, max_new_tokens=6), n_prompts=1, group_size=2,
                 learning_rate=lambda p: 1e-3 * p, device="cpu", seed=0)
    model.learn(3)
    assert model._current_progress_remaining == 0.0
    assert model.policy.optimizer.param_groups[0]["lr"] == 0.0
