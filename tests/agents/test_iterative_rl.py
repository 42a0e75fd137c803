"""Iterative RL (DeepSeekMath 4.1.4): IterativeRewardModelCallback with a tiny GPT-2 policy and a tiny BERT RM."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure

import agents.common.callbacks as callbacks_module
from agents import GRPO
from agents.common.callbacks import IterativeRewardModelCallback
from llm_gym.reward_models import (
    ProcessRewardModelScorer,
    RewardModelScorer,
    build_tiny_reward_backbone,
    train_reward_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def has_digit(prompts, responses, answers, **fields):
    """Rule 'verifier' with mixed labels on the tiny random model's responses: 1 if it has a digit."""
    return [float(any(c.isdigit() for c in r)) for r in responses]


@pytest.fixture(scope="module")
def reward_backbone(tmp_path_factory):
    return build_tiny_reward_backbone(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture
def outcome_scorer(reward_backbone, tmp_path):
    """A freshly trained tiny outcome reward model, loaded as the scorer the env uses."""
    train_reward_model([("q", "12"), ("q", "ab")] * 2, [1, 0] * 2, backbone=reward_backbone,
                       output_dir=tmp_path / "rm0", epochs=1, device="cpu")
    return RewardModelScorer(tmp_path / "rm0", device="cpu")


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Probe(BaseCallback):
    """Runs after the iterative callback at every rollout end (before ``train()``): snapshots the weights."""

    def __init__(self, scorer):
        super().__init__()
        self.scorer, self.policy, self.ref, self.reward_model = scorer, [], [], []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.policy.append(clone_state(self.model.policy.model))
        ref = self.model.ref_policy
        self.ref.append(None if ref is None else clone_state(ref.model))
        self.reward_model.append(clone_state(self.scorer.model))


@pytest.fixture
def train_spy(monkeypatch):
    """Records every (texts_or_pairs, labels, kwargs) the callback trains on, then trains for real."""
    calls, real = [], callbacks_module.train_reward_model

    def spy(texts_or_pairs, labels, **kwargs):
        calls.append((list(texts_or_pairs), list(labels), kwargs))
        return real(texts_or_pairs, labels, **kwargs)

    monkeypatch.setattr(callbacks_module, "train_reward_model", spy)
    return calls


def test_every_second_rollout_retrains_with_replay_and_resets_the_reference(
        make_env, outcome_scorer, train_spy, tmp_path):
    env = make_env(reward_fn=outcome_scorer, max_new_tokens=8)
    algo = GRPO("LLMPolicy", env, n_prompts=3, group_size=3, micro_batch_size=9, learning_rate=1e-3,
                beta=0.04, seed=0, device="cpu")
    algo.set_logger(configure(str(tmp_path / "log"), ["csv"]))
    callback = IterativeRewardModelCallback(outcome_scorer, label_fn=has_digit, save_dir=tmp_path / "iter",
                                            every_n_rollouts=2, train_kwargs={"epochs": 1, "lr": 1e-2})
    probe = Probe(outcome_scorer)
    rm_before = clone_state(outcome_scorer.model)
    algo.learn(36, callback=CallbackList([callback, probe]))  # 4 rollouts of 9 responses

    assert callback.n_rollouts == 4 and len(train_spy) == 2
    assert [h["rollout"] for h in callback.history] == [2, 4]
    # Reference model: reset to the policy at rollouts 2 and 4 only.
    assert not same_state(probe.policy[1], probe.ref[0])  # before the reset at rollout 2: initial vs trained
    equal = [same_state(r, p) for r, p in zip(probe.ref, probe.policy, strict=True)]
    assert equal == [True, True, False, True]  # rollout 1: nothing trained yet; 3: trained after the reset
    assert same_state(probe.ref[2], probe.policy[1])  # unchanged on rollout 3
    # Reward model: retrained (weights changed) at rollouts 2 and 4, untouched at 1 and 3.
    rm = probe.reward_model
    assert same_state(rm[0], rm_before) and same_state(rm[2], rm[1])
    assert not same_state(rm[1], rm[0]) and not same_state(rm[3], rm[2])
    # Replay: none the first time; then 1 of 10 training samples (10 %) comes from the earlier samples.
    (first_x, first_y, first_kw), (second_x, _, _) = train_spy
    assert len(first_x) == 9 and first_kw["kind"] == "outcome"
    assert len(second_x) == 10 and [h["n_replay"] for h in callback.history] == [0, 1]
    assert second_x[-1] in first_x and callback.history[1]["n_replay"] / len(second_x) == pytest.approx(0.1)
    # Labels are the verifier's, on the decoded responses of the rollout buffer and the env's prompts.
    assert first_y == [int(any(c.isdigit() for c in r)) for _, r in first_x]
    assert callback.history[0]["label_base_rate"] == pytest.approx(np.mean(first_y))
    assert all(p in env.prompts for p, _ in first_x)
    # The env's reward function is the same scorer object, now with the retrained weights.
    saved = RewardModelScorer(tmp_path / "iter" / "reward_model", device="cpu")
    assert same_state(clone_state(saved.model), clone_state(outcome_scorer.model))
    # Metrics reach the logger on the retraining iterations only.
    rows = list(csv.DictReader((tmp_path / "log" / "progress.csv").open()))
    logged = [row.get("iterative/n_samples", "") for row in rows]
    assert [float(v) for v in logged if v] == [9.0, 10.0] and logged[0] == ""
    accuracy = [float(v) for v in (row.get("iterative/reward_model_accuracy", "") for row in rows) if v]
    assert len(accuracy) == 2 and all(0.0 <= a <= 1.0 for a in accuracy)


def test_beta_zero_skips_the_reference_reset(make_env, outcome_scorer, train_spy, tmp_path):
    algo = GRPO("LLMPolicy", make_env(reward_fn=outcome_scorer, max_new_tokens=8), n_prompts=2, group_size=2,
                learning_rate=1e-3, beta=0.0, seed=0, device="cpu")
    callback = IterativeRewardModelCallback(outcome_scorer, label_fn=has_digit, save_dir=tmp_path / "iter")
    algo.learn(4, callback=callback)
    assert algo.ref_policy is None and len(train_spy) == 1 and callback.history[0]["n_fresh"] == 4


def test_process_reward_model_gets_step_labels(make_env, reward_backbone, train_spy, tmp_path):
    def step_labels(prompts, steps, answers, **fields):
        return [[float(any(c.isdigit() for c in s)) for s in row] for row in steps]

    train_reward_model([("q", ["1", "a"])] * 2, [[1, 0]] * 2, backbone=reward_backbone, kind="process",
                       output_dir=tmp_path / "prm0", epochs=1, device="cpu")
    scorer = ProcessRewardModelScorer(tmp_path / "prm0", device="cpu")
    algo = GRPO("LLMPolicy", make_env(reward_fn=has_digit, max_new_tokens=8), n_prompts=2, group_size=2,
                learning_rate=1e-3, beta=0.0, seed=0, device="cpu")
    callback = IterativeRewardModelCallback(scorer, label_fn=step_labels, save_dir=tmp_path / "iter")
    algo.learn(4, callback=callback)
    (x, y, kwargs), = train_spy
    assert kwargs["kind"] == "process" and scorer.name_or_path == str(tmp_path / "iter" / "reward_model")
    for (_, steps), labels in zip(x, y, strict=True):
        assert labels == [int(any(c.isdigit() for c in s)) for s in steps]
    assert 0.0 <= callback.history[0]["reward_model_accuracy"] <= 1.0


def test_invalid_settings_name_the_argument(outcome_scorer):
    with pytest.raises(ValueError, match="every_n_rollouts must be an integer >= 1"):
        IterativeRewardModelCallback(outcome_scorer, every_n_rollouts=0)
    with pytest.raises(ValueError, match=r"replay_fraction must be a finite number in \[0, 1\).*replay_fraction=0\.1"):
        IterativeRewardModelCallback(outcome_scorer, replay_fraction=1.0)
