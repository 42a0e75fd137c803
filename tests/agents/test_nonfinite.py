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


# ---------------------------------------------------------------------------------------- weights never leave a run
def first_trainable(model):
    return next((n, p) for n, p in model.policy.named_parameters() if p.requires_grad)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_a_step_that_makes_the_weights_nonfinite_raises_naming_the_parameter(make_env, mode):
    """A NaN in the optimizer state passes every pre-step check (finite loss, finite gradient), and the step
    writes NaN into the weights: ``learn`` used to return normally with them. Now the fused check after the
    step raises in both modes (an applied step cannot be skipped) and names the parameter."""
    model = make(make_env, beta=0.0, on_nonfinite=mode)
    model.learn(4)  # AdamW state exists now
    name, param = first_trainable(model)
    model.policy.optimizer.state[param]["exp_avg"].view(-1)[0] = math.nan
    with pytest.raises(NonFiniteError, match=rf"Non-finite updated weights .*{name}.*step was applied"):
        model.learn(4, reset_num_timesteps=False)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_save_refuses_nonfinite_weights_and_load_refuses_them(make_env, tmp_path, mode):
    from agents.common.checkpoint import CheckpointError

    model = make(make_env, beta=0.0, on_nonfinite=mode)
    name, param = first_trainable(model)
    with torch.no_grad():
        param.view(-1)[0] = math.inf
    with pytest.raises(NonFiniteError):  # even in skip mode: sampling from such weights cannot be skipped
        model.learn(4)
    with pytest.raises(NonFiniteError, match=rf"save\(.*refused: policy\.pt key '{name}'.*allow_nonfinite=True"):
        model.save(tmp_path / "bad")
    assert not list(tmp_path.iterdir())  # nothing written
    model.save(tmp_path / "bad", allow_nonfinite=True)
    with pytest.raises(CheckpointError, match=rf"bad\.zip: policy\.pt, key '{name}': holds NaN or infinity"):
        GRPO.load(tmp_path / "bad", env=make_env(reward_fn=text_reward), device="cpu")
    loaded = GRPO.load(tmp_path / "bad", env=make_env(reward_fn=text_reward), device="cpu", allow_nonfinite=True)
    assert not bool(torch.isfinite(dict(loaded.policy.named_parameters())[name]).all())


@pytest.mark.usefixtures("one_thread")
def test_issue_repro_nan_in_a_saved_exp_avg(make_env, tmp_path):
    """Issue 27's repro: NaN in one ``exp_avg`` entry of a saved ``optimizer.pt``, load, ``learn(4)``."""
    import io
    import zipfile

    from agents.common.checkpoint import CheckpointError

    model = make(make_env, beta=0.0)
    model.learn(4)
    model.save(tmp_path / "ok")
    with zipfile.ZipFile(tmp_path / "ok.zip") as src, zipfile.ZipFile(tmp_path / "nan.zip", "w") as dst:
        for member in src.namelist():
            data = src.read(member)
            if member == "optimizer.pt":
                state = torch.load(io.BytesIO(data), weights_only=True)
                state["state"][0]["exp_avg"].view(-1)[0] = math.nan
                buffer = io.BytesIO()
                torch.save(state, buffer)
                data = buffer.getvalue()
            dst.writestr(member, data)
    env = make_env(reward_fn=text_reward)
    with pytest.raises(CheckpointError, match=r"nan\.zip: optimizer\.pt, key 'state\.0\.exp_avg': holds NaN"):
        GRPO.load(tmp_path / "nan", env=env, device="cpu")
    loaded = GRPO.load(tmp_path / "nan", env=env, device="cpu", allow_nonfinite=True)
    with pytest.raises(NonFiniteError, match="Non-finite updated weights"):
        loaded.learn(4, reset_num_timesteps=False)
