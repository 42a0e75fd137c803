"""The non-finite guard: NaN/inf rewards, log-probs, losses and gradients stop training before any update."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from agents import GRPO, AlgorithmConfig, NonFiniteError


def text_reward(prompts, responses, answers, **fields):
    """A varied finite reward: responses differ, so groups have non-zero advantages."""
    return [float(len(r) % 3) for r in responses]


def overflow_reward(prompts, responses, answers, **fields):
    """Finite in float64, infinite once stored as float32 (|r| > 3.4e38)."""
    return [1e39] * len(responses)


def snapshot(model):
    weights = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}
    return weights, {k: dict(v) for k, v in model.policy.optimizer.state.items()}


def assert_unchanged(model, before):
    weights, opt_state = before
    for key, value in model.policy.state_dict().items():
        assert torch.equal(value, weights[key]) or (value.isnan() == weights[key].isnan()).all(), key
    assert len(model.policy.optimizer.state) == len(opt_state)


def make(make_env, reward=text_reward, **kwargs):
    params = {"n_prompts": 2, "group_size": 2, "learning_rate": 1e-3, "seed": 0, "device": "cpu", **kwargs}
    return GRPO("LLMPolicy", make_env(reward_fn=reward), **params)


@pytest.mark.usefixtures("one_thread")
def test_reward_overflowing_float32_raises_before_any_update(make_env):
    model = make(make_env, overflow_reward, beta=0.0)
    before = snapshot(model)
    with pytest.raises(NonFiniteError, match=r"Non-finite rewards at iteration 1 .*ScaleReward"):
        model.learn(4)
    assert_unchanged(model, before)
    assert model._n_updates == 0


@pytest.mark.usefixtures("one_thread")
def test_nan_weights_raise_before_sampling(make_env):
    model = make(make_env, beta=0.0)
    with torch.no_grad():
        next(model.policy.model.parameters()).view(-1)[0] = math.nan
    before = snapshot(model)
    with pytest.raises(NonFiniteError, match=r"Non-finite policy weights at iteration 1.*corrupt checkpoint"):
        model.learn(4)
    assert_unchanged(model, before)


@pytest.mark.usefixtures("one_thread")
def test_nan_reference_model_is_named(make_env):
    model = make(make_env, beta=0.04)
    with torch.no_grad():
        next(model.ref_policy.model.parameters()).view(-1)[0] = math.nan
    with pytest.raises(NonFiniteError, match="Non-finite ref_log_probs.*reference model"):
        model.learn(4)


@pytest.mark.usefixtures("one_thread")
def test_infinite_gradient_is_not_applied(make_env):
    model = make(make_env, beta=0.0)
    param = next(model.policy.model.parameters())
    param.register_hook(lambda grad: grad * math.inf)
    before = snapshot(model)
    with pytest.raises(NonFiniteError, match=r"Non-finite gradient .*global norm"):
        model.learn(4)
    assert_unchanged(model, before)
    assert all(p.grad is None for p in model.policy.parameters())  # nothing half-accumulated is left


@pytest.mark.usefixtures("one_thread")
def test_skip_mode_counts_and_warns_once(make_env):
    model = make(make_env, overflow_reward, beta=0.0, on_nonfinite="skip")
    before = snapshot(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.learn(12)  # three rollouts, each skipped
    skips = [w for w in caught if "Non-finite rewards" in str(w.message)]
    assert len(skips) == 1 and model._nonfinite_skips == 3 and model._n_updates == 0
    assert_unchanged(model, before)


@pytest.mark.parametrize(("field", "value"), [("max_grad_norm", -1.0), ("learning_rate", math.inf),
                                              ("clip_range", math.nan), ("on_nonfinite", "ignore")])
def test_values_that_would_train_silently_wrong_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        AlgorithmConfig(**{field: value}).validate()


@pytest.mark.usefixtures("one_thread")
def test_nan_loss_raises_and_leaves_no_gradient(make_env, monkeypatch):
    model = make(make_env, beta=0.0)
    real = model._advantages
    monkeypatch.setattr(model, "_advantages", lambda b: (real(b)[0] * math.nan, None))  # a NaN advantage
    before = snapshot(model)
    with pytest.raises(NonFiniteError, match=r"Non-finite loss at iteration 1 \(after 0 optimizer steps\)"):
        model.learn(4)
    assert_unchanged(model, before)
    assert all(p.grad is None for p in model.policy.parameters())
