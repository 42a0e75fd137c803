"""PPO's clipped value loss (agents.common.losses.value_loss), numbers worked out by hand."""

from __future__ import annotations

import pytest
import torch

from agents.common.losses import value_loss

# Two sequences, T = 3; the second ends after 2 tokens (its third entry is padding with absurd numbers).
VALUES = [[1.5, 0.5, 2.0], [0.0, 1.0, 3.0]]
OLD = [[1.0, 0.4, 2.0], [0.5, 1.0, 0.0]]
RETURNS = [[2.0, 1.0, 0.0], [1.0, 2.0, 9.0]]
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def _inputs():
    values = torch.tensor(VALUES, dtype=torch.float64, requires_grad=True)
    return values, torch.tensor(OLD, dtype=torch.float64), torch.tensor(RETURNS, dtype=torch.float64)


def test_clipped_value_loss_by_hand():
    # c = 0.2. Token by token, (unclipped (V-R)^2, clipped (clip(V, old-c, old+c)-R)^2):
    # (0,0) V 1.5 -> clipped 1.2: (0.25, 0.64) -> 0.64, clipped term active
    # (0,1) V 0.5 within 0.4 +- 0.2: (0.25, 0.25) -> 0.25 (tie: not counted as clipped)
    # (0,2) V = old: (4, 4) -> 4
    # (1,0) V 0.0 -> clipped 0.3: (1.0, 0.49) -> 1.0, the unclipped term is larger
    # (1,1) V = old: (1, 1) -> 1;  (1,2) padding.
    values, old, returns = _inputs()
    loss, stats = value_loss(values, old, returns, MASK, clip_range_vf=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.25 + 4 + 1 + 1) / 5)  # 0.689, token-mean over 5 tokens
    assert float(stats["value_clip_fraction"]) == pytest.approx(1 / 5)
    loss.backward()
    # d/dV of 0.5 (V - R)^2 / 5 = (V - R) / 5 where the unclipped term is active; 0 where clipped and on padding
    expected = torch.tensor([[0.0, -0.5 / 5, 2.0 / 5], [-1.0 / 5, -1.0 / 5, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(values.grad, expected)


def test_unclipped_value_loss_by_hand():
    values, old, returns = _inputs()
    loss, stats = value_loss(values, old, returns, MASK, clip_range_vf=None)
    assert loss.item() == pytest.approx(0.5 * (0.25 + 0.25 + 4 + 1 + 1) / 5)  # 0.65
    assert float(stats["value_clip_fraction"]) == 0.0
    loss.backward()
    expected = torch.tensor([[-0.5 / 5, -0.5 / 5, 2.0 / 5], [-1.0 / 5, -1.0 / 5, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(values.grad, expected)


def test_mask_and_aggregation_modes():
    values, old, returns = _inputs()
    # seq-mean-token-mean: row 0 mean 0.5 * (0.64 + 0.25 + 4) / 3, row 1 mean 0.5 * (1 + 1) / 2, then the mean
    loss, _ = value_loss(values, old, returns, MASK, clip_range_vf=0.2, aggregation="seq-mean-token-mean")
    assert loss.item() == pytest.approx((0.5 * 4.89 / 3 + 0.5) / 2)
    # The padding entry never matters, whatever it holds.
    values2 = values.detach().clone()
    values2[1, 2] = -100.0
    loss2, _ = value_loss(values2, old, returns, MASK, clip_range_vf=0.2)
    loss1, _ = value_loss(values.detach(), old, returns, MASK, clip_range_vf=0.2)
    assert float(loss1) == float(loss2)
    # An all-zero mask gives 0, not NaN.
    loss0, stats0 = value_loss(values, old, returns, torch.zeros_like(MASK), clip_range_vf=0.2)
    assert loss0.item() == 0.0 and float(stats0["value_clip_fraction"]) == 0.0


def test_value_loss_errors():
    values, old, returns = _inputs()
    with pytest.raises(ValueError, match="returns"):
        value_loss(values, old, returns[:, :2], MASK)
    with pytest.raises(ValueError, match="clip_range_vf"):
        value_loss(values, old, returns, MASK, clip_range_vf=-0.1)
