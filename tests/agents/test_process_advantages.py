"""Process-supervision advantages (DeepSeekMath section 4.1.3) against a hand-worked group, and the rollout's
step-reward tensors."""

from __future__ import annotations

import math

import pytest
import torch

from agents.common.advantages import process_group_normalized
from agents.common.buffers import RolloutSamples
from agents.common.rollout import step_reward_tensors

F64 = torch.float64


def hand_group():
    """Group 0: A (steps at t=1, 4; rewards 1, 1; length 5), B (t=2; 0; length 3), C (t=0, 1, 3; 1, 0, 1;
    length 4). Group 1: D and E, one step each at t=0 with reward 2 (all equal)."""
    rewards = torch.zeros(5, 5, dtype=F64)
    steps = torch.zeros(5, 5, dtype=torch.bool)
    for row, t, r in [(0, 1, 1), (0, 4, 1), (1, 2, 0), (2, 0, 1), (2, 1, 0), (2, 3, 1), (3, 0, 2), (4, 0, 2)]:
        rewards[row, t], steps[row, t] = r, True
    lengths = [5, 3, 4, 1, 1]
    mask = torch.tensor([[t < n for t in range(5)] for n in lengths])
    return rewards, steps, torch.tensor([0, 0, 0, 1, 1]), mask


def test_process_advantages_by_hand() -> None:
    # Group 0's six step rewards {1, 1, 0, 1, 0, 1}: mean 2/3, unbiased var (4/9 + 4 * 1/9 ... ) =
    # (4 * (1/3)^2 + 2 * (2/3)^2) / 5 = 4/15, std 0.516398. A 1 normalises to (1/3)/std = +0.645497,
    # a 0 to -(2/3)/std = -1.290994. Token advantage = sum of normalised rewards of steps ending at or after it.
    rewards, steps, groups, mask = hand_group()
    adv = process_group_normalized(rewards, steps, groups, mask, eps=0.0)
    p, q = (1 / 3) / math.sqrt(4 / 15), -(2 / 3) / math.sqrt(4 / 15)
    expected = torch.tensor([
        [2 * p, 2 * p, p, p, p],          # A: steps at 1 and 4
        [q, q, q, 0, 0],                  # B: one step at 2, padding after length 3
        [p + q + p, q + p, p, p, 0],      # C: steps at 0, 1, 3
        [0, 0, 0, 0, 0],                  # group 1: all step rewards equal -> 0
        [0, 0, 0, 0, 0],
    ], dtype=F64)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)
    assert adv[2, 0] == pytest.approx(0.0, abs=1e-12)  # C's first token: +p + q + p = 0 exactly


def test_process_advantages_scale_none_and_errors() -> None:
    rewards, steps, groups, mask = hand_group()
    adv = process_group_normalized(rewards, steps, groups, mask, scale="none")
    # Group 0 centred only: ones -> +1/3, zeros -> -2/3; A's first token: 2/3.
    assert adv[0, 0].item() == pytest.approx(2 / 3) and adv[1, 0].item() == pytest.approx(-2 / 3)
    with pytest.raises(ValueError, match="step_mask"):
        process_group_normalized(rewards, steps[:, :3], groups, mask)
    with pytest.raises(ValueError, match="group_ids"):
        process_group_normalized(rewards, steps, groups[:3], mask)


def test_process_advantages_min_credit_by_hand() -> None:
    # Same normalised steps as above (p = +0.645497 for a 1, q = -1.290994 = -2p for a 0). A token's value is the
    # minimum of the normalised rewards of the steps ending at or after it (PURE's min-form credit); the
    # advantage subtracts the group's mean response value V_0: A p, B q, C min(p, q, p) = q, mean
    # (p + 2q) / 3 = -p.
    rewards, steps, groups, mask = hand_group()
    adv = process_group_normalized(rewards, steps, groups, mask, eps=0.0, credit="min")
    p, q = (1 / 3) / math.sqrt(4 / 15), -(2 / 3) / math.sqrt(4 / 15)
    expected = torch.tensor([
        [2 * p, 2 * p, 2 * p, 2 * p, 2 * p],  # A: p - (-p)
        [q + p, q + p, q + p, 0, 0],          # B: its one step, padding after length 3
        [q + p, q + p, 2 * p, 2 * p, 0],      # C: q up to the 0-reward step at t=1, then p
        [0, 0, 0, 0, 0],                      # group 1: equal values -> 0
        [0, 0, 0, 0, 0],
    ], dtype=F64)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="credit must be one of"):
        process_group_normalized(rewards, steps, groups, mask, credit="mean")


def test_min_credit_removes_the_step_count_bias_of_the_sum() -> None:
    # Four wrong answers of one group (grounded rewards: 0 = a good step of a wrong answer, -1 = the wrong end)
    # with step rewards [-1], [0, -1], [0, 0, 0, -1], [-1]. The eight rewards {four 0, four -1}: mean -1/2,
    # unbiased std sqrt(2/7); a 0 normalises to +z, a -1 to -z, z = 0.5 / sqrt(2/7) = 0.935414.
    rewards = torch.zeros(4, 4, dtype=F64)
    steps = torch.zeros(4, 4, dtype=torch.bool)
    for row, t, r in [(0, 0, -1), (1, 0, 0), (1, 1, -1), (2, 0, 0), (2, 1, 0), (2, 2, 0), (2, 3, -1), (3, 0, -1)]:
        rewards[row, t], steps[row, t] = r, True
    mask = torch.tensor([[t < n for t in range(4)] for n in (1, 2, 4, 1)])
    z, groups = 0.5 / math.sqrt(2 / 7), torch.zeros(4, dtype=torch.long)
    first = process_group_normalized(rewards, steps, groups, mask, eps=0.0)[:, 0]
    torch.testing.assert_close(first, torch.tensor([-z, 0.0, 2 * z, -z], dtype=F64))  # more steps, more credit
    least = process_group_normalized(rewards, steps, groups, mask, eps=0.0, credit="min")
    assert torch.equal(least, torch.zeros_like(least))  # every answer's worst step is its wrong end: no signal
    rewards[3, 0] = -2.0  # now one answer ends worse than the others: only the ranking of worst steps counts
    least = process_group_normalized(rewards, steps, groups, mask, eps=0.0, credit="min", scale="none")
    # Steps {-1, 0, -1, 0, 0, 0, -1, -2}: mean -5/8; centred worst steps -3/8 x3 and -11/8, mean -5/8 -> +1/4, -3/4.
    torch.testing.assert_close(least[mask], torch.tensor([0.25] * 7 + [-0.75], dtype=F64))


def test_step_reward_tensors_sequence_level() -> None:
    # Row 0: steps (1, 0.5) and (3, 1.0), outcome 1.0 at its last token 4 -> return 2.5.
    # Row 1: no step reward; outcome 0 at its last token 1 -> only the last token is a step end.
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]])
    infos = [{"step_rewards": [(1, 0.5), (3, 1.0)]}, {"step_rewards": []}]
    rollout = RolloutSamples(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 6), mask, torch.tensor([1.0, 0.0]),
                             infos=infos)
    out = step_reward_tensors(rollout)
    rewards, token_rewards, step_mask = out.rewards, out.token_rewards, out.step_mask
    assert rewards.tolist() == [2.5, 0.0]
    assert token_rewards[0].tolist() == [0, 0.5, 0, 1.0, 1.0, 0] and token_rewards[1].tolist() == [0] * 6
    assert step_mask.tolist() == [[0, 1, 0, 1, 1, 0], [0, 1, 0, 0, 0, 0]]


def test_step_reward_tensors_token_level_and_outcome_only() -> None:
    # Token level: the env already paid the step rewards at their tokens; they must not be added twice.
    mask = torch.tensor([[1, 1, 1, 0]])
    paid = torch.tensor([[0.0, 0.5, 1.0, 0.0]])  # step 0.5 at token 1, outcome 1.0 at token 2
    rollout = RolloutSamples(torch.zeros(1, 2), torch.ones(1, 2), torch.zeros(1, 4), mask, paid.sum(-1),
                             token_rewards=paid, infos=[{"step_rewards": [(1, 0.5)]}])
    out = step_reward_tensors(rollout)
    rewards, token_rewards, step_mask = out.rewards, out.token_rewards, out.step_mask
    assert rewards.tolist() == [1.5] and token_rewards.tolist() == paid.tolist()
    assert step_mask.tolist() == [[0, 1, 1, 0]]
    outcome_only = rollout._replace(infos=[{"step_rewards": []}])
    assert step_reward_tensors(outcome_only).step_mask is None


def vowel_steps(prompts, steps, answers, **fields):
    """One reward per step: 1.0 if the step text has a vowel, else 0.0 (deterministic in the text)."""
    return [[float(any(c in "aeiou" for c in s)) for s in row] for row in steps]


def expected_process_advantages(model, eps: float) -> torch.Tensor:
    """Process advantages recomputed from the buffer's responses with plain Python loops (independent of
    ``process_group_normalized``): steps by ``split_steps``, outcome (env reward) added at the last token."""
    from llm_gym.rewards import split_steps

    s = model.rollout_buffer.samples
    n, t = s.response_mask.shape
    rows = []
    for i in range(n):
        length = int(s.response_mask[i].sum())
        steps = split_steps(s.response_ids[i, :length].numpy(), model.lm.tokenizer, delimiter=" ")
        rewards = dict.fromkeys(range(length), None)
        for step, r in zip(steps, vowel_steps([""], [[st.text for st in steps]], [""])[0], strict=True):
            rewards[step.end_index] = (rewards[step.end_index] or 0.0) + r
        outcome = float(s.rewards[i]) - sum(r for r in rewards.values() if r is not None)
        rewards[length - 1] = (rewards[length - 1] or 0.0) + outcome
        rows.append({k: v for k, v in rewards.items() if v is not None})
    adv = torch.zeros(n, t)
    for g in s.group_ids.unique():
        members = [i for i in range(n) if s.group_ids[i] == g]
        values = torch.tensor([r for i in members for r in rows[i].values()], dtype=torch.float64)
        mean, std = values.mean(), values.std() if len(values) > 1 else torch.tensor(0.0)
        for i in members:
            for t_ in range(int(s.response_mask[i].sum())):
                adv[i, t_] = sum(float((r - mean) / (std + eps)) for k, r in rows[i].items() if k >= t_)
    return adv


def spaces_every_third_token(monkeypatch, model) -> None:
    """Sampled responses with a space (the step delimiter) at tokens 2, 5, 8, ...: several steps per response."""
    lm, original = model.lm, model.policy.sample_rollout
    space = lm.tokenizer.encode(" ", add_special_tokens=False)[0]

    def sample_rollout(input_ids, attention_mask, group_size=1):
        gen = original(input_ids, attention_mask, group_size)
        ids = gen.response_ids.clone()
        ids[:, 2::3] = torch.where(gen.response_mask[:, 2::3].bool(), space, ids[:, 2::3])
        return gen._replace(response_ids=ids)

    monkeypatch.setattr(model.policy, "sample_rollout", sample_rollout)


def test_grpo_process_advantages_from_env_step_rewards(make_env, monkeypatch) -> None:
    from agents import GRPO

    env = make_env(process_reward_fn=vowel_steps, step_delimiter=" ", max_new_tokens=12)
    model = GRPO("LLMPolicy", env, n_prompts=2, group_size=3, beta=0.0, advantage="process", seed=0,
                 device="cpu", learning_rate=1e-4)
    spaces_every_third_token(monkeypatch, model)
    model.learn(6)
    s = model.rollout_buffer.samples
    assert s.step_mask is not None and int(s.step_mask.sum()) > s.response_mask.shape[0]  # steps beyond the last
    torch.testing.assert_close(s.advantages, expected_process_advantages(model, model.config.eps), rtol=1e-5, atol=1e-5)


def test_grpo_process_credit_min_reaches_the_advantages(make_env, monkeypatch) -> None:
    from agents import GRPO

    env = make_env(process_reward_fn=vowel_steps, step_delimiter=" ", max_new_tokens=12)
    model = GRPO("LLMPolicy", env, n_prompts=2, group_size=3, beta=0.0, advantage="process", process_credit="min",
                 seed=0, device="cpu", learning_rate=1e-4)
    spaces_every_third_token(monkeypatch, model)
    model.learn(6)
    s = model.rollout_buffer.samples
    summed = process_group_normalized(s.token_rewards, s.step_mask, s.group_ids, s.response_mask, eps=model.config.eps)
    least = process_group_normalized(s.token_rewards, s.step_mask, s.group_ids, s.response_mask, eps=model.config.eps,
                                     credit="min")
    torch.testing.assert_close(s.advantages, least.to(s.advantages.dtype))
    assert not torch.allclose(least, summed)  # the test can tell the two apart on this rollout
    with pytest.raises(ValueError, match="process_credit"):
        GRPO("LLMPolicy", make_env(), process_credit="mean", device="cpu")


def test_grpo_process_without_step_rewards_names_the_option(make_env) -> None:
    from agents import GRPO

    model = GRPO("LLMPolicy", make_env(), n_prompts=1, group_size=2, beta=0.0, advantage="process", device="cpu")
    with pytest.raises(RuntimeError, match="process_reward_fn"):
        model.learn(2)
    with pytest.raises(ValueError, match="advantage"):
        GRPO("LLMPolicy", make_env(), advantage="steps", device="cpu")


def test_rollout_metrics_report_step_rewards() -> None:
    import numpy as np

    from agents.common.rollout import rollout_metrics

    infos = [{"step_rewards": [(1, 1.0), (3, 0.0)], "accuracy": 1.0}, {"step_rewards": [], "accuracy": 0.0},
             {"step_rewards": [(0, -1.0)], "accuracy": 0.0}]
    stats = rollout_metrics(np.array([1.0, 0.0, 0.0]), np.array([0, 0, 0]), infos, torch.ones(3, 4), 1.0)
    assert stats["rollout/step_reward_sum"] == pytest.approx((1.0 + 0.0 - 1.0) / 3)
    assert stats["rollout/scored_steps"] == pytest.approx(1.0)
    assert "rollout/step_reward_sum" not in rollout_metrics(np.zeros(1), np.zeros(1), [{}], torch.ones(1, 4), 1.0)
