"""``learn()``'s arguments: a wrong one is a ValueError naming it and the fix, before anything runs.

``learn(float("nan"))`` and ``learn(-5)`` used to run 0 steps silently, ``learn("8")`` failed deep in SB3 with
an unreadable ``TypeError``, ``log_interval=0`` raised ``ZeroDivisionError`` after the first rollout, and a
model loaded without an env failed with a bare ``AssertionError``.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import GRPO


def digit_reward(prompts, responses, answers, **fields):
    return [sum(c.isdigit() for c in r) / max(len(r), 1) for r in responses]


@pytest.fixture
def model(make_env):
    return GRPO("LLMPolicy", make_env(reward_fn=digit_reward, max_new_tokens=4), n_prompts=1, group_size=2,
                device="cpu", seed=0)


NOT_A_BUDGET = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(max_value=0), st.booleans(),
                         st.none(), st.text(max_size=3), st.just("8"), st.just(1e4), st.lists(st.integers(), max_size=1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(total=NOT_A_BUDGET)
def test_total_timesteps_that_is_not_a_positive_integer_is_refused_by_name(model, total):
    with pytest.raises(ValueError, match=r"^learn\(\): total_timesteps must be an integer >= 1.*int\(1e4\)"):
        model.learn(total)
    assert model.num_timesteps == 0


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"log_interval": 0}, r"log_interval must be an integer >= 1.*pass None"),
    ({"log_interval": 1.5}, "log_interval must be an integer"),
    ({"tb_log_name": 3}, "tb_log_name must be a string or None"),
    ({"callback": 3}, r"callback must be an SB3 callback.*got 3"),
    ({"reset_num_timesteps": "no"}, "reset_num_timesteps must be True or False"),
    ({"progress_bar": 1}, "progress_bar must be True or False"),
])
def test_other_arguments_are_refused_by_name(model, kwargs, named):
    with pytest.raises(ValueError, match=named):
        model.learn(2, **kwargs)


@pytest.mark.usefixtures("one_thread")
def test_log_interval_none_and_a_numpy_budget_run(model):
    import numpy as np

    model.learn(np.int64(2), log_interval=None)
    assert model.num_timesteps == 2 and not math.isnan(model._current_progress_remaining)


def test_learn_without_an_env_says_how_to_attach_one(model, make_env, tmp_path):
    model.save(tmp_path / "m")
    loaded = GRPO.load(tmp_path / "m", device="cpu")  # the saved model path gives the model; no env
    with pytest.raises(ValueError, match=r"GRPO has no env to train on.*load\(path, env=env\).*set_env"):
        loaded.learn(2)
    loaded.set_env(make_env(reward_fn=digit_reward, max_new_tokens=4))
    loaded.learn(2)
