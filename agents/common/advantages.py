"""Advantage estimators with group baselines, for RL on language models.

* **Outcome supervision** (GRPO, DeepSeekMath arXiv:2402.03300 section 4.1.2): one scalar reward per
  response, normalised within the group of responses sampled for the same prompt
  (:func:`group_normalized`), then broadcast to every response token (:func:`broadcast_to_tokens`).
  RLOO's leave-one-out baseline (:func:`leave_one_out`, arXiv:2402.14740) is the same idea with the
  response itself left out of its baseline.
* **Process supervision** (DeepSeekMath 4.1.3): step rewards normalised over the group's steps
  (:func:`process_group_normalized`); :func:`informative_groups` is DAPO's group filter.

Token-level returns (GAE, REINFORCE++, the KL-penalty rewards) are in :mod:`agents.common.returns`.
Notation: ``N`` sequences (responses), ``T`` padded response tokens, ``G`` group size.
``response_mask`` of shape ``(N, T)`` is 1.0/True on real response tokens and 0/False on padding.
All functions are pure torch functions; they work on any device and preserve the floating dtype of
their inputs (float32 or float64).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from agents.common.shapes import as_float, check_shape, shape_of

__all__ = [
    "GROUP_SCALES", "PROCESS_CREDITS", "broadcast_to_tokens", "group_centred", "group_normalized", "informative_groups",
    "leave_one_out", "process_group_normalized",
]

#: Valid values of the ``scale`` argument of :func:`group_normalized`.
GROUP_SCALES: tuple[str, ...] = ("group", "batch", "none")
#: Valid ``credit`` values of :func:`process_group_normalized`: the sum of the later steps' normalised rewards
#: (DeepSeekMath 4.1.3) or their minimum (PURE's min-form credit assignment, arXiv:2504.15275).
PROCESS_CREDITS: tuple[str, ...] = ("sum", "min")


def _check_group_inputs(rewards: Tensor, group_ids: Tensor, scale: str, eps: float) -> None:
    """Validate the arguments of :func:`group_normalized` (same errors, same messages)."""
    if scale not in GROUP_SCALES:
        raise ValueError(f"scale must be one of {list(GROUP_SCALES)}, got {scale!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    _check_rewards_and_groups(rewards, group_ids)


def _check_rewards_and_groups(rewards: Tensor, group_ids: Tensor) -> None:
    """``rewards`` is ``(N,)`` and ``group_ids`` an integer ``(N,)`` tensor, else ``ValueError`` naming it."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards has shape {shape_of(rewards)}, expected (N,) (1-D)")
    check_shape("group_ids", group_ids, shape_of(rewards), "same as rewards: (N,)")
    if group_ids.is_floating_point() or group_ids.is_complex():
        raise ValueError(f"group_ids must be an integer tensor, got dtype {group_ids.dtype}")


def group_centred(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Subtract each response's group mean from its reward.

    Args:
        rewards: Float rewards, shape ``(N,)``, ``N >= 1``.
        group_ids: Integer group ids, shape ``(N,)``.

    Returns:
        ``(centred, inverse, counts, zeros_k)``: centred rewards ``(N,)`` (exactly 0 in groups whose
        rewards are all equal), each response's group index in ``0..K-1`` ``(N,)``, group sizes
        ``(K,)`` and a ``(K,)`` zero tensor, both in the dtype of ``rewards``. The inputs are not checked:
        callers validate them (:func:`group_normalized`, :func:`leave_one_out`).

    Example:
        >>> group_centred(torch.tensor([1.0, 0.0, 2.0, 2.0]), torch.tensor([0, 0, 1, 1]))[0]
        tensor([ 0.5000, -0.5000,  0.0000,  0.0000])
    """
    # Map arbitrary ids to 0..K-1 so groups need not be contiguous or sorted.
    _, inverse = torch.unique(group_ids.to(rewards.device), return_inverse=True)  # (N,)
    num_groups = int(inverse.max().item()) + 1

    zeros_k = torch.zeros(num_groups, dtype=rewards.dtype, device=rewards.device)  # (K,)
    counts = zeros_k.index_add(0, inverse, torch.ones_like(rewards))  # (K,)
    sums = zeros_k.index_add(0, inverse, rewards)  # (K,)
    means = sums / counts  # (K,) every group has >= 1 member
    centred = rewards - means[inverse]  # (N,)

    # Groups with identical rewards: force exact zeros (mean may differ from r_i by rounding).
    g_max = zeros_k.scatter_reduce(0, inverse, rewards, reduce="amax", include_self=False)  # (K,)
    g_min = zeros_k.scatter_reduce(0, inverse, rewards, reduce="amin", include_self=False)  # (K,)
    constant = (g_max == g_min)[inverse]  # (N,) bool
    centred = torch.where(constant, torch.zeros_like(centred), centred)  # (N,)
    return centred, inverse, counts, zeros_k


def group_normalized(
    rewards: Tensor,
    group_ids: Tensor,
    scale: str = "group",
    eps: float = 1e-4,
) -> Tensor:
    r"""Group-relative advantages for outcome supervision (GRPO).

    DeepSeekMath (arXiv:2402.03300) section 4.1.2, "Outcome Supervision RL with GRPO": for the ``G``
    responses ``o_1 .. o_G`` sampled for the same question, with rewards ``r = {r_1 .. r_G}``,

    .. math:: \hat A_i = \frac{r_i - \mathrm{mean}(r)}{\mathrm{std}(r) + \epsilon}

    and the same :math:`\hat A_i` is used for every token of :math:`o_i` (see
    :func:`broadcast_to_tokens`).

    ``std`` is the *unbiased* (Bessel-corrected, ``torch.std`` default) standard deviation, as in TRL
    and verl. A group of size 1 has std 0 (and advantage 0). A group whose rewards are all equal gets
    exactly 0 advantages (never NaN), whatever ``scale`` is, since it carries no learning signal.

    Args:
        rewards: Scalar reward of each response, shape ``(N,)``. Integer/bool rewards are converted
            to the default float dtype.
        group_ids: Integer group (prompt) id of each response, shape ``(N,)``. Responses with the
            same id form a group; groups need not be contiguous, sorted, or of equal size.
        scale: How the centred rewards are divided:

            * ``"group"``: by the std of the response's own group (GRPO, DeepSeekMath).
            * ``"batch"``: by the std of all ``N`` rewards of the batch (TRL ``scale_rewards="batch"``);
              the mean is still the group mean.
            * ``"none"``: not divided, only the group mean is subtracted (Dr. GRPO, arXiv:2503.20783).
        eps: Added to the std before dividing, for numerical stability (ignored for ``"none"``).

    Returns:
        Advantages, shape ``(N,)``, same dtype and device as ``rewards`` (float). Unitless, in the
        units of the reward (``"none"``) or of standard deviations (``"group"``/``"batch"``).

    Raises:
        ValueError: If ``rewards`` is not 1-D, ``group_ids`` does not have the shape of ``rewards``
            or is not an integer tensor, ``eps`` is negative, or ``scale`` is not one of
            ``"group"``, ``"batch"``, ``"none"``.

    Example:
        One group of four responses, two correct: mean 0.5, unbiased std
        ``sqrt((4 * 0.25) / 3) = 0.57735``, so ``A = +-0.5 / (0.57735 + 1e-4) = +-0.86588``.

        >>> import torch
        >>> group_normalized(torch.tensor([1., 0., 1., 0.]), torch.tensor([0, 0, 0, 0]))
        tensor([ 0.8659, -0.8659,  0.8659, -0.8659])
    """
    _check_group_inputs(rewards, group_ids, scale, eps)

    rewards = as_float(rewards).detach()  # (N,)
    n = rewards.shape[0]
    if n == 0:
        return rewards.clone()  # (0,)
    centred, inverse, counts, zeros_k = group_centred(rewards, group_ids)  # (N,), (N,), (K,), (K,)

    if scale == "none":
        return centred  # (N,)

    if scale == "group":
        sq = zeros_k.index_add(0, inverse, centred * centred)  # (K,)
        var = sq / (counts - 1).clamp(min=1)  # (K,) unbiased; groups of size 1 have sq == 0
        std = var.sqrt()[inverse]  # (N,)
    else:  # "batch"
        batch_std = rewards.std() if n > 1 else rewards.new_zeros(())  # () unbiased
        std = batch_std.expand_as(rewards)  # (N,)

    denominator = std + eps  # (N,)
    safe = denominator > 0  # a constant group with eps = 0 has 0 / 0: its advantage is 0, not NaN
    return torch.where(safe, centred / torch.where(safe, denominator, 1.0), torch.zeros_like(centred))  # (N,)


def leave_one_out(rewards: Tensor, group_ids: Tensor) -> Tensor:
    r"""RLOO advantages: each reward minus the mean reward of the *other* responses of its group.

    The REINFORCE Leave-One-Out estimator (Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for
    free!"; used for RLHF by Ahmadian et al., arXiv:2402.14740, "RLOO"): for the ``G`` responses
    ``o_1 .. o_G`` sampled for one prompt,

    .. math::
        \hat A_i = r_i - \frac{1}{G - 1}\sum_{j \ne i} r_j = \frac{G}{G - 1}\big(r_i - \mathrm{mean}(r)\big),

    an unbiased baseline since ``r_j`` (``j != i``) does not depend on ``o_i``. It is
    :func:`group_normalized` with ``scale="none"`` times ``G / (G - 1)``, not divided by any std. Groups of
    size 1 (no other response) and groups whose rewards are all equal get exactly 0. Groups need not be
    contiguous, sorted, or of equal size (``G`` is each group's own size).

    Args:
        rewards: Scalar reward of each response, shape ``(N,)``, in reward units (a KL penalty, if any, is
            already subtracted). Integer/bool rewards are converted to the default float dtype.
        group_ids: Integer group (prompt) id of each response, shape ``(N,)``.

    Returns:
        Advantages, shape ``(N,)``, same dtype and device as ``rewards`` (float), in reward units; detached.

    Raises:
        ValueError: If ``rewards`` is not 1-D, or ``group_ids`` does not have its shape or is not an integer
            tensor.

    Example:
        Group 0 has rewards ``[1, 0, 0.5]``: ``1 - (0 + 0.5) / 2 = 0.75``, ``0 - 0.75 = -0.75``,
        ``0.5 - 0.5 = 0``. Group 1 has a single response: 0.

        >>> leave_one_out(torch.tensor([1.0, 0.0, 0.5, 3.0]), torch.tensor([0, 0, 0, 1]))
        tensor([ 0.7500, -0.7500,  0.0000,  0.0000])
    """
    _check_rewards_and_groups(rewards, group_ids)
    rewards = as_float(rewards).detach()  # (N,)
    if rewards.shape[0] == 0:
        return rewards.clone()  # (0,)
    centred, inverse, counts, _ = group_centred(rewards, group_ids)  # (N,), (N,), (K,), (K,)
    size = counts[inverse]  # (N,) G of each response's group
    return centred * size / (size - 1).clamp(min=1)  # (N,) size-1 groups: centred is already 0


def process_group_normalized(
    token_rewards: Tensor,
    step_mask: Tensor,
    group_ids: Tensor,
    response_mask: Tensor,
    scale: str = "group",
    eps: float = 1e-4,
    credit: str = "sum",
) -> Tensor:
    r"""Group-relative advantages for process supervision (GRPO, DeepSeekMath section 4.1.3).

    Response ``i`` has steps ending at tokens ``index(j)`` with rewards ``r_i^{index(j)}``. Every step reward
    of a group is normalised by the mean and std of *all* step rewards of that group,
    :math:`\tilde r_i^{index(j)} = (r_i^{index(j)} - \mathrm{mean}(R)) / \mathrm{std}(R)`, and a token's
    advantage is the sum of the normalised rewards of the steps that end at or after it:

    .. math:: \hat A_{i,t} = \sum_{index(j) \ge t} \tilde r_i^{index(j)}

    The normalisation is :func:`group_normalized` applied to the flat list of steps (same unbiased std,
    ``eps`` and ``scale`` options), so a group whose step rewards are all equal gets 0.

    With ``credit="min"`` a token's value is instead the *minimum* of the normalised rewards of the steps that
    end at or after it, :math:`V_{i,t} = \min_{index(j) \ge t} \tilde r_i^{index(j)}` (PURE, Cheng et al.
    2025, arXiv:2504.15275: min-form credit assignment, the value as the minimum of future rewards), and the
    advantage is that value minus the group's mean response value,
    :math:`\hat A_{i,t} = V_{i,t} - \mathrm{mean}_{k \in \text{group}}(V_{k,0})` (a group baseline as in
    GRPO, so a group whose responses all have the same worst step gets 0, as a group of equal outcome rewards
    does). The sum pays a response for its *number* of steps above the group's mean: in a group of wrong
    answers a 0-reward step normalises to a positive value, so more steps before the wrong end earn more. The
    minimum pays for the worst remaining step only.

    Args:
        token_rewards: ``(N, T)`` step rewards at their step-end tokens (other entries are ignored).
        step_mask: ``(N, T)``, nonzero at step-end tokens. Responses may have different numbers of steps.
        group_ids: ``(N,)`` integer group id of each response.
        response_mask: ``(N, T)``, nonzero on real tokens; advantages are 0 on padding.
        scale: ``"group"``, ``"batch"`` or ``"none"`` (see :func:`group_normalized`).
        eps: Added to the std.
        credit: ``"sum"`` (DeepSeekMath 4.1.3) or ``"min"`` (PURE's min-form, minus the group's mean
            response value) over the later steps.

    Returns:
        ``(N, T)`` advantages (float, dtype of ``token_rewards``).

    Raises:
        ValueError: Shapes differ from ``(N, T)`` / ``(N,)``, or invalid ``scale`` / ``eps`` / ``credit``.

    Example:
        One group, response 0 with steps ending at tokens 0 and 2 (rewards 1, 0), response 1 with one step
        at token 1 (reward 1). Step rewards ``{1, 0, 1}``: mean 2/3, std ``sqrt(1/3)``, normalised
        ``{0.577, -1.155, 0.577}``; response 0's tokens get ``[0.577 - 1.155, -1.155, -1.155]``.

        >>> r = torch.tensor([[1., 0., 0.], [0., 1., 0.]])
        >>> steps = torch.tensor([[1, 0, 1], [0, 1, 0]])
        >>> process_group_normalized(r, steps, torch.tensor([0, 0]), torch.tensor([[1, 1, 1], [1, 1, 0]]), eps=0.0)
        tensor([[-0.5774, -1.1547, -1.1547],
                [ 0.5774,  0.5774,  0.0000]])

        The minimum instead: response values ``V_0`` are ``min(0.577, -1.155) = -1.155`` and ``0.577``, their
        mean ``-0.289`` is subtracted: response 0 gets ``-1.155 + 0.289`` on every token, response 1
        ``0.577 + 0.289``.

        >>> process_group_normalized(r, steps, torch.tensor([0, 0]), torch.tensor([[1, 1, 1], [1, 1, 0]]), eps=0.0,
        ...                          credit="min")
        tensor([[-0.8660, -0.8660, -0.8660],
                [ 0.8660,  0.8660,  0.0000]])
    """
    if credit not in PROCESS_CREDITS:
        raise ValueError(f"credit must be one of {list(PROCESS_CREDITS)}, got {credit!r}")
    _check_2d_pair("token_rewards", token_rewards, "step_mask", step_mask)
    _check_2d_pair("token_rewards", token_rewards, "response_mask", response_mask)
    check_shape("group_ids", group_ids, (token_rewards.shape[0],), "one group id per response")
    rewards = as_float(token_rewards).detach()  # (N, T)
    steps = step_mask.to(rewards.device) != 0  # (N, T) bool
    step_groups = group_ids.to(rewards.device)[:, None].expand_as(steps)[steps]  # (M,) group of each step
    normalised = torch.zeros_like(rewards)  # (N, T)
    normalised[steps] = group_normalized(rewards[steps], step_groups, scale=scale, eps=eps)  # (M,)
    advantages = (normalised.flip(-1).cumsum(-1).flip(-1) if credit == "sum"  # (N, T): sum over later steps
                  else _min_form_credit(normalised, steps, group_ids))  # (N, T): their minimum, minus baseline
    return advantages * (response_mask.to(rewards.device) != 0).to(rewards.dtype)


def _min_form_credit(normalised: Tensor, steps: Tensor, group_ids: Tensor) -> Tensor:
    """``(N, T)`` min of the normalised step rewards ending at or after each token, minus the group's mean
    response value (``credit="min"`` of :func:`process_group_normalized`; 0 after a response's last step)."""
    later = normalised.masked_fill(~steps, math.inf).flip(-1).cummin(-1).values.flip(-1)  # (N, T) V_{i,t}
    after_last = later.isinf()  # (N, T) tokens after a response's last step (or a response with no step)
    values = later[:, 0].masked_fill(after_last[:, 0], 0.0)  # (N,) V_{i,0}: the worst step of each response
    baseline = values - group_normalized(values, group_ids.to(values.device), scale="none")  # (N,) group mean
    return (later - baseline[:, None]).masked_fill(after_last, 0.0)  # (N, T)


def _check_2d_pair(name: str, tensor: Tensor, other_name: str, other: Tensor) -> None:
    if tensor.dim() != 2:
        raise ValueError(f"{name} has shape {shape_of(tensor)}, expected (N, T)")
    check_shape(other_name, other, shape_of(tensor), f"same as {name}: (N, T)")


def informative_groups(rewards: np.ndarray, group_size: int, atol: float = 1e-6) -> np.ndarray:
    """Which responses belong to a group whose rewards are not all equal (DAPO's dynamic sampling).

    DAPO (arXiv:2503.14476) section 3.2, eq. 11 keeps a prompt only if ``0 < |{o_i correct}| < G``: a group
    whose rewards are all equal has zero group-normalised advantage, so it gives no gradient. Rows are in
    consecutive groups of ``group_size`` (as the rollout lays them out).

    Args:
        rewards: ``(N,)`` rewards, ``N`` a multiple of ``group_size``.
        group_size: ``G`` >= 1.
        atol: rewards closer than this count as equal.

    Returns:
        ``(N,)`` bool, True on every row of a group with ``max - min > atol``.

    Raises:
        ValueError: ``N`` is not a multiple of ``group_size``, or ``group_size < 1``.

    >>> informative_groups(np.array([1.0, 0.0, 1.0, 1.0]), 2).tolist()
    [True, True, False, False]
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if group_size < 1 or rewards.ndim != 1 or rewards.shape[0] % group_size:
        raise ValueError(f"rewards of shape {rewards.shape} cannot be split into groups of group_size={group_size}")
    groups = rewards.reshape(-1, group_size)  # (n_groups, G)
    mixed = groups.max(axis=1) - groups.min(axis=1) > atol  # (n_groups,)
    return np.repeat(mixed, group_size)


def broadcast_to_tokens(advantages: Tensor, response_mask: Tensor) -> Tensor:
    """Give every response token of a sequence the advantage of its sequence.

    Outcome supervision (DeepSeekMath arXiv:2402.03300 section 4.1.2) sets
    ``A_hat_{i,t} = A_hat_i`` for all tokens ``t`` of response ``o_i``.

    Args:
        advantages: Per-sequence advantages, shape ``(N,)``.
        response_mask: Shape ``(N, T)``, nonzero/True on real response tokens, 0/False on padding.

    Returns:
        Per-token advantages, shape ``(N, T)``, dtype of ``advantages``; exactly 0 on padding.

    Raises:
        ValueError: If ``advantages`` is not 1-D or ``response_mask`` is not ``(N, T)``.
    """
    if advantages.dim() != 1:
        raise ValueError(f"advantages has shape {shape_of(advantages)}, expected (N,) (1-D)")
    if response_mask.dim() != 2 or response_mask.shape[0] != advantages.shape[0]:
        raise ValueError(
            f"response_mask has shape {shape_of(response_mask)}, expected ({advantages.shape[0]}, T) "
            f"(N from advantages)"
        )
    advantages = as_float(advantages)  # (N,)
    mask = response_mask.to(device=advantages.device) != 0  # (N, T) bool
    per_token = advantages.unsqueeze(1).expand(mask.shape)  # (N, T)
    return torch.where(mask, per_token, torch.zeros_like(per_token))  # (N, T)
