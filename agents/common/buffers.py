"""The one rollout container (:class:`RolloutSamples`) and the buffer that holds it, shared by every algorithm."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch


class RolloutSamples(NamedTuple):
    """A rollout, minibatch or micro-batch of ``B`` sequences; ``L`` prompt tokens, ``T`` response tokens.

    The same container goes from collection (where only the first fields and ``infos`` are set) through the
    buffer (which fills the computed fields) to every minibatch and micro-batch. Fields are read by name.
    Computed fields are None until set (``old_log_probs`` / ``ref_log_probs`` / ``values`` stay None when
    the algorithm does not need them).

    Multi-turn episodes (:class:`~llm_gym.envs.multiturn.MultiTurnEnv`): the "response" is the whole
    conversation after the prompt, every assistant turn and every env message in between, exactly as the env
    observed it. ``response_attention_mask`` marks all of it (the model reads it), ``response_mask`` only the
    tokens the policy sampled: the loss, advantages, KL and token counts use ``response_mask``, so env tokens
    never get a gradient.
    """

    @property
    def attention_mask(self) -> torch.Tensor:
        """``(B, T)`` the response tokens the model attends to: ``response_attention_mask`` or ``response_mask``."""
        return self.response_mask if self.response_attention_mask is None else self.response_attention_mask

    prompt_ids: torch.Tensor  # (B, L) left-padded
    prompt_mask: torch.Tensor  # (B, L)
    response_ids: torch.Tensor  # (B, T) right-padded
    response_mask: torch.Tensor  # (B, T)
    rewards: torch.Tensor  # (B,) episode return (outcome, plus step rewards with process supervision)
    token_rewards: torch.Tensor | None = None  # (B, T) per-token rewards; None: the outcome on the last token
    group_ids: torch.Tensor | None = None  # (B,) equal for the responses to one prompt draw
    advantages: torch.Tensor | None = None  # (B, T)
    returns: torch.Tensor | None = None  # (B, T)
    old_log_probs: torch.Tensor | None = None  # (B, T) nats, under the sampling policy
    ref_log_probs: torch.Tensor | None = None  # (B, T) nats, under the reference policy
    values: torch.Tensor | None = None  # (B, T) V(s_t), reward units (critic)
    step_mask: torch.Tensor | None = None  # (B, T) 1.0 at step-end tokens (process supervision)
    infos: list[dict] | None = None  # (B,) each sequence's final env info
    # (B, T) 1 on every real response token (multi-turn: the policy's turns AND the env's messages), which the
    # model attends to; None = response_mask. response_mask is then the loss mask (assistant tokens only).
    response_attention_mask: torch.Tensor | None = None

    @property
    def n_sequences(self) -> int:
        """Number of rows ``B``."""
        return self.prompt_ids.shape[0]

    def index(self, idx: torch.Tensor | slice) -> RolloutSamples:
        """Rows ``idx`` (a slice or an int tensor) of every field; None fields stay None."""
        rows = {}
        for name, value in self._asdict().items():
            if value is None or name != "infos":
                rows[name] = None if value is None else value[idx]
            else:
                rows[name] = value[idx] if isinstance(idx, slice) else [value[i] for i in idx.tolist()]
        return RolloutSamples(**rows)

    def take(self, rows: np.ndarray) -> RolloutSamples:
        """The rows ``rows`` (int indices; out-of-range ones are ignored, as slicing does)."""
        rows = np.asarray(rows)
        return self.index(torch.as_tensor(rows[rows < self.n_sequences], dtype=torch.long))

    @staticmethod
    def concat(parts: Sequence[RolloutSamples]) -> RolloutSamples:
        """The rows of several rollouts one after the other (a field None in the first is None in the result)."""
        merged = {}
        for name in RolloutSamples._fields:
            values = [getattr(p, name) for p in parts]
            if values[0] is None:
                merged[name] = None
            else:
                merged[name] = [i for v in values for i in v] if name == "infos" else torch.cat(values)
        return RolloutSamples(**merged)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` int64 index of each row's last nonzero position of a ``(B, T)`` mask (0 for an empty row).

    The last token of a response; with a multi-turn loss mask (gaps where the env's messages are), the
    policy's last sampled token.
    """
    T = mask.shape[1]
    nonzero = mask != 0  # (B, T)
    last = T - 1 - torch.flip(nonzero, [1]).long().argmax(dim=1)  # (B,)
    return torch.where(nonzero.any(dim=1), last, torch.zeros_like(last))


class GroupRolloutBuffer:
    """Holds one rollout: ``N`` sequences padded to ``T`` response tokens, in groups of ``G``.

    Fields (DESIGN's buffer contract, :class:`RolloutSamples`): ``prompt_ids (N, L)``, ``prompt_mask (N, L)``,
    ``response_ids (N, T)``, ``response_mask (N, T)``, ``old_log_probs (N, T)``, ``ref_log_probs (N, T)``,
    ``values (N, T)``, ``rewards (N,)``, ``token_rewards (N, T)``, ``group_ids (N,)``,
    ``advantages (N, T)``, ``returns (N, T)``, ``step_mask (N, T)`` (process supervision: 1.0 at the
    step-end tokens, the last token included; None without step rewards). Tensors live on ``device``.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.samples: RolloutSamples | None = None

    def reset(self) -> None:
        """Forget the stored rollout."""
        self.samples = None

    def add(self, rollout: RolloutSamples) -> None:
        """Store a whole rollout (replaces the previous one), moved to the buffer's device.

        ``token_rewards`` None puts each outcome reward on the sequence's last real token; ``advantages``
        and ``returns`` None start as zeros; ``group_ids`` None makes every sequence its own group.

        Raises:
            ValueError: empty rollout, or a field whose first dimension is not ``N`` (names the field).
        """
        n = rollout.n_sequences
        if n == 0:
            raise ValueError("Empty rollout: no sequences to store.")
        for name, value in rollout._asdict().items():
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} rows, expected {n} (one per sequence)")
        dev = self.device
        mask = rollout.response_mask.to(dev).float()  # (N, T)
        rewards = torch.as_tensor(rollout.rewards, dtype=torch.float32, device=dev)  # (N,)
        token_rewards = rollout.token_rewards
        if token_rewards is None:
            token_rewards = torch.zeros_like(mask)  # (N, T)
            token_rewards[torch.arange(n, device=dev), last_token_index(mask)] = rewards
        group_ids = torch.arange(n) if rollout.group_ids is None else rollout.group_ids
        fields = {name: (None if value is None or name == "infos" else value.to(dev))
                  for name, value in rollout._asdict().items()}
        self.samples = RolloutSamples(**fields)._replace(
            response_mask=mask, rewards=rewards,
            response_attention_mask=None if rollout.response_attention_mask is None
            else fields["response_attention_mask"].float(), token_rewards=token_rewards.to(dev).float(),
            group_ids=torch.as_tensor(group_ids, device=dev), infos=rollout.infos,
            advantages=torch.zeros_like(mask) if rollout.advantages is None else fields["advantages"],
            returns=torch.zeros_like(mask) if rollout.returns is None else fields["returns"],
            step_mask=None if rollout.step_mask is None else fields["step_mask"].float(),
        )

    def update(self, **fields: torch.Tensor | None) -> None:
        """Set fields by name (``old_log_probs``, ``ref_log_probs``, ``values``, ``advantages``, ``returns``...)."""
        self.samples = self.samples._replace(**fields)

    def __len__(self) -> int:
        return 0 if self.samples is None else self.samples.n_sequences

    def get(self, batch_size: int | None = None, generator: torch.Generator | None = None,
            shuffle: bool = True) -> Iterator[RolloutSamples]:
        """Yield minibatches of ``batch_size`` sequences (the last may be smaller), shuffled.

        Raises:
            RuntimeError: the buffer is empty.
        """
        if self.samples is None:
            raise RuntimeError("GroupRolloutBuffer is empty: collect a rollout first.")
        n = self.samples.n_sequences
        batch_size = n if batch_size is None else batch_size
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            yield self.samples.index(order[start:start + batch_size].to(self.device))


def length_grouped_order(samples: RolloutSamples) -> torch.Tensor:
    """Row order ``(B,)`` by real length (prompt + response tokens), longest first.

    Consecutive micro-batches of the reordered rows hold sequences of similar length, so the padding each
    forward trims away (common left padding of the prompts, all-padding response columns) is larger, and the
    longest micro-batch comes first (the peak memory shows at once). A minibatch's summed gradient does not
    depend on the order of its rows.
    """
    lengths = samples.prompt_mask.sum(-1) + samples.attention_mask.sum(-1)  # (B,)
    return torch.argsort(lengths.cpu(), descending=True, stable=True).to(samples.prompt_ids.device)


def micro_batches(samples: RolloutSamples, micro_batch_size: int) -> Iterator[RolloutSamples]:
    """Split a minibatch into consecutive micro-batches of ``micro_batch_size`` rows (gradient accumulation)."""
    for start in range(0, samples.n_sequences, micro_batch_size):
        yield samples.index(slice(start, start + micro_batch_size))


def micro_batch_weight(micro_mask: torch.Tensor, mb_mask: torch.Tensor, mode: str, world_size: int = 1,
                       minibatch_total: float | None = None) -> float:
    """Weight of a micro-batch loss so that summed weighted gradients equal the minibatch loss gradient.

    ``token-mean`` divides by all tokens of the minibatch: weight = tokens(micro) / tokens(minibatch).
    The per-sequence modes average over sequences: weight = rows(micro) / rows(minibatch). With data
    parallelism the minibatch is the union of every rank's, and DDP averages the ranks' gradients, so the
    denominator is the total over ranks and the weight is multiplied by ``world_size``.

    Args:
        micro_mask: ``(b, T)`` response mask of the micro-batch.
        mb_mask: ``(B, T)`` response mask of this rank's minibatch.
        mode: the loss aggregation mode.
        world_size: number of data-parallel ranks.
        minibatch_total: tokens (``token-mean``) or rows of the minibatch over every rank; None = this rank's.
    """
    token_mean = mode == "token-mean"
    local = float(micro_mask.sum()) if token_mean else float(micro_mask.shape[0])
    if minibatch_total is None:
        minibatch_total = float(mb_mask.sum()) if token_mean else float(mb_mask.shape[0])
    return local / max(minibatch_total, 1.0) * world_size
