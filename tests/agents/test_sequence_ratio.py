"""GSPO's sequence-level ratio and DAPO's pure parts, checked on numbers worked out by hand (float64).

The four modes of ``aggregate`` are already covered by ``tests/agents/test_losses.py::test_aggregate_modes``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agents.common.advantages import informative_groups
from agents.common.losses import clipped_surrogate, importance_log_ratio, policy_loss, sft_loss
from llm_gym.rewards.length import overlong_penalty

F64 = torch.float64

# ----------------------------------------------------------------------------- importance_log_ratio

# Token ratios pi/pi_old; row 0 has 3 real tokens and a padded one (absurd ratio 1000), row 1 has 4.
RATIOS = torch.tensor([[2.0, 0.5, 4.0, 1000.0], [2.0, 2.0, 8.0, 0.5]], dtype=F64)
SEQ_MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=F64)
OLD = torch.full((2, 4), -1.5, dtype=F64)


def _log_probs() -> torch.Tensor:
    return (OLD + torch.log(RATIOS)).requires_grad_(True)  # log pi = log pi_old + log ratio


def test_sequence_level_is_geometric_mean_of_real_tokens() -> None:
    out = importance_log_ratio(_log_probs(), OLD, SEQ_MASK, "sequence")
    # row 0: (2 * 0.5 * 4)^(1/3) = 4^(1/3) (the padded 1000 is left out); row 1: (2 * 2 * 8 * 0.5)^(1/4) = 16^(1/4) = 2
    expected = torch.tensor([[4 ** (1 / 3)] * 4, [2.0] * 4], dtype=F64)
    torch.testing.assert_close(torch.exp(out.detach()), expected, rtol=0, atol=1e-12)
    # a row with no real token gets a log-ratio of 0
    empty = importance_log_ratio(_log_probs(), OLD, torch.zeros(2, 4, dtype=F64), "sequence")
    assert torch.equal(empty.detach(), torch.zeros(2, 4, dtype=F64))


def test_sequence_level_gradient_is_one_over_length() -> None:
    lp = _log_probs()
    out = importance_log_ratio(lp, OLD, SEQ_MASK, "sequence")
    (grad,) = torch.autograd.grad(out[:, 0].sum(), lp)  # log s_0 + log s_1
    # d log s_i / d log pi_{i,t} = 1/|o_i| on real tokens: 1/3 (row 0, 0 on the pad), 1/4 (row 1)
    expected = torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0.0], [0.25] * 4], dtype=F64)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-15)


def test_sequence_token_level_value_and_one_hot_gradient() -> None:
    lp = _log_probs()
    out = importance_log_ratio(lp, OLD, SEQ_MASK, "sequence-token")
    seq = importance_log_ratio(lp, OLD, SEQ_MASK, "sequence")
    torch.testing.assert_close(out.detach(), seq.detach(), rtol=0, atol=1e-15)
    for i in range(2):
        for t in range(4):
            (grad,) = torch.autograd.grad(out[i, t], lp, retain_graph=True)
            one_hot = torch.zeros(2, 4, dtype=F64)
            one_hot[i, t] = 1.0  # sg[log s_i] + log pi_{i,t} - sg[log pi_{i,t}]
            assert torch.equal(grad, one_hot), (i, t)


def test_token_level_is_plain_difference() -> None:
    lp = _log_probs()
    out = importance_log_ratio(lp, OLD, level="token")
    torch.testing.assert_close(out.detach(), torch.log(RATIOS), rtol=0, atol=1e-12)  # log pi - log pi_old
    (grad,) = torch.autograd.grad(out.sum(), lp)
    assert torch.equal(grad, torch.ones(2, 4, dtype=F64))


def test_importance_log_ratio_errors() -> None:
    lp = _log_probs()
    with pytest.raises(ValueError, match="importance_sampling_level must be one of"):
        importance_log_ratio(lp, OLD, SEQ_MASK, "seq")
    for level in ("sequence", "sequence-token"):
        with pytest.raises(ValueError, match="needs response_mask"):
            importance_log_ratio(lp, OLD, None, level)


# ----------------------------------------------------------------------------- GSPO clipping


def test_gspo_clipping_removes_whole_sequence_gradient() -> None:
    # Token log-ratios (pad = 5.0, left out): mean log s_i
    #   row 0: (0.003 - 0.001) / 2 = 0.001 -> s_0 = e^0.001 = 1.0010005 > 1.0004, A=+1: clipped
    #          (its second token has ratio e^-0.001 < 1 and is still cut)
    #   row 1: (-0.002 + 0.0005 - 0.0015) / 3 = -0.001 -> s_1 = 0.9990005 < 0.9997, A=-1: clipped
    #   row 2: (0.0002 - 0.0001) / 2 = 0.00005 -> s_2 = e^0.00005, inside [0.9997, 1.0004], A=+2
    delta = torch.tensor([[0.003, -0.001, 5.0], [-0.002, 0.0005, -0.0015], [0.0002, -0.0001, 5.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 0]], dtype=F64)
    old = torch.full((3, 3), -2.0, dtype=F64)
    lp = (old + delta).requires_grad_(True)
    loss, stats = policy_loss(lp, old, torch.tensor([1.0, -1.0, 2.0], dtype=F64), mask, clip_range=3e-4,
                              clip_range_high=4e-4, importance_sampling_level="sequence")
    loss.backward()
    s2 = math.exp(0.00005)
    # eq. 5: -(1/3) [min(s_0, 1.0004) + min(-s_1, -0.9997) + 2 s_2] = -(1/3) (1.0004 - 0.9997 + 2 s_2)
    assert loss.item() == pytest.approx(-(1.0004 - 0.9997 + 2 * s2) / 3, abs=1e-12)
    # rows 0 and 1: no gradient at all; row 2: -(1/N)(1/|o_2|) s_2 A_2 = -(1/3)(1/2)(2 s_2) = -s_2/3
    expected = torch.tensor([[0.0] * 3, [0.0] * 3, [-s2 / 3, -s2 / 3, 0.0]], dtype=F64)
    torch.testing.assert_close(lp.grad, expected, rtol=0, atol=1e-12)
    assert stats["clip_fraction"].item() == pytest.approx(5 / 7, abs=1e-12)  # 2 + 3 of 7 real tokens


# ----------------------------------------------------------------------------- clip-higher


def _surrogate_rows(clip_range_high: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r = torch.tensor([[0.79, 0.81, 1.27, 1.29]] * 2, dtype=F64)
    lp = torch.log(r).requires_grad_(True)
    loss, clipped = clipped_surrogate(lp, torch.zeros(2, 4, dtype=F64), torch.tensor([1.0, -1.0], dtype=F64),
                                      clip_range=0.2, clip_range_high=clip_range_high)
    (grad,) = torch.autograd.grad(loss.sum(), lp)
    return loss.detach(), clipped, grad


def test_clip_higher_boundaries() -> None:
    loss, clipped, grad = _surrogate_rows(0.28)
    # clip(r, 0.8, 1.28) = [0.8, 0.81, 1.27, 1.28]; A=+1: -min(r, clip r); A=-1: max(r, clip r)
    assert clipped.tolist() == [[False, False, False, True], [True, False, False, False]]
    expected = torch.tensor([[-0.79, -0.81, -1.27, -1.28], [0.8, 0.81, 1.27, 1.29]], dtype=F64)
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-12)
    assert loss[0, 3].item() == -(1.0 + 0.28) and loss[1, 0].item() == 1.0 - 0.2  # exactly the bounds
    # d(-r A)/d log r = -r A where not clipped, exactly 0 where clipped
    torch.testing.assert_close(grad, torch.tensor([[-0.79, -0.81, -1.27, 0.0], [0.0, 0.81, 1.27, 1.29]],
                                                  dtype=F64), rtol=0, atol=1e-12)
    assert grad[0, 3].item() == 0.0 and grad[1, 0].item() == 0.0


def test_symmetric_clip_at_1_2() -> None:
    loss, clipped, grad = _surrogate_rows(None)
    # clip(r, 0.8, 1.2) = [0.8, 0.81, 1.2, 1.2]: 1.27 and 1.29 now clip for A=+1
    assert clipped.tolist() == [[False, False, True, True], [True, False, False, False]]
    expected = torch.tensor([[-0.79, -0.81, -1.2, -1.2], [0.8, 0.81, 1.27, 1.29]], dtype=F64)
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, torch.tensor([[-0.79, -0.81, 0.0, 0.0], [0.0, 0.81, 1.27, 1.29]],
                                                  dtype=F64), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- overlong_penalty


def test_overlong_penalty_boundaries() -> None:
    lengths = [0, 48, 49, 56, 64, 70]
    # expected = 64 - 16 = 48; (48 - |y|)/16 clipped to [-1, 0]: 0, 0, -1/16, -8/16, -16/16, -22/16 -> -1
    expected = np.array([0.0, 0.0, -1 / 16, -0.5, -1.0, -1.0])
    out = overlong_penalty(lengths, max_length=64, overlong_buffer=16)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-15)
    half = overlong_penalty(lengths, max_length=64, overlong_buffer=16, penalty_factor=0.5)
    np.testing.assert_allclose(half, 0.5 * expected, rtol=0, atol=1e-15)


def test_overlong_penalty_zero_buffer_and_errors() -> None:
    # no buffer: 0 up to and at 64, -factor beyond
    out = overlong_penalty([0, 63, 64, 65, 100], max_length=64, overlong_buffer=0, penalty_factor=0.7)
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, -0.7, -0.7])
    bad = [{"max_length": 0, "overlong_buffer": 0}, {"max_length": 64, "overlong_buffer": -1},
           {"max_length": 64, "overlong_buffer": 65}, {"max_length": 64, "overlong_buffer": 16, "penalty_factor": -0.1}]
    for kwargs in bad:
        with pytest.raises(ValueError, match="Need max_length"):
            overlong_penalty([10], **kwargs)


# ----------------------------------------------------------------------------- informative_groups


def test_informative_groups_keeps_only_mixed() -> None:
    # groups of 2: all-0, all-1, mixed, all-equal non-binary
    rewards = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.3, 0.3])
    assert informative_groups(rewards, 2).tolist() == [False, False, False, False, True, True, False, False]
    with pytest.raises(ValueError, match="cannot be split"):
        informative_groups(rewards[:5], 2)  # 5 is not a multiple of 2
    with pytest.raises(ValueError, match="cannot be split"):
        informative_groups(rewards, 0)


# ----------------------------------------------------------------------------- sft_loss


def test_sft_loss_weighted_by_hand() -> None:
    # row 0: pi = 0.5, 0.25 (+ pad 7.0), weight 1; row 1: weight 0
    lp = torch.tensor([[math.log(0.5), math.log(0.25), 7.0], [-1.0, -2.0, -3.0]], dtype=F64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=F64)
    loss, stats = sft_loss(lp, torch.tensor([1.0, 0.0], dtype=F64), mask, "seq-mean-token-mean")
    # (1/2) [ (1/2)(ln 2 + 2 ln 2) + 0 ] = 3 ln 2 / 4
    assert loss.item() == pytest.approx(3 * math.log(2) / 4, abs=1e-12)
    assert stats["policy_loss"].item() == pytest.approx(3 * math.log(2) / 4, abs=1e-12)
    loss.backward()
    # -w_i / (N |o_i|): row 0 -1/(2*2) = -0.25 on its 2 real tokens; row 1 weight 0
    expected = torch.tensor([[-0.25, -0.25, 0.0], [0.0, 0.0, 0.0]], dtype=F64)
    torch.testing.assert_close(lp.grad, expected, rtol=0, atol=1e-15)
