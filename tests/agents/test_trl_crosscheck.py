"""Cross-check :func:`agents.common.losses.policy_loss` against TRL's ``GRPOTrainer`` loss.

On one fixed-seed float64 batch (6 sequences, 7 tokens, lengths 1..7 in the mask) both sides get the
same per-token log-probs (a leaf tensor with grad), old log-probs, per-sequence advantages, mask and,
for ``beta > 0``, reference log-probs. We compare the loss value and its gradient w.r.t. the log-probs
(``torch.autograd.grad``), plus the ``clip_fraction`` / ``kl`` statistics against TRL's logged
``clip_ratio/region_mean`` / ``kl`` metrics, for:

* GRPO (``loss_type="grpo"``, with and without the k3 KL penalty) vs ``"seq-mean-token-mean"``;
* DAPO (``loss_type="dapo"``, clip-higher 0.2 / 0.28) and BNPO (``"bnpo"``) vs ``"token-mean"``;
* Dr. GRPO (``loss_type="dr_grpo"``, with and without the KL term) vs ``"seq-mean-token-sum-norm"`` with
  ``max_len=max_completion_length``;
* GSPO (``importance_sampling_level="sequence"``, clip 3e-4 / 4e-4) vs our ``"sequence"`` level;
* CISPO (``loss_type="cispo"``, MiniMax-M1 eq. 4-5) vs ``loss_mode="cispo"``, ``"token-mean"``. TRL clamps the
  ratio at ``max=epsilon_high`` with no lower bound (``torch.clamp(coef_1, max=self.epsilon_high)``), so the
  equivalent options are ``clip_range=1.0`` (lower bound ``1 - 1.0 = 0``) and ``clip_range_high=epsilon_high - 1``.
  TRL's ``cispo_clip_ratio`` metric counts only ``A > 0`` tokens above the cap, our ``clip_fraction`` every
  clamped token, so the clip statistics are not compared (only the loss, its gradient and ``kl``).

RLOO's advantage is checked against ``RLOOTrainer._generate_and_score_completions`` itself (trl 1.16.0 computes
it inline there, with no public helper): a stub ``self`` supplies the generations, the per-token log-probs and
the rewards, and the returned ``"advantages"`` must equal :func:`agents.common.advantages.leave_one_out`
(with ``beta > 0``, of the rewards minus ``beta`` times the sequence's k1 KL, which is where TRL's RLOO puts
its KL).

TRL's loss is called without a model: ``GRPOTrainer._compute_loss(stub, None, inputs)`` with a stub
``self`` carrying only the attributes that method reads. The stub targets trl 1.16.0 (the version
pinned by the dev extra); TRL internals can move between versions, so an ``AttributeError`` here after
a TRL upgrade means the stub needs updating, not that our loss is wrong.

Each case also lists "mutants": our loss with one option changed (e.g. DAPO's ``clip_range_high``
dropped). Each mutant must *disagree* with TRL, so a case cannot pass vacuously (e.g. because no token
is clipped or the option under test has no effect on this batch).
"""

from __future__ import annotations

import types
from collections import defaultdict

import pytest
import torch

trl = pytest.importorskip("trl", reason="TRL not installed: pip install -e '.[dev]' (the dev extra pins it)")
from trl.trainer.grpo_trainer import GRPOTrainer  # noqa: E402
from trl.trainer.rloo_trainer import RLOOTrainer  # noqa: E402

from agents.common.advantages import group_normalized, leave_one_out  # noqa: E402
from agents.common.losses import policy_loss  # noqa: E402

F64 = torch.float64
N, T = 6, 7
LENGTHS = [7, 3, 5, 1, 6, 4]
ATOL = 1e-10  # float64 on both sides: only summation-order rounding may differ
MUTANT_MIN_DIFF = 1e-6  # a mutant must differ from TRL by more than this (loss or some gradient entry)


def make_batch(gspo: bool = False, log_ratio_scale: float = 0.3) -> dict[str, torch.Tensor]:
    """Fixed-seed batch; ``old`` is perturbed so that some tokens (or, for ``gspo``, sequences) are clipped.

    Token level: ``log(pi/pi_old) ~ N(0, log_ratio_scale^2)`` per token (0.3: far outside the 0.2 / 0.28 clip
    bands on some tokens; 1.0: some ratios above 5, CISPO's recommended cap). GSPO: per-sequence shifts of the log-ratio of +-1e-3 (outside the 3e-4 / 4e-4 band) or 0
    (inside it) plus 1e-4-scale token noise; with the advantage signs below, sequences 0 and 1 are
    clipped (shift in the direction of their advantage), 2-5 are not (inside the band, or outside it
    on the side where the unclipped term is the minimum).
    """
    g = torch.Generator().manual_seed(1234)
    mask = (torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]).to(torch.int32)  # (N, T), as TRL
    log_probs = -2.0 * torch.rand(N, T, generator=g, dtype=F64) - 0.05  # (N, T)
    ref = log_probs + 0.3 * torch.randn(N, T, generator=g, dtype=F64)  # (N, T)
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0], dtype=F64)
    adv = signs * (0.2 + torch.rand(N, generator=g, dtype=F64))  # (N,), both signs, never 0
    if gspo:
        shift = torch.tensor([1e-3, -1e-3, 0.0, 0.0, 1e-3, -1e-3], dtype=F64)[:, None]  # (N, 1)
        log_ratio = shift + 1e-4 * torch.randn(N, T, generator=g, dtype=F64)  # (N, T)
    else:
        log_ratio = log_ratio_scale * torch.randn(N, T, generator=g, dtype=F64)  # (N, T)
    return {"log_probs": log_probs, "old": log_probs - log_ratio, "ref": ref, "adv": adv, "mask": mask}


def make_trl_stub(log_probs: torch.Tensor, trl_opts: dict) -> types.SimpleNamespace:
    """A ``self`` for ``GRPOTrainer._compute_loss`` (trl 1.16.0) whose "model" returns ``log_probs``."""

    def get_logps(model, input_ids, attention_mask, logits_to_keep, **kwargs):
        return log_probs, torch.zeros_like(log_probs), None  # (per-token log-probs, entropies, aux loss)

    accelerator = types.SimpleNamespace(
        num_processes=1, sync_gradients=True, gather=lambda x: x, gather_for_metrics=lambda x: x,
        reduce=lambda x, reduction="sum": x,
    )
    opts = {"importance_sampling_level": "token", "beta": 0.0, "max_completion_length": T, **trl_opts}
    return types.SimpleNamespace(
        _get_per_token_logps_and_entropies=get_logps,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        args=types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        use_vllm=False,
        model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        accelerator=accelerator,
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        **opts,
    )


def trl_loss(batch: dict, log_probs: torch.Tensor, trl_opts: dict) -> tuple[torch.Tensor, dict]:
    """TRL's loss on ``batch`` (differentiable w.r.t. ``log_probs``) and its logged train metrics."""
    stub = make_trl_stub(log_probs, trl_opts)
    mask = batch["mask"]
    inputs = {
        "prompt_ids": torch.zeros(N, 2, dtype=torch.long),
        "prompt_mask": torch.ones(N, 2, dtype=torch.int32),
        "completion_ids": torch.zeros(N, T, dtype=torch.long),
        "completion_mask": mask,
        "advantages": batch["adv"],
        "old_per_token_logps": batch["old"],
        "num_items_in_batch": mask.sum(),  # read by loss_type="dapo" (tokens of the whole generation batch)
    }
    if stub.beta != 0.0:
        inputs["ref_per_token_logps"] = batch["ref"]
    loss = GRPOTrainer._compute_loss(stub, None, inputs)
    return loss, stub._metrics["train"]


def our_loss(batch: dict, log_probs: torch.Tensor, our_opts: dict) -> tuple[torch.Tensor, dict]:
    """Our ``policy_loss`` on ``batch`` (the reference log-probs are always passed, for the kl statistic)."""
    return policy_loss(
        log_probs, batch["old"], batch["adv"], batch["mask"], ref_log_probs=batch["ref"], **our_opts
    )


def loss_and_grad(fn, batch: dict, opts: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(loss, d loss / d log_probs, stats)`` of ``fn`` on a fresh leaf copy of the batch's log-probs."""
    log_probs = batch["log_probs"].clone().requires_grad_(True)
    loss, stats = fn(batch, log_probs, opts)
    (grad,) = torch.autograd.grad(loss, log_probs)
    return loss.detach(), grad, stats


EPS = {"epsilon_low": 0.2, "epsilon_high": 0.2}
CASES = [
    # (TRL options, our options, mutants: our options changed so that the result must differ from TRL)
    pytest.param(
        {"loss_type": "grpo", **EPS, "beta": 0.04},
        {"loss_aggregation": "seq-mean-token-mean", "clip_range": 0.2, "beta": 0.04, "kl_estimator": "k3"},
        [{"beta": 0.0}, {"kl_estimator": "k2"}, {"loss_aggregation": "token-mean"}, {"clip_range": 0.3}],
        id="grpo-beta0.04",
    ),
    pytest.param(
        {"loss_type": "grpo", **EPS, "beta": 0.0},
        {"loss_aggregation": "seq-mean-token-mean", "clip_range": 0.2},
        [{"loss_aggregation": "token-mean"}, {"clip_range": 0.3}, {"clip_range_high": 0.3}],
        id="grpo-beta0",
    ),
    pytest.param(
        {"loss_type": "dapo", "epsilon_low": 0.2, "epsilon_high": 0.28},
        {"loss_aggregation": "token-mean", "clip_range": 0.2, "clip_range_high": 0.28},
        # clip_range_high ignored (upper bound 1.2, not 1.28) must show: some A > 0 tokens have rho > 1.2
        [{"clip_range_high": None}, {"loss_aggregation": "seq-mean-token-mean"}],
        id="dapo",
    ),
    pytest.param(
        {"loss_type": "bnpo", "epsilon_low": 0.2, "epsilon_high": 0.28},
        {"loss_aggregation": "token-mean", "clip_range": 0.2, "clip_range_high": 0.28},
        [{"clip_range_high": None}, {"loss_aggregation": "seq-mean-token-mean"}],
        id="bnpo",
    ),
    pytest.param(
        {"loss_type": "dr_grpo", **EPS, "max_completion_length": T},
        {"loss_aggregation": "seq-mean-token-sum-norm", "clip_range": 0.2, "max_len": T},
        [{"loss_aggregation": "seq-mean-token-mean"}, {"max_len": T + 1}],
        id="dr_grpo",
    ),
    pytest.param(  # batch padded to 7 tokens, generation budget 10: the normaliser is the budget, not T
        {"loss_type": "dr_grpo", **EPS, "max_completion_length": T + 3},
        {"loss_aggregation": "seq-mean-token-sum-norm", "clip_range": 0.2, "max_len": T + 3},
        [{"max_len": None}],
        id="dr_grpo-budget>T",
    ),
    pytest.param(
        {"loss_type": "dr_grpo", **EPS, "max_completion_length": T, "beta": 0.04},
        {"loss_aggregation": "seq-mean-token-sum-norm", "clip_range": 0.2, "max_len": T, "beta": 0.04,
         "kl_estimator": "k3"},
        [{"beta": 0.0}, {"loss_aggregation": "token-mean"}],
        id="dr_grpo-beta0.04",
    ),
]


@pytest.mark.parametrize(("trl_opts", "our_opts", "mutants"), CASES)
def test_token_level_matches_trl(trl_opts, our_opts, mutants):
    """Token-level ratios: same loss, gradient, clip fraction and KL as TRL; each mutant differs."""
    batch = make_batch()
    trl_l, trl_g, metrics = loss_and_grad(trl_loss, batch, trl_opts)
    our_l, our_g, stats = loss_and_grad(our_loss, batch, our_opts)

    assert stats["clip_fraction"] > 0  # some tokens are clipped: the clip bounds are exercised
    torch.testing.assert_close(our_l, trl_l, rtol=0, atol=ATOL)
    torch.testing.assert_close(our_g, trl_g, rtol=0, atol=ATOL)
    # TRL logs the clip fraction from float32 flags (``is_region_clipped.float()``): looser tolerance
    assert float(stats["clip_fraction"]) == pytest.approx(metrics["clip_ratio/region_mean"][-1], abs=1e-6)
    if trl_opts.get("beta", 0.0) > 0:
        assert float(stats["kl"]) == pytest.approx(metrics["kl"][-1], abs=1e-12)
    assert_mutants_differ(batch, our_opts, mutants, trl_l, trl_g)


def assert_mutants_differ(batch, our_opts, mutants, trl_l, trl_g):
    """Every mutant of ``our_opts`` must give a loss or gradient farther than MUTANT_MIN_DIFF from TRL's."""
    for change in mutants:
        mut_l, mut_g, _ = loss_and_grad(our_loss, batch, {**our_opts, **change})
        diff = max(abs(float(mut_l - trl_l)), float((mut_g - trl_g).abs().max()))
        assert diff > MUTANT_MIN_DIFF, f"mutant {change} still matches TRL: the case would not catch it"


def test_gspo_sequence_level_matches_trl():
    """GSPO: sequence-level ratio, clip 3e-4 / 4e-4; some sequences are clipped, some are not."""
    batch = make_batch(gspo=True)
    trl_opts = {"loss_type": "grpo", "importance_sampling_level": "sequence", "epsilon_low": 3e-4,
                "epsilon_high": 4e-4, "beta": 0.0}
    our_opts = {"loss_aggregation": "seq-mean-token-mean", "importance_sampling_level": "sequence",
                "clip_range": 3e-4, "clip_range_high": 4e-4}
    trl_l, trl_g, _ = loss_and_grad(trl_loss, batch, trl_opts)
    our_l, our_g, stats = loss_and_grad(our_loss, batch, our_opts)

    # A clipped sequence has an all-zero gradient row; an unclipped one has a non-zero gradient on its tokens.
    mask = batch["mask"] != 0
    clipped_rows = [bool((our_g[i][mask[i]] == 0).all()) for i in range(N)]
    assert clipped_rows == [True, True, False, False, False, False]
    assert 0 < float(stats["clip_fraction"]) < 1
    torch.testing.assert_close(our_l, trl_l, rtol=0, atol=ATOL)
    torch.testing.assert_close(our_g, trl_g, rtol=0, atol=ATOL)
    # token-level ratios (plain GRPO with GSPO's tiny clip) or no clipping at all must both differ
    mutants = [{"importance_sampling_level": "token"}, {"clip_range": 0.2, "clip_range_high": 0.2}]
    assert_mutants_differ(batch, our_opts, mutants, trl_l, trl_g)


# ----------------------------------------------------------------------------- CISPO

CISPO_CASES = [
    # (log-ratio scale of the batch, TRL options, our options, mutants)
    pytest.param(
        0.3,
        {"loss_type": "cispo", "epsilon_low": 0.2, "epsilon_high": 1.2},
        {"loss_mode": "cispo", "loss_aggregation": "token-mean", "clip_range": 1.0, "clip_range_high": 0.2},
        # PPO's clip instead of CISPO's; a lower bound at 0.8 (TRL has none); another cap; GRPO's aggregation
        [{"loss_mode": "ppo_clip", "clip_range": 0.2}, {"clip_range": 0.2}, {"clip_range_high": 0.4},
         {"loss_aggregation": "seq-mean-token-mean"}],
        id="cispo-cap1.2",
    ),
    pytest.param(  # TRL's recommended epsilon_high = 5.0 (GRPOConfig doc, after ScaleRL): cap 5, clip_range_high 4
        1.0,
        {"loss_type": "cispo", "epsilon_high": 5.0},
        {"loss_mode": "cispo", "loss_aggregation": "token-mean", "clip_range": 1.0, "clip_range_high": 4.0},
        [{"loss_mode": "ppo_clip", "clip_range": 0.2}, {"clip_range_high": 5.0}, {"clip_range": 0.5}],
        id="cispo-cap5",
    ),
    pytest.param(
        0.3,
        {"loss_type": "cispo", "epsilon_high": 1.2, "beta": 0.04},
        {"loss_mode": "cispo", "loss_aggregation": "token-mean", "clip_range": 1.0, "clip_range_high": 0.2,
         "beta": 0.04, "kl_estimator": "k3"},
        [{"beta": 0.0}, {"kl_estimator": "k2"}, {"loss_mode": "ppo_clip"}],
        id="cispo-beta0.04",
    ),
]


@pytest.mark.parametrize(("scale", "trl_opts", "our_opts", "mutants"), CISPO_CASES)
def test_cispo_matches_trl(scale, trl_opts, our_opts, mutants):
    """CISPO: same loss, gradient and KL as TRL's ``loss_type="cispo"``; the cap is active; mutants differ."""
    batch = make_batch(log_ratio_scale=scale)
    trl_l, trl_g, metrics = loss_and_grad(trl_loss, batch, trl_opts)
    our_l, our_g, stats = loss_and_grad(our_loss, batch, our_opts)

    mask = batch["mask"] != 0
    ratio = torch.exp(batch["log_probs"] - batch["old"])
    assert (ratio[mask] > trl_opts["epsilon_high"]).any()  # the cap is exercised
    assert stats["clip_fraction"] > 0
    assert (our_g[mask] != 0).all()  # CISPO keeps a gradient on every real token, clamped ones included
    torch.testing.assert_close(our_l, trl_l, rtol=0, atol=ATOL)
    torch.testing.assert_close(our_g, trl_g, rtol=0, atol=ATOL)
    if trl_opts.get("beta", 0.0) > 0:
        assert float(stats["kl"]) == pytest.approx(metrics["kl"][-1], abs=1e-12)
    assert_mutants_differ(batch, our_opts, mutants, trl_l, trl_g)


# ----------------------------------------------------------------------------- RLOO advantage

G_RLOO = 3
RLOO_REWARDS = torch.tensor([1.0, 0.0, 0.5, 2.0, 2.0, -1.0], dtype=F64)  # 2 groups of 3: mixed / two equal


def make_rloo_stub(beta: float, policy_logps: torch.Tensor, ref_logps: torch.Tensor) -> types.SimpleNamespace:
    """A ``self`` for ``RLOOTrainer._generate_and_score_completions`` (trl 1.16.0): canned generations, log-probs
    (``ref_logps`` when called with the reference model) and ``RLOO_REWARDS`` from one reward function."""
    stub = types.SimpleNamespace()
    stub.ref_model = object() if beta else None

    def get_logps(model, input_ids, attention_mask, logits_to_keep, batch_size=None, **kwargs):
        return (ref_logps if model is stub.ref_model else policy_logps), None, None

    def generate(prompts):
        return [[1, 2]] * N, [[3] * length for length in LENGTHS], ["completion"] * N

    stub.__dict__.update(
        accelerator=types.SimpleNamespace(device=torch.device("cpu"), process_index=0, gather=lambda x: x,
                                          reduce=lambda x, reduction="sum": x),
        model=types.SimpleNamespace(training=True, is_gradient_checkpointing=False),
        args=types.SimpleNamespace(per_device_train_batch_size=N, gradient_checkpointing_kwargs=None),
        _generate=generate, _tokenizer=types.SimpleNamespace(pad_token_id=0), pad_to_multiple_of=None,
        mask_truncated_completions=False, _get_per_token_logps_and_entropies=get_logps, beta=beta,
        _calculate_rewards=lambda inputs, prompts, completions, ids: RLOO_REWARDS[:, None].clone(),
        num_generations=G_RLOO, reward_weights=torch.ones(1, dtype=F64), reward_clip_range=None,
        normalize_advantages=False, reward_func_names=["reward"], _metrics=defaultdict(lambda: defaultdict(list)),
        _logs={"prompt": [], "completion": [], "rewards": defaultdict(list), "advantages": [],
               "extra": defaultdict(list)},
        _pending_extra_logs={}, _pending_metrics={}, log_multimodal=False,
    )
    return stub


@pytest.mark.parametrize("beta", [0.0, 0.05])  # 0.05: RLOOConfig's default beta
def test_rloo_advantage_matches_trl(beta):
    """``leave_one_out`` equals TRL's RLOO advantage (computed inline in ``_generate_and_score_completions``)."""
    batch = make_batch()
    mask = batch["mask"]
    stub = make_rloo_stub(beta, batch["old"], batch["ref"])
    trl_adv = RLOOTrainer._generate_and_score_completions(stub, [{"prompt": "p"}] * N)["advantages"]

    rewards = RLOO_REWARDS.clone()
    if beta:  # TRL's RLOO: reward minus beta * sequence sum of the k1 log-ratio (rollout policy vs reference)
        rewards = rewards - beta * ((batch["old"] - batch["ref"]) * mask).sum(-1)
    group_ids = torch.arange(N) // G_RLOO
    ours = leave_one_out(rewards, group_ids)
    torch.testing.assert_close(ours, trl_adv.to(F64), rtol=0, atol=1e-12)
    if not beta:  # by hand: [1, 0, 0.5] -> 0.75, -0.75, 0; [2, 2, -1] -> 1.5, 1.5, -3
        torch.testing.assert_close(ours, torch.tensor([0.75, -0.75, 0.0, 1.5, 1.5, -3.0], dtype=F64))
    # mutants: the mean baseline that includes the response itself (Dr. GRPO's), GRPO's std-scaled one
    for mutant in (group_normalized(rewards, group_ids, scale="none"), group_normalized(rewards, group_ids)):
        assert float((mutant - trl_adv).abs().max()) > MUTANT_MIN_DIFF
    if beta:  # ignoring the KL in the reward must differ too
        assert float((leave_one_out(RLOO_REWARDS, group_ids) - trl_adv).abs().max()) > MUTANT_MIN_DIFF
