"""Tests for agents.common.advantages (numbers worked out by hand)."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import agents.common.advantages as adv_mod
import agents.common.returns as returns_mod
from agents.common.advantages import broadcast_to_tokens, group_normalized, leave_one_out
from agents.common.returns import gae, reinforce_plus_plus, reinforce_plus_plus_baseline

EPS = 1e-4


# ----------------------------------------------------------------------------- group_normalized


def test_single_group_unbiased_std() -> None:
    # mean 0.5; unbiased std = sqrt((4 * 0.25) / 3) = sqrt(1/3) = 0.5773502691896258
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    out = group_normalized(rewards, torch.tensor([0, 0, 0, 0]))
    a = 0.5 / (0.5773502691896258 + EPS)  # 0.86587543...
    expected = torch.tensor([a, -a, a, -a], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert out.dtype == torch.float64


def test_single_group_float32() -> None:
    out = group_normalized(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0, 0, 0, 0]))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([0.8658754, -0.8658754, 0.8658754, -0.8658754]))


def test_interleaved_unsorted_groups() -> None:
    # group 7 (positions 0, 2, 4): [1, 0, 2], mean 1, unbiased std sqrt((0 + 1 + 1) / 2) = 1
    # group 3 (positions 1, 3, 5): [2, 4, 6], mean 4, unbiased std sqrt((4 + 0 + 4) / 2) = 2
    rewards = torch.tensor([1.0, 2.0, 0.0, 4.0, 2.0, 6.0], dtype=torch.float64)
    ids = torch.tensor([7, 3, 7, 3, 7, 3])
    out = group_normalized(rewards, ids)
    expected = torch.tensor(
        [0.0, -2.0 / (2 + EPS), -1.0 / (1 + EPS), 0.0, 1.0 / (1 + EPS), 2.0 / (2 + EPS)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_all_equal_group_gives_exact_zeros(scale: str) -> None:
    # 0.1 * 3 / 3 != 0.1 in floating point: the all-equal group must still be exactly 0.
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 0.7], dtype=torch.float32)
    ids = torch.tensor([0, 0, 0, 1, 1, 2])  # group 2 has a single member
    out = group_normalized(rewards, ids, scale=scale)
    assert torch.isfinite(out).all()
    assert torch.equal(out[:3], torch.zeros(3))
    assert out[5].item() == 0.0  # group of size 1
    assert out[3].item() > 0 > out[4].item()


def test_all_equal_whole_batch_no_nan() -> None:
    for scale in ("group", "batch", "none"):
        out = group_normalized(torch.full((4,), 0.3), torch.tensor([0, 0, 1, 1]), scale=scale)
        assert torch.equal(out, torch.zeros(4))


def test_scale_batch_and_none() -> None:
    # groups: {0: [1, 0]} mean 0.5, {1: [3, 1]} mean 2 -> centred [0.5, -0.5, 1, -1]
    # batch: mean 1.25, squared deviations 0.0625 + 1.5625 + 3.0625 + 0.0625 = 4.75,
    #        unbiased var 4.75 / 3 = 19/12, std sqrt(19/12) = 1.2583057392117916
    rewards = torch.tensor([1.0, 0.0, 3.0, 1.0], dtype=torch.float64)
    ids = torch.tensor([0, 0, 1, 1])
    centred = torch.tensor([0.5, -0.5, 1.0, -1.0], dtype=torch.float64)

    out_none = group_normalized(rewards, ids, scale="none")
    torch.testing.assert_close(out_none, centred, rtol=0, atol=1e-12)

    out_batch = group_normalized(rewards, ids, scale="batch")
    torch.testing.assert_close(out_batch, centred / (math.sqrt(19 / 12) + EPS), rtol=0, atol=1e-12)

    # group scale differs: group stds sqrt(0.5) and sqrt(2)
    out_group = group_normalized(rewards, ids, scale="group")
    expected_group = torch.tensor(
        [
            0.5 / (math.sqrt(0.5) + EPS),
            -0.5 / (math.sqrt(0.5) + EPS),
            1 / (math.sqrt(2) + EPS),
            -1 / (math.sqrt(2) + EPS),
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(out_group, expected_group, rtol=0, atol=1e-12)


def test_bad_scale_lists_valid_values() -> None:
    with pytest.raises(ValueError, match=r"scale.*'group'.*'batch'.*'none'"):
        group_normalized(torch.zeros(2), torch.zeros(2, dtype=torch.long), scale="std")


@pytest.mark.parametrize("estimator", [group_normalized, leave_one_out])
def test_group_estimator_shape_errors(estimator) -> None:
    with pytest.raises(ValueError, match=r"rewards has shape \(2, 2\)"):
        estimator(torch.zeros(2, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"group_ids has shape \(3,\), expected \(4,\)"):
        estimator(torch.zeros(4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="group_ids must be an integer"):
        estimator(torch.zeros(4), torch.zeros(4))


@pytest.mark.parametrize("module", [adv_mod, returns_mod])
def test_docstring_example(module) -> None:
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3
    assert result.failed == 0


# ----------------------------------------------------------------------------- broadcast_to_tokens


def test_broadcast_to_tokens() -> None:
    advantages = torch.tensor([0.5, -1.0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    out = broadcast_to_tokens(advantages, mask)
    assert torch.equal(out, torch.tensor([[0.5, 0.5, 0.0], [-1.0, 0.0, 0.0]]))
    out_f = broadcast_to_tokens(advantages, mask.float())
    assert torch.equal(out_f, out)
    with pytest.raises(ValueError, match=r"response_mask has shape \(3, 3\), expected \(2, T\)"):
        broadcast_to_tokens(advantages, torch.ones(3, 3))


# ----------------------------------------------------------------------------- gae


def test_gae_by_hand() -> None:
    gamma, lam = 0.9, 0.8  # gamma * lambda = 0.72
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 0.5, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    # Sequence 0 (3 real tokens, V after the last = 0):
    #   t=2: delta = 1 + 0.9*0   - 0.7 = 0.3                 A = 0.3                       R = 1.0
    #   t=1: delta = 0 + 0.9*0.7 - 0.6 = 0.03                A = 0.03 + 0.72*0.3  = 0.246   R = 0.846
    #   t=0: delta = 0 + 0.9*0.6 - 0.5 = 0.04                A = 0.04 + 0.72*0.246 = 0.21712 R = 0.71712
    # Sequence 1 (ends at t=1; reward 5 and value 9 at the padding position are ignored):
    #   t=2: padding                                          A = 0                         R = 0
    #   t=1: delta = 2 + 0.9*0   - 0.5 = 1.5                 A = 1.5                       R = 2.0
    #   t=0: delta = 0 + 0.9*0.5 - 1.0 = -0.55               A = -0.55 + 0.72*1.5 = 0.53   R = 1.53
    adv, ret = gae(rewards, values, mask, gamma=gamma, gae_lambda=lam)
    expected_adv = torch.tensor([[0.21712, 0.246, 0.3], [0.53, 1.5, 0.0]], dtype=torch.float64)
    expected_ret = torch.tensor([[0.71712, 0.846, 1.0], [1.53, 2.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(adv, expected_adv, rtol=0, atol=1e-12)
    torch.testing.assert_close(ret, expected_ret, rtol=0, atol=1e-12)


def test_gae_lambda_one_gamma_one_is_return_minus_value() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    values = torch.tensor([[0.5, 0.5, 0.5, 7.0]])
    mask = torch.tensor([[True, True, True, False]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, gae_lambda=1.0)
    # Monte Carlo returns-to-go: [6, 5, 3]; advantages = returns - 0.5
    torch.testing.assert_close(ret, torch.tensor([[6.0, 5.0, 3.0, 0.0]]))
    torch.testing.assert_close(adv, torch.tensor([[5.5, 4.5, 2.5, 0.0]]))


def test_gae_no_grad_and_errors() -> None:
    values = torch.zeros(2, 3, requires_grad=True)
    adv, ret = gae(torch.ones(2, 3), values, torch.ones(2, 3))
    assert not adv.requires_grad and not ret.requires_grad
    with pytest.raises(ValueError, match=r"values has shape \(2, 2\), expected \(2, 3\)"):
        gae(torch.ones(2, 3), torch.zeros(2, 2), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"response_mask has shape \(3,\)"):
        gae(torch.ones(2, 3), torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="gamma"):
        gae(torch.ones(2, 3), torch.zeros(2, 3), torch.ones(2, 3), gamma=1.5)


# ----------------------------------------------------------------------------- leave_one_out (RLOO)


def test_leave_one_out_unequal_groups_by_hand() -> None:
    # group 4 (positions 0, 2, 5): [1, 0, 0.5] -> 1 - 0.25 = 0.75, 0 - 0.75 = -0.75, 0.5 - 0.5 = 0
    # group 9 (positions 1, 3):    [2, -1]     -> 2 - (-1) = 3, -1 - 2 = -3
    # group 0 (position 4):        [7]         -> no other response: 0
    rewards = torch.tensor([1.0, 2.0, 0.0, -1.0, 7.0, 0.5], dtype=torch.float64)
    ids = torch.tensor([4, 9, 4, 9, 0, 4])
    out = leave_one_out(rewards, ids)
    expected = torch.tensor([0.75, 3.0, -0.75, -3.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert out.dtype == torch.float64
    # G / (G - 1) times the group-centred reward (Dr. GRPO's advantage)
    g = torch.tensor([3.0, 2.0, 3.0, 2.0, 1.0, 3.0], dtype=torch.float64)
    centred = group_normalized(rewards, ids, scale="none")
    torch.testing.assert_close(out, centred * g / (g - 1).clamp(min=1), rtol=0, atol=1e-12)


def test_leave_one_out_dtypes_constant_groups_and_no_grad() -> None:
    out = leave_one_out(torch.tensor([1, 0, 0, 0]), torch.tensor([0, 0, 1, 1]))  # int rewards
    assert out.dtype == torch.get_default_dtype()
    assert torch.equal(out, torch.tensor([1.0, -1.0, 0.0, 0.0]))  # group 1 all equal: exact zeros
    r32 = torch.tensor([0.1, 0.1, 0.1], requires_grad=True)
    out32 = leave_one_out(r32, torch.zeros(3, dtype=torch.long))
    assert out32.dtype == torch.float32 and not out32.requires_grad
    assert torch.equal(out32, torch.zeros(3))
    assert leave_one_out(torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)


# ----------------------------------------------------------------------------- REINFORCE++


def _whiten(values: list[float]) -> list[float]:
    """Mean 0 / unbiased std 1 by hand, with masked_whiten's eps = 1e-8."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return [(v - mean) / (std + 1e-8) for v in values]


def test_reinforce_plus_plus_by_hand() -> None:
    gamma = 0.5
    # Sequence 0: rewards [-0.1, 0.2, 1.0] (KL penalties + outcome on the last token), all real:
    #   G_2 = 1.0, G_1 = 0.2 + 0.5 * 1.0 = 0.7, G_0 = -0.1 + 0.5 * 0.7 = 0.25
    # Sequence 1: rewards [0.4, <hole>, 2.0] with position 1 masked (bridged, its 9.0 ignored), then padding:
    #   G_2 = 2.0, G_1 = 0 (masked), G_0 = 0.4 + 0.5 * 2.0 = 1.4
    rewards = torch.tensor([[-0.1, 0.2, 1.0, 0.0], [0.4, 9.0, 2.0, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 0]])
    adv, ret = reinforce_plus_plus(rewards, mask, gamma=gamma)
    expected_ret = torch.tensor([[0.25, 0.7, 1.0, 0.0], [1.4, 0.0, 2.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(ret, expected_ret, rtol=0, atol=1e-12)
    # Global normalisation over the 5 real tokens [0.25, 0.7, 1.0, 1.4, 2.0]: mean 1.07, unbiased std
    w = _whiten([0.25, 0.7, 1.0, 1.4, 2.0])
    expected_adv = torch.tensor([[w[0], w[1], w[2], 0.0], [w[3], 0.0, w[4], 0.0]], dtype=torch.float64)
    torch.testing.assert_close(adv, expected_adv, rtol=0, atol=1e-12)
    assert adv.dtype == ret.dtype == torch.float64 and not adv.requires_grad


def test_reinforce_plus_plus_gamma_one_is_outcome_minus_kl_to_go() -> None:
    # gamma = 1: G_t = r(q, o) - beta * sum_{s >= t} KL_s (REINFORCE++'s return with the KL in the reward)
    rewards = torch.tensor([[-0.1, -0.2, 1.0 - 0.3]])  # outcome 1, beta * KL = [0.1, 0.2, 0.3]
    _, ret = reinforce_plus_plus(rewards, torch.ones(1, 3))
    torch.testing.assert_close(ret, torch.tensor([[0.4, 0.5, 0.7]]))
    assert ret.dtype == torch.float32


def test_reinforce_plus_plus_errors() -> None:
    with pytest.raises(ValueError, match=r"token_rewards has shape \(3,\)"):
        reinforce_plus_plus(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match=r"response_mask has shape \(2, 2\), expected \(2, 3\)"):
        reinforce_plus_plus(torch.zeros(2, 3), torch.ones(2, 2))
    with pytest.raises(ValueError, match="gamma"):
        reinforce_plus_plus(torch.zeros(2, 3), torch.ones(2, 3), gamma=-0.1)


def test_reinforce_plus_plus_baseline_by_hand() -> None:
    # Scores = sum of real-token rewards (padding ignored):
    #   row 0 (3 tokens) [0, 0, 1] -> 1;  row 1 (2 tokens) [0.1, -0.3, (9)] -> -0.2   group 5: mean 0.4
    #   row 2 (1 token)  [2, (9), (9)] -> 2;  row 3 (2 tokens) [0, 1, (9)] -> 1         group 2: mean 1.5
    #   row 4 (2 tokens) [0.5, 0.5, (9)] -> 1, alone in group 8 -> 0
    # Centred: 0.6, -0.6, 0.5, -0.5, 0 on every real token, then whitened over the 10 real tokens.
    rewards = torch.tensor(
        [[0.0, 0.0, 1.0], [0.1, -0.3, 9.0], [2.0, 9.0, 9.0], [0.0, 1.0, 9.0], [0.5, 0.5, 9.0]], dtype=torch.float64
    )
    lengths = torch.tensor([3, 2, 1, 2, 2])
    mask = (torch.arange(3)[None, :] < lengths[:, None]).to(torch.float64)
    out = reinforce_plus_plus_baseline(rewards, mask, torch.tensor([5, 5, 2, 2, 8]))
    w = _whiten([0.6] * 3 + [-0.6] * 2 + [0.5] + [-0.5] * 2 + [0.0] * 2)
    expected = torch.tensor(
        [[w[0], w[1], w[2]], [w[3], w[4], 0.0], [w[5], 0.0, 0.0], [w[6], w[7], 0.0], [w[8], w[9], 0.0]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert out.dtype == torch.float64


def test_reinforce_plus_plus_baseline_errors() -> None:
    with pytest.raises(ValueError, match=r"response_mask has shape \(2, 2\)"):
        reinforce_plus_plus_baseline(torch.zeros(2, 3), torch.ones(2, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"group_ids has shape \(3,\), expected \(2,\)"):
        reinforce_plus_plus_baseline(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="group_ids must be an integer"):
        reinforce_plus_plus_baseline(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2))
