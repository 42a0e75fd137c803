"""DeepSeekMath's unified paradigm (arXiv:2402.03300 section 5.2.1, eq. 5) checked against autograd (float64).

For every method, ``d loss / d log_probs == -token_weights(mask, aggregation) * gradient_coefficient(...)``,
with each method's loss options: RLOO seq-mean-token-mean with the k3 KL in the loss, REINFORCE++ token-mean
(KL in the reward, so none in the loss), CISPO ``loss_mode="cispo"`` token-mean, Dr. GRPO
seq-mean-token-sum-norm.
"""

from __future__ import annotations

import math

import pytest
import torch

from agents.common.losses import AGGREGATION_MODES, aggregate, policy_loss, sft_loss
from agents.paradigm import PARADIGM, gradient_coefficient, token_weights

F64 = torch.float64
N, T = 4, 5
LENGTHS = torch.tensor([5, 3, 1, 4])
MASK = (torch.arange(T)[None, :] < LENGTHS[:, None]).to(F64)  # (4, 5)
ADV_SEQ = torch.tensor([1.5, -0.5, 0.8, -1.2], dtype=F64)
CORRECT = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=F64)
GSPO_CLIP = {"clip_range": 3e-4, "clip_range_high": 4e-4}
SEQ_MEAN = "seq-mean-token-mean"

#: method -> (advantages: per-"token" (N, T) or per-"seq" (N,), policy_loss options)
POLICY = {
    "PPO": ("token", {"loss_aggregation": "token-mean"}),
    "GRPO": ("seq", {"loss_aggregation": SEQ_MEAN, "beta": 0.04, "kl_estimator": "k3"}),
    "DAPO": ("seq", {"loss_aggregation": "token-mean", "clip_range": 0.2, "clip_range_high": 0.28}),
    "GSPO": ("seq", {**GSPO_CLIP, "loss_aggregation": SEQ_MEAN, "importance_sampling_level": "sequence"}),
    "GSPO-token": ("token", {**GSPO_CLIP, "loss_aggregation": SEQ_MEAN,
                             "importance_sampling_level": "sequence-token"}),
    "RLOO": ("seq", {"loss_aggregation": SEQ_MEAN, "beta": 0.04, "kl_estimator": "k3"}),
    "REINFORCE++": ("token", {"loss_aggregation": "token-mean"}),
    "REINFORCE++-baseline": ("token", {"loss_aggregation": "token-mean"}),
    # no lower bound (1 - 1.0 = 0); the upper bound 1.2 is small enough that this batch clamps some tokens
    "CISPO": ("seq", {"loss_aggregation": "token-mean", "loss_mode": "cispo", "clip_range": 1.0,
                      "clip_range_high": 0.2}),
    "Dr.GRPO": ("seq", {"loss_aggregation": "seq-mean-token-sum-norm"}),
}
METHODS = ["SFT", "RFT", "OnlineRFT", *POLICY]


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random log-probs, ref log-probs, per-token advantages and an old-log-prob perturbation, (N, T) each."""
    g = torch.Generator().manual_seed(7)
    lp = torch.log_softmax(torch.randn(N, T, 6, generator=g, dtype=F64), -1)[..., 0]
    ref = torch.log_softmax(torch.randn(N, T, 6, generator=g, dtype=F64), -1)[..., 0]
    adv_tok = torch.randn(N, T, generator=g, dtype=F64)
    shift = 0.4 * torch.randn(N, T, generator=g, dtype=F64)
    return lp, ref, adv_tok, shift


def _aggregation(method: str) -> str:
    return POLICY[method][1]["loss_aggregation"] if method in POLICY else SEQ_MEAN


def _loss(method, lp, old, ref, adv_tok):
    """(loss, stats) of ``method``: sft_loss for SFT/RFT, policy_loss otherwise."""
    if method not in POLICY:
        weights = torch.ones(N, dtype=F64) if method == "SFT" else CORRECT
        return sft_loss(lp, weights, MASK, SEQ_MEAN)
    kind, options = POLICY[method]
    return policy_loss(lp, old, adv_tok if kind == "token" else ADV_SEQ, MASK, ref_log_probs=ref, **options)


def _coefficient(method, lp, old, ref, adv_tok):
    if method not in POLICY:
        return gradient_coefficient(method, MASK, correct=CORRECT)
    kind, options = POLICY[method]
    extra = {k: options[k] for k in ("clip_range", "clip_range_high", "beta") if k in options}
    return gradient_coefficient(method, MASK, log_probs=lp, old_log_probs=old, ref_log_probs=ref,
                                advantages=adv_tok if kind == "token" else ADV_SEQ, **extra)


def _check_identity(method: str, on_policy: bool) -> dict[str, torch.Tensor]:
    lp0, ref, adv_tok, shift = _batch()
    old = lp0.clone() if on_policy else lp0 + shift
    lp = lp0.clone().requires_grad_(True)
    loss, stats = _loss(method, lp, old, ref, adv_tok)
    loss.backward()
    expected = -token_weights(MASK, _aggregation(method)) * _coefficient(method, lp0, old, ref, adv_tok)
    torch.testing.assert_close(lp.grad, expected, rtol=0, atol=1e-12)
    return stats


# ----------------------------------------------------------------------------- token_weights


@pytest.mark.parametrize(("mode", "max_len"), [(m, None) for m in AGGREGATION_MODES]
                         + [("seq-mean-token-sum-norm", 8)])
def test_token_weights_reproduce_aggregate(mode: str, max_len: int | None) -> None:
    mask = MASK.clone()
    mask[2] = 0.0  # an empty row too
    loss = torch.randn(N, T, generator=torch.Generator().manual_seed(3), dtype=F64)
    weighted = (token_weights(mask, mode, max_len=max_len) * loss).sum()
    torch.testing.assert_close(weighted, aggregate(loss, mask, mode, max_len=max_len), rtol=0, atol=1e-12)


def test_token_weights_by_hand() -> None:
    w = token_weights(MASK, SEQ_MEAN)
    assert w.dtype == MASK.dtype  # float64 mask -> float64 weights (float32 would break the 1e-12 identity)
    # 1/(N |o_i|) = 1/(4*5), 1/(4*3), 1/(4*1), 1/(4*4) on real tokens, 0 on padding
    expected = MASK / torch.tensor([[20.0], [12.0], [4.0], [16.0]], dtype=F64)
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-12)
    # token-mean: 1 / (5 + 3 + 1 + 4) = 1/13
    torch.testing.assert_close(token_weights(MASK, "token-mean"), MASK / 13, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- gradient_coefficient


@pytest.mark.parametrize("method", METHODS)
def test_gradient_identity_on_policy(method: str) -> None:
    _check_identity(method, on_policy=True)


@pytest.mark.parametrize("method", list(POLICY))
def test_gradient_identity_off_policy(method: str) -> None:
    stats = _check_identity(method, on_policy=False)
    assert 0.0 < stats["clip_fraction"].item() < 1.0  # some tokens clipped, some not: not vacuous


@pytest.mark.parametrize("method", METHODS)
def test_on_policy_coefficient_closed_form(method: str) -> None:
    lp, ref, adv_tok, _ = _batch()
    seq = ADV_SEQ[:, None] * MASK  # A_i on every real token
    closed = {
        "SFT": MASK, "RFT": CORRECT[:, None] * MASK, "OnlineRFT": CORRECT[:, None] * MASK,
        "PPO": adv_tok * MASK,
        "GRPO": (ADV_SEQ[:, None] + 0.04 * (torch.exp(ref - lp) - 1.0)) * MASK,  # A + beta (pi_ref/pi - 1)
        "DAPO": seq, "GSPO": seq, "GSPO-token": adv_tok * MASK,
        "RLOO": (ADV_SEQ[:, None] + 0.04 * (torch.exp(ref - lp) - 1.0)) * MASK,
        "REINFORCE++": adv_tok * MASK, "REINFORCE++-baseline": adv_tok * MASK, "CISPO": seq, "Dr.GRPO": seq,
    }[method]
    coef = _coefficient(method, lp, lp, ref, adv_tok)
    torch.testing.assert_close(coef.to(F64), closed, rtol=0, atol=1e-12)
    assert (coef[MASK == 0] == 0).all()


def test_grpo_coefficient_by_hand() -> None:
    lp = torch.log(torch.tensor([[0.5, 0.2, 0.9]], dtype=F64)).requires_grad_(True)
    ref = torch.log(torch.tensor([[0.25, 0.4, 0.1]], dtype=F64))
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=F64)
    adv = torch.tensor([1.0], dtype=F64)
    coef = gradient_coefficient("GRPO", mask, log_probs=lp, advantages=adv, ref_log_probs=ref, beta=0.04)
    # pi_ref/pi = 0.5, 2: 1 + 0.04 (0.5 - 1) = 0.98, 1 + 0.04 (2 - 1) = 1.04; padding 0
    torch.testing.assert_close(coef, torch.tensor([[0.98, 1.04, 0.0]], dtype=F64), rtol=0, atol=1e-12)
    loss, _ = policy_loss(lp, lp.detach(), adv, mask, ref_log_probs=ref, beta=0.04)
    loss.backward()
    # weight 1/(N |o|) = 1/2: -[0.49, 0.52, 0]
    torch.testing.assert_close(lp.grad, torch.tensor([[-0.49, -0.52, 0.0]], dtype=F64), rtol=0, atol=1e-12)


def test_identity_beyond_log_ratio_clamp() -> None:
    # log rho = -30 (A=+1, not clipped) and +25 (A=-1, not clipped): exp(clamp(log rho, -20, 20)) has zero
    # gradient there, so autograd gives 0; the coefficient must too (not e^-20 A, e^20 A).
    old = torch.zeros(2, 2, dtype=F64)
    lp = torch.tensor([[-30.0, 0.1], [25.0, -0.1]], dtype=F64, requires_grad=True)
    mask, adv = torch.ones(2, 2, dtype=F64), torch.tensor([1.0, -1.0], dtype=F64)
    loss, _ = policy_loss(lp, old, adv, mask, loss_aggregation="token-mean")
    loss.backward()
    coef = gradient_coefficient("PPO", mask, log_probs=lp, old_log_probs=old, advantages=adv)
    # token-mean weight 1/4: -(1/4) [[0, e^0.1], [0, -e^-0.1]]
    expected = torch.tensor([[0.0, -math.exp(0.1) / 4], [0.0, math.exp(-0.1) / 4]], dtype=F64)
    torch.testing.assert_close(lp.grad, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(-token_weights(mask, "token-mean") * coef, expected, rtol=0, atol=1e-12)


def test_cispo_off_policy_keeps_gradient_on_clamped_tokens() -> None:
    """CISPO's clamped tokens keep a coefficient ``clip(rho) A``; the same tokens get 0 under DAPO's clip."""
    lp, ref, _, shift = _batch()
    old = lp + shift
    kwargs = {"log_probs": lp, "old_log_probs": old, "advantages": ADV_SEQ, "clip_range": 1.0, "clip_range_high": 0.2}
    cispo = gradient_coefficient("CISPO", MASK, **kwargs)
    ppo = gradient_coefficient("DAPO", MASK, **kwargs)
    ratio = torch.exp(lp - old)
    clamped = (ratio > 1.2) & (MASK != 0)
    assert clamped.any()
    torch.testing.assert_close(cispo[clamped], (1.2 * ADV_SEQ[:, None].expand(N, T))[clamped], rtol=0, atol=1e-12)
    assert (cispo[MASK != 0] != 0).all()
    assert (ppo[clamped & (ADV_SEQ[:, None] > 0)] == 0).all()  # PPO cuts A > 0 tokens above 1.2


def test_cispo_identity_with_kl_and_beyond_log_ratio_clamp() -> None:
    # log rho = -30 and +25: the weight is exp(clamp(log rho, -20, 20)) clipped to [0.5, 1.5] = 0.5 and 1.5 and,
    # being detached, keeps its gradient (no _inside_clamp zeroing, unlike the clipped surrogate).
    old = torch.zeros(2, 2, dtype=F64)
    lp = torch.tensor([[-30.0, 0.1], [25.0, -0.1]], dtype=F64, requires_grad=True)
    ref = torch.tensor([[-29.0, 0.3], [24.5, 0.2]], dtype=F64)
    mask, adv = torch.ones(2, 2, dtype=F64), torch.tensor([1.0, -1.0], dtype=F64)
    opts = {"clip_range": 0.5, "clip_range_high": 0.5, "beta": 0.04}
    loss, _ = policy_loss(lp, old, adv, mask, ref_log_probs=ref, loss_mode="cispo", loss_aggregation="token-mean",
                          **opts)
    loss.backward()
    coef = gradient_coefficient("CISPO", mask, log_probs=lp, old_log_probs=old, advantages=adv, ref_log_probs=ref,
                                **opts)
    torch.testing.assert_close(lp.grad, -token_weights(mask, "token-mean") * coef, rtol=0, atol=1e-12)
    kl = 0.04 * (torch.exp(ref - lp.detach()) - 1.0)  # pi_ref/pi - 1, all inside the clamp here
    expected = torch.tensor([[0.5, math.exp(0.1)], [-1.5, -math.exp(-0.1)]], dtype=F64) + kl
    torch.testing.assert_close(coef, expected, rtol=0, atol=1e-12)
    # no lower bound (clip_range = 1): the weight is the clamped exp(-20), not exp(-30) and not 0
    low = gradient_coefficient("CISPO", mask, log_probs=lp, old_log_probs=old, advantages=adv, clip_range=1.0,
                               clip_range_high=0.5)
    assert low[0, 0].item() == pytest.approx(math.exp(-20.0), rel=1e-12)


# ----------------------------------------------------------------------------- PARADIGM table and errors


def test_paradigm_table() -> None:
    for method in ("SFT", "RFT", "OnlineRFT", "PPO", "GRPO", "DAPO", "GSPO", "RLOO", "REINFORCE++",
                   "REINFORCE++-baseline", "CISPO", "Dr.GRPO"):
        assert set(PARADIGM[method]) == {"data", "reward", "coefficient", "class"}, method
    assert PARADIGM["REINFORCE++-baseline"]["coefficient"] == PARADIGM["REINFORCE++"]["coefficient"]
    for method, cls in (("RLOO", "agents.RLOO"), ("REINFORCE++", "agents.ReinforcePlusPlus"),
                        ("CISPO", "agents.CISPO"), ("Dr.GRPO", "agents.DrGRPO")):
        assert PARADIGM[method]["class"] == cls
    # every preset class has its row, and every row's class is a preset of the engine
    import agents

    named = {row["class"] for row in PARADIGM.values() if row["class"].startswith("agents.")}
    assert named == {f"agents.{cls.__name__}" for cls in agents.ALGORITHMS.values()}
    assert all(issubclass(getattr(agents, name.removeprefix("agents.")), agents.LLMAlgorithm) for name in named)


def test_gradient_coefficient_errors() -> None:
    lp = torch.zeros(N, T, dtype=F64)
    with pytest.raises(ValueError, match="Unknown method"):
        gradient_coefficient("REINFORCE", MASK, log_probs=lp, advantages=ADV_SEQ)
    for method in ("RFT", "OnlineRFT"):
        with pytest.raises(ValueError, match="needs `correct`"):
            gradient_coefficient(method, MASK)
    with pytest.raises(ValueError, match="needs log_probs and advantages"):
        gradient_coefficient("PPO", MASK, advantages=ADV_SEQ)
    with pytest.raises(ValueError, match="needs log_probs and advantages"):
        gradient_coefficient("GSPO", MASK, log_probs=lp)
    for method in ("GRPO", "RLOO", "Dr.GRPO", "CISPO"):
        with pytest.raises(ValueError, match=f"{method} with beta > 0 needs ref_log_probs"):
            gradient_coefficient(method, MASK, log_probs=lp, advantages=ADV_SEQ, beta=0.04)
    # REINFORCE++ has its KL in the reward: beta is not a loss term and needs no reference here
    assert gradient_coefficient("REINFORCE++", MASK, log_probs=lp, advantages=ADV_SEQ, beta=0.04).shape == (N, T)
    with pytest.raises(ValueError, match="loss_aggregation must be one of"):
        token_weights(MASK, "sum")
