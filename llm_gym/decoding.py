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


def group_starts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, group_size: int) -> bool:
    """True when the ``(B, L)`` prompts come in consecutive groups of ``group_size`` identical rows."""
    if group_size <= 1 or prompt_ids.shape[0] % group_size:
        return False
    ids = prompt_ids.view(-1, group_size, prompt_ids.shape[1])
    mask = prompt_mask.view(-1, group_size, prompt_mask.shape[1])
    return bool((ids == ids[:, :1]).all() and (mask == mask[:, :1]).all())


class GroupSampler:
    """Batched sampling with the KV cache: each group's prompt is prefilled once, finished rows leave the batch.

    Rollouts draw ``group_size`` responses per prompt. The prompt is run through the model once per group and
    its KV cache (and next-token logits) repeated ``group_size`` times (``DynamicCache.batch_repeat_interleave``),
    so the prefill costs ``B / group_size`` rows instead of ``B``. Rows that have finished (EOS, or an env that
    ended the episode) are removed from the cache (``batch_select_indices``), so later decode steps only run
    the rows still being written. Sampling is :func:`sample_tokens` over the active rows (HF's warpers and
    ``torch.multinomial``), so sequence-level and token-level rollouts, which both use this class, draw the
    same responses for the same seed.

    Usage: ``tokens = sampler.sample()`` (``(B,)``, pad for finished rows), then ``sampler.advance(tokens,
    done)`` with ``done (B,)`` the rows that end with this token; repeat until :attr:`all_done`.

    Args:
        model: a Hugging Face causal LM.
        prompt_ids: ``(B, L)`` left-padded prompts; with ``group_size > 1`` consecutive groups of identical rows
            (otherwise every row is prefilled).
        prompt_mask: ``(B, L)``.
        group_size: rows per group (1 = no sharing).
        temperature, top_p: sampling settings (:func:`sample_tokens`).
        pad_token_id: the token returned for finished rows.
        do_sample: False for greedy decoding.
    """

    def __init__(self, model: torch.nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, group_size: int,
                 temperature: float = 1.0, top_p: float = 1.0, pad_token_id: int = 0, do_sample: bool = True):
        self.model, self.temperature, self.top_p, self.do_sample = model, temperature, top_p, do_sample
        self.pad_token_id = int(pad_token_id)
        n = prompt_ids.shape[0]
        shared = group_starts(prompt_ids, prompt_mask, group_size)
        if shared:
            state = prefill(model, prompt_ids[::group_size], prompt_mask[::group_size])  # one row per group
            state.past_key_values.batch_repeat_interleave(group_size)
            state = DecodeState(state.past_key_values, state.attention_mask.repeat_interleave(group_size, 0),
                                state.logits.repeat_interleave(group_size, 0))
        else:
            state = prefill(model, prompt_ids, prompt_mask)
        self.state = state
        self.active = torch.arange(n)  # (A,) the rows still in the cache, in batch order
        self.n_rows = n

    @property
    def all_done(self) -> bool:
        """True when every row has finished."""
        return self.active.numel() == 0

    def sample(self) -> torch.Tensor:
        """The next token of every row ``(B,)`` int64 on CPU; finished rows get ``pad_token_id``."""
        tokens = torch.full((self.n_rows,), self.pad_token_id, dtype=torch.long)
        if not self.all_done:
            tokens[self.active] = sample_tokens(self.state.logits, self.temperature, self.top_p,
                                                self.do_sample).cpu()
        return tokens

    def advance(self, tokens: torch.Tensor, done: torch.Tensor) -> None:
        """Feed each active row's ``tokens`` (``(B,)``) to the model, after dropping the rows in ``done`` (``(B,)``
        bool: they ended with this token). The prefix is never recomputed."""
        keep = ~torch.as_tensor(done, dtype=torch.bool)[self.active]  # (A,)
        state = self.state
        if not bool(keep.all()):
            index = keep.nonzero().squeeze(1).to(state.attention_mask.device)
            state.past_key_values.batch_select_indices(index)
            state = DecodeState(state.past_key_values, state.attention_mask[index], state.logits[index])
            self.active = self.active[keep]
        if not self.all_done:
            state = decode_step(self.model, state, tokens[self.active])
        self.state = state


@torch.no_grad()
def sample_responses(model: torch.nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                     max_new_tokens: int, eos_token_id: int, pad_token_id: int, group_size: int = 1,
                     temperature: float = 1.0, top_p: float = 1.0, do_sample: bool = True) -> torch.Tensor:
    """Sample ``(B, T)`` responses with a :class:`GroupSampler` (rollouts): right-padded with ``pad_token_id``.

    A row ends at its first ``eos_token_id`` (kept) or after ``max_new_tokens`` tokens. Same distribution as
    ``model.generate(do_sample=True)`` with the same temperature and top-p (top-k off); the random stream
    differs because finished rows stop drawing. ``do_sample=False`` decodes greedily: the same tokens as
    ``generate`` (tested), faster because finished rows leave the batch.
    """
    response = torch.full((prompt_ids.shape[0], max_new_tokens), pad_token_id, dtype=torch.long)  # (B, T)
    sampler = GroupSampler(model, prompt_ids, prompt_mask, group_size, temperature, top_p, pad_token_id, do_sample)
    for t in range(max_new_tokens):
        tokens = sampler.sample()
        live = torch.zeros(prompt_ids.shape[0], dtype=torch.bool)
        live[sampler.active] = True
        response[live, t] = tokens[live]
        if t == max_new_tokens - 1:
            break  # no forward for a token that is never sampled
        sampler.advance(tokens, live & (tokens == eos_token_id))
        if sampler.all_done:
            break
    return response
