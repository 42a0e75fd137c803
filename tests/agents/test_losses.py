"""Tests for agents.common.losses (numbers worked out by hand)."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import agents.common.losses as losses_mod
from agents.common.losses import (
    AGGREGATION_MODES,
    LOSS_MODES,
    aggregate,
    cispo_surrogate,
    clipped_surrogate,
    kl_divergence,
    policy_loss,
)

F64 = torch.float64

# ----------------------------------------------------------------------------- aggregate

LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], dtype=F64)
MASK = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=F64)  # lengths 2, 3, 0


@pytest.mark.parametrize(
    ("mode", "max_len", "expected"),
    [
        # per-seq means 1.5, 5, 0 (empty row contributes 0) -> 6.5 / 3
        ("seq-mean-token-mean", None, 6.5 / 3),
        # (1 + 2 + 4 + 5 + 6) / 5 tokens
        ("token-mean", None, 18 / 5),
        # per-seq sums 3, 15, 0 -> 18 / 3
        ("seq-mean-token-sum", None, 6.0),
        # per-seq sums / T=3: 1, 5, 0 -> 6 / 3
        ("seq-mean-token-sum-norm", None, 2.0),
        # per-seq sums / 6: 0.5, 2.5, 0 -> 3 / 3
        ("seq-mean-token-sum-norm", 6, 1.0),
    ],
)
def test_aggregate_modes(mode: str, max_len: int | None, expected: float) -> None:
    out = aggregate(LOSS, MASK, mode, max_len=max_len)
    assert out.shape == ()
    assert out.item() == pytest.approx(expected, abs=1e-12)
    # bool mask and NaN on padding give the same value
    loss_nan = LOSS.masked_fill(MASK == 0, float("nan"))
    assert aggregate(loss_nan, MASK.bool(), mode, max_len=max_len).item() == pytest.approx(
        expected, abs=1e-12
    )


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_aggregate_all_zero_mask(mode: str) -> None:
    loss = torch.ones(2, 3, requires_grad=True)
    out = aggregate(loss, torch.zeros(2, 3), mode)
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(loss.grad, torch.zeros(2, 3))


def test_aggregate_errors() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        aggregate(LOSS, MASK, "mean")
    with pytest.raises(ValueError, match=r"mask has shape \(3, 2\), expected \(3, 3\)"):
        aggregate(LOSS, MASK[:, :2], "token-mean")
    with pytest.raises(ValueError, match="max_len"):
        aggregate(LOSS, MASK, "seq-mean-token-sum-norm", max_len=0)


# ----------------------------------------------------------------------------- kl_divergence


def test_kl_estimators_closed_form() -> None:
    log_probs = torch.log(torch.tensor([[0.5, 0.2, 0.3]], dtype=F64))
    ref = torch.log(torch.tensor([[0.25, 0.4, 0.3]], dtype=F64))
    ln2 = math.log(2.0)
    # log(pi/ref) = [ln 2, -ln 2, 0]
    torch.testing.assert_close(
        kl_divergence(log_probs, ref, "k1"), torch.tensor([[ln2, -ln2, 0.0]], dtype=F64)
    )
    k2 = 0.5 * ln2**2  # 0.2402265...
    torch.testing.assert_close(kl_divergence(log_probs, ref, "k2"), torch.tensor([[k2, k2, 0.0]], dtype=F64))
    # k3 = ref/pi - log(ref/pi) - 1: ref/pi = 0.5 -> 0.5 + ln2 - 1; ref/pi = 2 -> 2 - ln2 - 1
    expected_k3 = torch.tensor([[0.5 + ln2 - 1.0, 1.0 - ln2, 0.0]], dtype=F64)
    torch.testing.assert_close(kl_divergence(log_probs, ref), expected_k3, rtol=0, atol=1e-12)


def test_k3_nonnegative_and_clamped() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 32, generator=g) * 3
    b = torch.randn(16, 32, generator=g) * 3
    assert (kl_divergence(a, b, "k3") >= 0).all()
    extreme = kl_divergence(torch.tensor([[0.0, -200.0]]), torch.tensor([[-200.0, 0.0]]), "k3")
    assert torch.isfinite(extreme).all()
    # clamped log(ref/pi) at -20 and +20
    expected = torch.tensor([[math.exp(-20) + 20 - 1, math.exp(20) - 20 - 1]])
    torch.testing.assert_close(extreme, expected)
    with pytest.raises(ValueError, match="estimator must be one of"):
        kl_divergence(a, b, "k4")


# ----------------------------------------------------------------------------- clipped_surrogate

RATIOS = [0.7, 0.9, 1.1, 1.25, 1.3]


def test_clipped_surrogate_clip_higher_exact() -> None:
    # clip(ratio, 0.8, 1.28) = [0.8, 0.9, 1.1, 1.25, 1.28]
    log_probs = torch.log(torch.tensor([RATIOS, RATIOS], dtype=F64))
    old = torch.zeros_like(log_probs)
    advantages = torch.tensor([2.0, -2.0], dtype=F64)  # per-sequence, broadcast over T
    loss, clipped = clipped_surrogate(log_probs, old, advantages, clip_range=0.2, clip_range_high=0.28)
    # A=+2: -min(2r, 2 clip(r)): only r=1.3 > 1.28 clips -> -2.56
    # A=-2: -min(-2r, -2 clip(r)) = max(2r, 2 clip(r)): only r=0.7 < 0.8 clips -> 1.6
    expected = torch.tensor([[-1.4, -1.8, -2.2, -2.5, -2.56], [1.6, 1.8, 2.2, 2.5, 2.6]], dtype=F64)
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-12)
    assert clipped.dtype == torch.bool
    assert clipped.tolist() == [[False, False, False, False, True], [True, False, False, False, False]]
    # per-token (N, T) advantages give the same result
    loss_tok, clipped_tok = clipped_surrogate(
        log_probs, old, advantages[:, None].expand(2, 5), clip_range=0.2, clip_range_high=0.28
    )
    assert torch.equal(loss_tok, loss) and torch.equal(clipped_tok, clipped)


def test_clipped_surrogate_symmetric_default_and_grad() -> None:
    log_probs = torch.log(torch.tensor([RATIOS], dtype=F64)).requires_grad_(True)
    loss, clipped = clipped_surrogate(log_probs, torch.zeros(1, 5, dtype=F64), torch.tensor([1.0], dtype=F64))
    # clip_range_high defaults to 0.2: r=1.25 and 1.3 are clipped (loss -1.2)
    assert clipped.tolist() == [[False, False, False, True, True]]
    torch.testing.assert_close(loss.detach(), torch.tensor([[-0.7, -0.9, -1.1, -1.2, -1.2]], dtype=F64))
    loss.sum().backward()
    # d(-r A)/d log_prob = -r A on active unclipped tokens; 0 where clipped
    torch.testing.assert_close(log_probs.grad, torch.tensor([[-0.7, -0.9, -1.1, 0.0, 0.0]], dtype=F64))


def test_clipped_surrogate_errors() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"old_log_probs has shape \(2, 4\), expected \(2, 3\)"):
        clipped_surrogate(x, torch.zeros(2, 4), torch.zeros(2))
    with pytest.raises(ValueError, match=r"advantages has shape \(3,\), expected \(2,\) or \(2, 3\)"):
        clipped_surrogate(x, x, torch.zeros(3))


# ----------------------------------------------------------------------------- policy_loss


def _grad_setup() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1234)
    n, t = 3, 5
    log_probs = torch.log_softmax(torch.randn(n, t, 7, generator=g, dtype=F64), -1)[..., 0]
    ref = torch.log_softmax(torch.randn(n, t, 7, generator=g, dtype=F64), -1)[..., 0]
    advantages = torch.tensor([1.3, -0.4, 0.8], dtype=F64)
    lengths = torch.tensor([5, 3, 1])
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(F64)  # (3, 5)
    return log_probs, ref, advantages, mask, lengths


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "token-mean"])
def test_policy_loss_gradient_coefficient(mode: str) -> None:
    # DeepSeekMath App. A.1.6: with pi_old = pi, grad of the GRPO objective w.r.t. log pi(o_t) is
    # (1/G)(1/|o_i|)(A_i + beta (pi_ref/pi - 1)); the loss is its negative.
    log_probs, ref, advantages, mask, lengths = _grad_setup()
    beta = 0.3
    lp = log_probs.clone().requires_grad_(True)
    loss, _ = policy_loss(
        lp, lp.detach(), advantages, mask, ref_log_probs=ref, beta=beta, loss_aggregation=mode
    )
    loss.backward()
    coef = advantages[:, None] + beta * (torch.exp(ref - log_probs) - 1.0)  # (3, 5)
    if mode == "seq-mean-token-mean":
        weight = 1.0 / (3 * lengths.to(F64))[:, None]  # 1/N * 1/|o_i|
    else:
        weight = torch.full((3, 1), 1.0 / lengths.sum().item(), dtype=F64)  # 1/total tokens
    expected = -weight * coef * mask
    torch.testing.assert_close(lp.grad, expected, rtol=1e-12, atol=1e-14)
    assert (lp.grad[mask == 0] == 0).all()


def test_policy_loss_stats_by_hand() -> None:
    # Real tokens: ratios 1.5 and 0.5; third token is padding with an absurd ratio.
    log_probs = torch.log(torch.tensor([[1.5, 0.5, 50.0]], dtype=F64))
    old = torch.zeros(1, 3, dtype=F64)
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=F64)
    ref = torch.log(torch.tensor([[0.75, 1.0, 1.0]], dtype=F64))  # log(pi/ref) = [ln 2, ln .5, .]
    loss, stats = policy_loss(
        log_probs, old, torch.tensor([1.0], dtype=F64), mask, ref_log_probs=ref, beta=0.0
    )
    assert set(stats) == {"policy_loss", "kl", "clip_fraction", "approx_kl", "ratio_mean"}
    assert all(v.shape == () and not v.requires_grad for v in stats.values())
    # A=1: ratio 1.5 clipped to 1.2 -> -1.2; ratio 0.5 not clipped -> -0.5; mean over 2 tokens
    assert loss.item() == pytest.approx(-0.85, abs=1e-12)
    assert stats["policy_loss"].item() == pytest.approx(-0.85, abs=1e-12)
    assert stats["clip_fraction"].item() == pytest.approx(0.5, abs=1e-12)
    assert stats["ratio_mean"].item() == pytest.approx(1.0, abs=1e-12)
    # approx_kl = mean((r - 1) - log r) = ((0.5 - ln 1.5) + (-0.5 - ln 0.5)) / 2
    expected_akl = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 2  # 0.1438410...
    assert stats["approx_kl"].item() == pytest.approx(expected_akl, abs=1e-12)
    # k3 with ref/pi = [0.5, 2]: ((0.5 + ln2 - 1) + (2 - ln2 - 1)) / 2 = 0.25
    assert stats["kl"].item() == pytest.approx(0.25, abs=1e-12)

    # beta > 0 adds beta * kl to the loss, policy_loss stat unchanged
    loss_b, stats_b = policy_loss(
        log_probs, old, torch.tensor([1.0], dtype=F64), mask, ref_log_probs=ref, beta=0.1
    )
    assert loss_b.item() == pytest.approx(-0.85 + 0.1 * 0.25, abs=1e-12)
    assert stats_b["policy_loss"].item() == pytest.approx(-0.85, abs=1e-12)

    # no ref -> no "kl" key; pi == pi_old -> approx_kl 0, ratio 1, no clipping
    _, stats_0 = policy_loss(old, old, torch.tensor([1.0], dtype=F64), mask)
    assert "kl" not in stats_0
    assert stats_0["approx_kl"].item() == 0.0
    assert stats_0["ratio_mean"].item() == 1.0
    assert stats_0["clip_fraction"].item() == 0.0


def test_policy_loss_errors() -> None:
    x = torch.zeros(2, 3)
    mask = torch.ones(2, 3)
    adv = torch.zeros(2)
    with pytest.raises(ValueError, match="ref_log_probs is required when beta > 0"):
        policy_loss(x, x, adv, mask, beta=0.04)
    with pytest.raises(ValueError, match=r"old_log_probs has shape \(2, 4\), expected \(2, 3\)"):
        policy_loss(x, torch.zeros(2, 4), adv, mask)
    with pytest.raises(ValueError, match=r"response_mask has shape \(3, 3\)"):
        policy_loss(x, x, adv, torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"ref_log_probs has shape \(2,\)"):
        policy_loss(x, x, adv, mask, ref_log_probs=torch.zeros(2), beta=0.1)
    with pytest.raises(ValueError, match=r"advantages has shape \(2, 2\)"):
        policy_loss(x, x, torch.zeros(2, 2), mask)
    with pytest.raises(ValueError, match="loss_aggregation must be one of"):
        policy_loss(x, x, adv, mask, loss_aggregation="sum")
    with pytest.raises(ValueError, match="beta must be >= 0"):
        policy_loss(x, x, adv, mask, beta=-1.0)


# ----------------------------------------------------------------------------- CISPO (MiniMax-M1 eq. 4-5)


def test_cispo_surrogate_by_hand_and_gradient() -> None:
    # pi_old = 0.5 on every token, pi = 0.5 * ratio: log pi differs from log rho, so the loss -w A log pi is
    # not -w A log rho. Band [0.8, 1.28]: weights [0.8, 0.9, 1.1, 1.25, 1.28], clamped at r = 0.7 and 1.3.
    ratios = torch.tensor([RATIOS, RATIOS], dtype=F64)
    old = torch.full((2, 5), math.log(0.5), dtype=F64)
    lp = torch.log(0.5 * ratios).requires_grad_(True)
    adv = torch.tensor([2.0, -2.0], dtype=F64)
    loss, clipped = cispo_surrogate(lp, old, adv, clip_range=0.2, clip_range_high=0.28)
    weights = torch.tensor([0.8, 0.9, 1.1, 1.25, 1.28], dtype=F64)
    expected = -weights * adv[:, None] * torch.log(0.5 * ratios)
    torch.testing.assert_close(loss.detach(), expected, rtol=0, atol=1e-12)
    # clamped wherever the ratio leaves the band, whatever the sign of A
    assert clipped.dtype == torch.bool
    assert clipped.tolist() == [[True, False, False, False, True]] * 2
    loss.sum().backward()
    # d/d log pi = -sg(w) A on every token, clamped ones included: -2 * 1.28 = -2.56 at r = 1.3 (A = +2)
    torch.testing.assert_close(lp.grad, -weights * adv[:, None], rtol=0, atol=1e-12)
    assert (lp.grad != 0).all()


def test_cispo_keeps_gradient_where_ppo_clip_cuts_it() -> None:
    # One token with rho = 1.5 > 1.2 and A = 1: ppo_clip's gradient is 0, CISPO's is -clip(1.5) * 1 = -1.2.
    old = torch.zeros(1, 1, dtype=F64)
    adv = torch.tensor([1.0], dtype=F64)
    grads = {}
    for mode in LOSS_MODES:
        lp = torch.tensor([[math.log(1.5)]], dtype=F64, requires_grad=True)
        loss, stats = policy_loss(lp, old, adv, torch.ones(1, 1), loss_mode=mode, clip_range=0.2)
        loss.backward()
        grads[mode] = lp.grad.item()
        assert stats["clip_fraction"].item() == 1.0
    assert grads["ppo_clip"] == 0.0
    assert grads["cispo"] == pytest.approx(-1.2, abs=1e-12)


def test_cispo_without_lower_bound() -> None:
    # clip_range = 1.0: band [0, 1 + eps_high]; a tiny ratio keeps its own weight and is not "clipped".
    lp = torch.log(torch.tensor([[0.01, 3.0, 6.0]], dtype=F64)).requires_grad_(True)
    loss, clipped = cispo_surrogate(lp, torch.zeros(1, 3, dtype=F64), torch.tensor([-1.0], dtype=F64), 1.0, 4.0)
    assert clipped.tolist() == [[False, False, True]]  # only 6 > 5 is clamped
    loss.sum().backward()
    torch.testing.assert_close(lp.grad, torch.tensor([[0.01, 3.0, 5.0]], dtype=F64), rtol=0, atol=1e-12)


def test_policy_loss_cispo_aggregation_kl_and_stats() -> None:
    # Ratios 1.5 (clamped to 1.2) and 0.5 (inside [0, 1.2]), A = 1, padding with an absurd ratio.
    log_probs = torch.log(torch.tensor([[1.5, 0.5, 50.0]], dtype=F64)).requires_grad_(True)
    old = torch.zeros(1, 3, dtype=F64)
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=F64)
    ref = torch.log(torch.tensor([[0.75, 1.0, 1.0]], dtype=F64))  # k3 mean 0.25 (see test above)
    opts = {"loss_mode": "cispo", "clip_range": 1.0, "clip_range_high": 0.2, "loss_aggregation": "token-mean"}
    loss, stats = policy_loss(log_probs, old, torch.tensor([1.0], dtype=F64), mask, ref_log_probs=ref,
                              beta=0.1, **opts)
    surrogate = -(1.2 * math.log(1.5) + 0.5 * math.log(0.5)) / 2  # token-mean of -w A log pi
    assert stats["policy_loss"].item() == pytest.approx(surrogate, abs=1e-12)
    assert loss.item() == pytest.approx(surrogate + 0.1 * 0.25, abs=1e-12)
    assert stats["clip_fraction"].item() == pytest.approx(0.5, abs=1e-12)
    assert stats["kl"].item() == pytest.approx(0.25, abs=1e-12)
    loss.backward()
    # (1/2) * (-w A + beta (1 - pi_ref/pi)): pi_ref/pi = 0.5, 2 -> -0.6 + 0.05 * 0.5, -0.25 + 0.05 * (-1)
    expected = torch.tensor([[-0.6 + 0.025, -0.25 - 0.05, 0.0]], dtype=F64)
    torch.testing.assert_close(log_probs.grad, expected, rtol=0, atol=1e-12)


def test_policy_loss_loss_mode_errors() -> None:
    x, mask, adv = torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2)
    with pytest.raises(ValueError, match=r"loss_mode must be one of \['ppo_clip', 'cispo'\]"):
        policy_loss(x, x, adv, mask, loss_mode="sapo")
    with pytest.raises(ValueError, match="cispo.*token level only.*'sequence'"):
        policy_loss(x, x, adv, mask, loss_mode="cispo", importance_sampling_level="sequence")
    with pytest.raises(ValueError, match="clip_range_high must be >= 0"):
        cispo_surrogate(x, x, adv, 1.0, -0.1)
    with pytest.raises(ValueError, match=r"advantages has shape \(3,\)"):
        cispo_surrogate(x, x, torch.zeros(3))


def test_docstring_examples() -> None:
    result = doctest.testmod(losses_mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 2  # cispo_surrogate, value_loss
    assert result.failed == 0
