"""GroupRolloutBuffer: one rollout of N sequences (n_prompts x group_size), shared by every algorithm."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch


class RolloutSamples(NamedTuple):
    """A (mini/micro) batch of sequences; ``B`` rows, ``L`` prompt tokens, ``T`` response tokens.

    ``old_log_probs`` / ``ref_log_probs`` / ``values`` are None when the algorithm does not need them.
    """

    prompt_ids: torch.Tensor  # (B, L) left-padded
    prompt_mask: torch.Tensor  # (B, L)
    response_ids: torch.Tensor  # (B, T) right-padded
    response_mask: torch.Tensor  # (B, T)
    rewards: torch.Tensor  # (B,) outcome reward
    token_rewards: torch.Tensor  # (B, T) per-token / process rewards
    group_ids: torch.Tensor  # (B,)
    advantages: torch.Tensor  # (B, T)
    returns: torch.Tensor  # (B, T)
    old_log_probs: torch.Tensor | None  # (B, T)
    ref_log_probs: torch.Tensor | None  # (B, T)
    values: torch.Tensor | None  # (B, T)
    step_mask: torch.Tensor | None = None  # (B, T) 1.0 at step-end tokens (process supervision), else None

    @property
    def n_sequences(self) -> int:
        """Number of rows ``B``."""
        return self.prompt_ids.shape[0]

    def index(self, idx: torch.Tensor | slice) -> RolloutSamples:
        """Rows ``idx`` of every field (None fields stay None)."""
        return RolloutSamples(*(None if f is None else f[idx] for f in self))


class GroupRolloutBuffer:
    """Holds one rollout: ``N`` sequences padded to ``T`` response tokens, in groups of ``G``.

    Fields (DESIGN's buffer contract): ``prompt_ids (N, L)``, ``prompt_mask (N, L)``,
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

    def add(self, prompt_ids, prompt_mask, response_ids, response_mask, rewards, group_ids,
            token_rewards=None, step_mask=None) -> None:
        """Store a whole rollout (replaces the previous one).

        Args:
            prompt_ids: ``(N, L)``. prompt_mask: ``(N, L)``.
            response_ids: ``(N, T)``. response_mask: ``(N, T)``.
            rewards: ``(N,)`` outcome rewards.
            group_ids: ``(N,)`` int, equal for responses to the same prompt draw.
            token_rewards: ``(N, T)``; default puts each outcome reward on the last response token.
            step_mask: ``(N, T)``, nonzero at the step ends of process supervision (None: no steps).

        Raises:
            ValueError: inconsistent first dimensions or empty rollout.
        """
        n = prompt_ids.shape[0]
        if n == 0:
            raise ValueError("Empty rollout: no sequences to store.")
        for name, t in (("prompt_mask", prompt_mask), ("response_ids", response_ids),
                        ("response_mask", response_mask), ("rewards", rewards), ("group_ids", group_ids)):
            if t.shape[0] != n:
                raise ValueError(f"{name} has {t.shape[0]} rows, expected {n} (one per sequence)")
        dev = self.device
        mask = response_mask.to(dev).float()
        rewards = torch.as_tensor(rewards, dtype=torch.float32, device=dev)
        if token_rewards is None:
            token_rewards = torch.zeros_like(mask)
            last = (mask.sum(-1).long() - 1).clamp(min=0)
            token_rewards[torch.arange(n, device=dev), last] = rewards
        zeros = torch.zeros_like(mask)
        self.samples = RolloutSamples(
            prompt_ids.to(dev), prompt_mask.to(dev), response_ids.to(dev), mask, rewards,
            token_rewards.to(dev).float(), torch.as_tensor(group_ids, device=dev), zeros, zeros.clone(),
            None, None, None, None if step_mask is None else step_mask.to(dev).float(),
        )

    def update(self, **fields: torch.Tensor | None) -> None:
        """Set computed fields (``old_log_probs``, ``ref_log_probs``, ``values``, ``advantages``, ``returns``)."""
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


def micro_batches(samples: RolloutSamples, micro_batch_size: int) -> Iterator[RolloutSamples]:
    """Split a minibatch into consecutive micro-batches of ``micro_batch_size`` rows (gradient accumulation)."""
    for start in range(0, samples.n_sequences, micro_batch_size):
        yield samples.index(slice(start, start + micro_batch_size))
