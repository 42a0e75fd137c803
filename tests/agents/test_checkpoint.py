"""Checkpoints: plain data only (nothing is unpickled), the right class, and exact resume."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile

import pytest
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from agents import DAPO, GRPO, PPO, LLMAlgorithm
from agents.common.checkpoint import META, CheckpointError, PickledCheckpointError


def text_reward(prompts, responses, answers, **fields):
    """A reward that varies with the text, so groups have mixed rewards and updates are non-zero."""
    return [float(sum(map(ord, r)) % 3 == 0) for r in responses]


CASES = {
    "grpo": (GRPO, {"n_prompts": 2, "group_size": 2, "batch_size": 2, "n_epochs": 2}),
    "ppo": (PPO, {"n_prompts": 4, "batch_size": 2, "n_epochs": 2}),
    "dapo": (DAPO, {"n_prompts": 2, "group_size": 2, "max_sampling_rounds": 2}),
}


def build(name, make_env):
    cls, kwargs = CASES[name]
    return cls("LLMPolicy", make_env(reward_fn=text_reward, max_new_tokens=8), learning_rate=1e-3, seed=7,
               device="cpu", **kwargs)


def state(model):
    return ({k: v.clone() for k, v in model.policy.state_dict().items()},
            model.policy.optimizer.state_dict(), model.num_timesteps, model._n_updates)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", sorted(CASES))
def test_resume_is_bit_identical_to_an_uninterrupted_run(name, make_env, tmp_path):
    first = build(name, make_env)
    first.learn(first.rollout_size * 2)
    first.save(tmp_path / "ckpt")
    done = first.num_timesteps  # DAPO counts every generated response: the split point is where run 1 ended
    resumed = type(first).load(tmp_path / "ckpt", env=make_env(reward_fn=text_reward, max_new_tokens=8),
                               device="cpu")
    resumed.learn(first.rollout_size * 2, reset_num_timesteps=False)

    straight = build(name, make_env)
    straight.learn(done + first.rollout_size * 2)
    weights, opt, timesteps, updates = state(resumed)
    ref_weights, ref_opt, ref_timesteps, ref_updates = state(straight)
    assert (timesteps, updates) == (ref_timesteps, ref_updates) and updates > 0
    changed = [k for k in weights if not torch.equal(weights[k], ref_weights[k])]
    assert not changed, f"{name}: resumed weights differ from the uninterrupted run: {changed[:3]}"
    for a, b in zip(opt["state"].values(), ref_opt["state"].values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_is_json_and_weights_only(make_env, tmp_path):
    model = GRPO("LLMPolicy", make_env(), n_prompts=1, group_size=2, seed=3, device="cpu")
    model.save(tmp_path / "m")
    with zipfile.ZipFile(tmp_path / "m.zip") as archive:
        assert sorted(archive.namelist()) == sorted([META, "policy.pt", "optimizer.pt", "torch_rng.pt"])
        meta = json.loads(archive.read(META))
        for name in ("policy.pt", "optimizer.pt", "torch_rng.pt"):  # readable with weights_only=True
            torch.load(io.BytesIO(archive.read(name)), weights_only=True)
    assert meta["algorithm"] == "GRPO" and meta["config"]["beta"] == 0.04 and meta["sb3"]["seed"] == 3
    assert meta["policy_kwargs"] == {}
    loaded = LLMAlgorithm.load(tmp_path / "m", env=make_env(), device="cpu")  # the base returns the saved class
    assert type(loaded) is GRPO and loaded.config == model.config


def test_wrong_class_names_both(make_env, tmp_path):
    GRPO("LLMPolicy", make_env(), n_prompts=1, group_size=2, device="cpu").save(tmp_path / "g.zip")
    with pytest.raises(ValueError, match=r"holds a GRPO checkpoint .*, not a PPO one: load it with GRPO\.load"):
        PPO.load(tmp_path / "g.zip", env=make_env(), device="cpu")


class _SideEffect:
    """Unpickling this writes a marker file: a stand-in for code hidden in a checkpoint."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_sb3_zip_is_refused_unless_trusted(make_env, tmp_path):
    model = GRPO("LLMPolicy", make_env(), n_prompts=1, group_size=2, device="cpu")
    BaseAlgorithm.save(model, tmp_path / "sb3.zip")  # SB3's own format: cloudpickled objects in "data"
    with pytest.raises(PickledCheckpointError, match="trust_pickle=True"):
        GRPO.load(tmp_path / "sb3.zip", env=make_env(), device="cpu")
    trusted = GRPO.load(tmp_path / "sb3.zip", env=make_env(), device="cpu", trust_pickle=True)
    assert all(torch.equal(a, b) for a, b in zip(trusted.policy.state_dict().values(),
                                                  model.policy.state_dict().values(), strict=True))


def test_code_in_a_checkpoint_never_runs(make_env, tmp_path):
    marker = tmp_path / "pwned"
    GRPO("LLMPolicy", make_env(), n_prompts=1, group_size=2, device="cpu").save(tmp_path / "ok.zip")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(tmp_path / "ok.zip") as src, zipfile.ZipFile(evil, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "policy.pt":  # a pickled object whose unpickling opens a file
                buffer = io.BytesIO()
                torch.save({"x": _SideEffect(str(marker))}, buffer, pickle_protocol=pickle.HIGHEST_PROTOCOL)
                data = buffer.getvalue()
            dst.writestr(name, data)
    with pytest.raises(CheckpointError, match=r"policy\.pt: refused by torch\.load\(weights_only=True\).*Nothing in it was run"):
        GRPO.load(evil, env=make_env(), device="cpu")
    assert not marker.exists()


def test_stale_tmp_from_a_killed_save_is_replaced(make_env, tmp_path):
    stale = tmp_path / "m.zip.tmp"
    stale.write_bytes(b"half a zip")
    GRPO("LLMPolicy", make_env(), n_prompts=1, group_size=2, device="cpu").save(tmp_path / "m")
    assert not stale.exists() and zipfile.is_zipfile(tmp_path / "m.zip")
    assert os.listdir(tmp_path) == ["m.zip"]


def test_load_keywords_change_the_saved_config(make_env, tmp_path):
    """SB3's ``load(path, env, **kwargs)``: config fields (validated) and SB3's plain arguments; the model is
    built with the changed config, so ``beta > 0`` gets its reference model."""
    model = DAPO("LLMPolicy", make_env(max_new_tokens=8), n_prompts=1, group_size=2, seed=3, device="cpu")
    model.save(tmp_path / "m")
    assert model.config.beta == 0.0 and model.ref_policy is None
    loaded = DAPO.load(tmp_path / "m", env=make_env(max_new_tokens=8), device="cpu", beta=0.1, ent_coef=0.01,
                       verbose=1, custom_objects={"clip_range": 0.25})
    assert loaded.config == model.config.replace(beta=0.1, ent_coef=0.01, clip_range=0.25)
    assert loaded.ref_policy is not None and loaded.verbose == 1
    with pytest.raises(TypeError, match="clip_rnage"):
        DAPO.load(tmp_path / "m", env=make_env(max_new_tokens=8), device="cpu", clip_rnage=0.1)
    with pytest.raises(ValueError, match="beta"):
        DAPO.load(tmp_path / "m", env=make_env(max_new_tokens=8), device="cpu", beta=-1.0)


def test_trusted_sb3_zips_put_their_fields_in_the_config(make_env, tmp_path):
    """SB3's own load writes saved attributes, ``custom_objects`` and keywords into ``__dict__``; they end up in
    ``model.config``, also from a zip saved when every field was an attribute."""
    model = GRPO("LLMPolicy", make_env(), n_prompts=1, group_size=2, clip_range=0.3, device="cpu")
    BaseAlgorithm.save(model, tmp_path / "sb3.zip")
    trusted = GRPO.load(tmp_path / "sb3.zip", env=make_env(), device="cpu", trust_pickle=True,
                        custom_objects={"learning_rate": 0.5}, ent_coef=0.01)
    assert trusted.config == model.config.replace(learning_rate=0.5, ent_coef=0.01)
    assert trusted.lr_schedule(1.0) == 0.5 and not set(vars(trusted)) & set(model.config.to_dict())

    model.__dict__.update(model.config.to_dict())  # the attributes of a zip saved before the config was held once
    BaseAlgorithm.save(model, tmp_path / "legacy.zip", exclude=["config"])
    legacy = GRPO.load(tmp_path / "legacy.zip", env=make_env(), device="cpu", trust_pickle=True)
    assert legacy.config == model.config and legacy.rollout_size == 2
