"""Tests for agents.common.advantages (numbers worked out by hand)."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import agents.common.advantages as adv_mod
from agents.common.advantages import broadcast_to_tokens, gae, group_normalized

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


def test_group_normalized_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"rewards has shape \(2, 2\)"):
        group_normalized(torch.zeros(2, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"group_ids has shape \(3,\), expected \(4,\)"):
        group_normalized(torch.zeros(4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="group_ids must be an integer"):
        group_normalized(torch.zeros(4), torch.zeros(4))


def test_docstring_example() -> None:
    result = doctest.testmod(adv_mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 1
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
