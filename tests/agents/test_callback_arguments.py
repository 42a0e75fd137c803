"""Issue 27: the public callbacks refuse coerced values (``IterationCheckpointCallback(1.5)`` and ``(True)`` used to
become 1 silently); every argument is checked for its type and its range, with an error that names it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.common.callbacks import IterationCheckpointCallback, IterativeRewardModelCallback

SCORER = SimpleNamespace(kind="outcome", batch_size=16, max_length=512)

# Values that are not ints although int() would take them: floats (also integral ones), bools, numeric strings.
not_ints = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                     st.integers(-5, 5).map(str), st.just(None), st.just([1]))


@settings(max_examples=60, deadline=None)
@given(value=not_ints)
def test_checkpoint_save_freq_must_be_an_int(tmp_path_factory, value):
    with pytest.raises(ValueError, match=r"IterationCheckpointCallback: save_freq must be an integer >= 1"):
        IterationCheckpointCallback(value, tmp_path_factory.getbasetemp())


@pytest.mark.parametrize("value", [1.5, True, 1.0, 0, -3, "2"])
def test_the_issue_cases_are_refused(tmp_path, value):
    """1.5 and True used to become save_freq=1; 0 and -3 were refused; "2" used to become 2."""
    with pytest.raises(ValueError, match=rf"save_freq must be an integer >= 1.*got {value!r}"):
        IterationCheckpointCallback(value, tmp_path)


def test_checkpoint_other_arguments(tmp_path):
    assert IterationCheckpointCallback(3, tmp_path).save_freq == 3
    with pytest.raises(TypeError, match="save_path must be a folder path"):
        IterationCheckpointCallback(1, 5)
    for prefix in ("", "../model", "a/b", ".."):
        with pytest.raises(ValueError, match="name_prefix must be a plain file name prefix"):
            IterationCheckpointCallback(1, tmp_path, name_prefix=prefix)
    with pytest.raises(TypeError, match="name_prefix must be a string"):
        IterationCheckpointCallback(1, tmp_path, name_prefix=7)
    for verbose in (3, -1, True, 1.0):
        with pytest.raises(ValueError, match="verbose must be an integer in"):
            IterationCheckpointCallback(1, tmp_path, verbose=verbose)


INT_ARGUMENTS = {"every_n_rollouts": 1, "max_replay_size": 1, "seed": 0, "verbose": 0}


@settings(max_examples=80, deadline=None)
@given(name=st.sampled_from(sorted(INT_ARGUMENTS)), value=not_ints)
def test_iterative_int_arguments_refuse_non_ints(name, value):
    if name == "max_replay_size" and value is None:
        return  # None = keep every sample: allowed
    with pytest.raises(ValueError, match=rf"IterativeRewardModelCallback: {name} must be an integer"):
        IterativeRewardModelCallback(SCORER, **{name: value})


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(INT_ARGUMENTS)), below=st.integers(1, 10**6))
def test_iterative_int_arguments_refuse_values_below_their_minimum(name, below):
    value = INT_ARGUMENTS[name] - below
    with pytest.raises(ValueError, match=rf"{name} must be an integer"):
        IterativeRewardModelCallback(SCORER, **{name: value})


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(st.floats().filter(lambda x: not 0.0 <= x < 1.0), st.just(float("nan")), st.booleans(),
                       st.just("0.1"), st.just(None)))
def test_replay_fraction_must_be_a_finite_number_in_0_1(value):
    with pytest.raises(ValueError, match=r"replay_fraction must be a finite number in \[0, 1\)"):
        IterativeRewardModelCallback(SCORER, replay_fraction=value)


def test_iterative_other_arguments():
    callback = IterativeRewardModelCallback(SCORER, every_n_rollouts=2, replay_fraction=0.25, max_replay_size=5,
                                            seed=3, initial_replay=[(["p", "r"], 1)])
    assert (callback.every_n_rollouts, callback.replay_fraction, callback.max_replay_size, callback.seed) == (
        2, 0.25, 5, 3)
    assert callback.replay_store == [(("p", "r"), 1)]
    with pytest.raises(TypeError, match="reset_reference must be True or False"):
        IterativeRewardModelCallback(SCORER, reset_reference="no")  # a truthy string used to mean True
    with pytest.raises(TypeError, match="label_fn must be a reward function"):
        IterativeRewardModelCallback(SCORER, label_fn="math")
    with pytest.raises(TypeError, match="train_kwargs must be a dict"):
        IterativeRewardModelCallback(SCORER, train_kwargs=[("epochs", 2)])
    with pytest.raises(TypeError, match=r"initial_replay\[1\] must be an \(\(prompt, response_or_steps\), label\)"):
        IterativeRewardModelCallback(SCORER, initial_replay=[(("p", "r"), 1), ("pr", 0)])
