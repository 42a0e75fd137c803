"""Token-by-token decoding with the KV cache as recurrent state (token-level rollouts and ``predict``).

Mirrors what ``model.generate`` does per step (prefill once, then one token per forward with the cache,
HF's own temperature/top-p logits warpers, ``torch.multinomial`` over the whole batch, pad fed to finished
rows), so a token-level rollout samples exactly the responses a sequence-level rollout samples with the
same seed. The prefix is never recomputed: each step runs the model on one new token per row.

Shapes: ``B`` rows, ``S`` cached positions, ``V`` vocabulary.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers import DynamicCache, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from llm_gym.lm import trim_left_padding


class DecodeState(NamedTuple):
    """Recurrent state of a batch being decoded.

    Attributes:
        past_key_values: the model's KV cache over ``S`` positions.
        attention_mask: ``(B, S)`` int64, 0 on left padding.
        logits: ``(B, V)`` float32 next-token logits (before temperature).
    """

    past_key_values: DynamicCache
    attention_mask: torch.Tensor
    logits: torch.Tensor


def _forward(model: torch.nn.Module, input_ids, attention_mask, past_key_values) -> torch.Tensor:
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids = position_ids.masked_fill(attention_mask == 0, 1)[:, -input_ids.shape[1]:]
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                past_key_values=past_key_values, use_cache=True)
    return out.logits[:, -1, :].to(dtype=torch.float32, copy=True)  # (B, V)


@torch.no_grad()
def prefill(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> DecodeState:
    """Run the prompt once and return the state holding its KV cache and next-token logits.

    Args:
        model: a Hugging Face causal LM.
        input_ids: ``(B, L)`` left-padded prompts.
        attention_mask: ``(B, L)``.
    """
    device = next(model.parameters()).device
    input_ids, attention_mask = trim_left_padding(input_ids, attention_mask)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device).long()
    cache = DynamicCache()
    logits = _forward(model, input_ids, attention_mask, cache)
    return DecodeState(cache, attention_mask, logits)


@torch.no_grad()
def decode_step(model: torch.nn.Module, state: DecodeState, tokens: torch.Tensor) -> DecodeState:
    """Append one token per row (``(B,)``) using the cache; the prefix is not recomputed."""
    device = state.attention_mask.device
    mask = torch.cat([state.attention_mask, state.attention_mask.new_ones((tokens.shape[0], 1))], dim=1)
    logits = _forward(model, tokens.to(device)[:, None], mask, state.past_key_values)
    return DecodeState(state.past_key_values, mask, logits)


def sample_tokens(logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0,
                  do_sample: bool = True) -> torch.Tensor:
    """Pick the next token per row from ``(B, V)`` logits exactly as ``generate`` does.

    Sampling applies HF's ``TemperatureLogitsWarper`` and ``TopPLogitsWarper`` (only when they change
    anything), then ``torch.multinomial`` over the whole batch; greedy takes the argmax.

    Returns:
        ``(B,)`` int64 token ids.
    """
    if not do_sample:
        return torch.argmax(logits, dim=-1)
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    scores = warpers(None, logits)
    return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)


def left_align(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's right padding to the left: ``[pad, prompt, tokens, pad]`` -> ``[pad, prompt, tokens]``.

    Token-level observations hold the prompt left-padded to ``L`` followed by the tokens generated so far
    and right padding (``(B, L + T)``); prefilling from them needs one contiguous left-padded block.
    """
    last = attention_mask.shape[1] - 1 - torch.flip(attention_mask, [1]).long().argmax(dim=1)  # (B,)
    shifts = (attention_mask.shape[1] - 1 - last).tolist()
    ids = torch.stack([torch.roll(row, s) for row, s in zip(input_ids, shifts, strict=True)])
    mask = torch.stack([torch.roll(row, s) for row, s in zip(attention_mask, shifts, strict=True)])
    return ids, mask
