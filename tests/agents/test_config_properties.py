"""Property-based: any constructor config gives either a clear ValueError naming a field, or a run with finite weights.

Hypothesis draws values for a few fields at a time, valid or not (negative, zero, NaN, infinity, huge, wrong
type, unknown names), builds a preset on the tiny model and, when construction succeeds, runs one short
``learn``. Nothing may fail in any other way: no crash deep in the loss, no silent NaN weights.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agents import ALGORITHMS, AlgorithmConfig, NonFiniteError

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
