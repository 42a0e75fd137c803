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


def _extend(model: torch.nn.Module, state: DecodeState, ids: torch.Tensor, mask: torch.Tensor) -> DecodeState:
    """Append ``(B, w)`` ids with their ``(B, w)`` attention mask to the cache; 0-mask positions are gaps."""
    device = state.attention_mask.device
    mask = torch.cat([state.attention_mask, mask.to(device).long()], dim=1)
    logits = _forward(model, ids.to(device), mask, state.past_key_values)
    return DecodeState(state.past_key_values, mask, logits)


def _left_padded(rows: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids (B, w), mask (B, w))``: the rows left-padded to the longest (mask 0 on padding)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.as_tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids, mask


class ConversationSampler:
    """Batched multi-turn sampling: each episode's KV cache is kept across turns, only new tokens are run.

    One row per episode. :meth:`sample_turn` samples the next assistant turn of every live row in one batch
    (one forward per token over the rows, as :class:`GroupSampler`; a row that emitted EOS is fed padding
    with attention 0 until the turn ends, so its cache holds gaps the next turns never attend to).
    :meth:`extend` takes each live episode's conversation after the env answered (the exact ids of the
    observation) and runs only the tokens the cache does not hold yet: the turn's last sampled token and the
    env's message, left-padded into one block. Position ids follow the attention mask, so the logits equal
    those of a fresh forward over the unpadded conversation (up to float rounding). When a conversation does
    not extend what the cache holds (an env that edited the turn), the live rows are prefilled again from
    their conversations (``n_rebuilds`` counts it); with ``reuse_cache=False`` every turn is prefilled
    from scratch (the cost :mod:`scripts.benchmark` compares with).

    Args:
        model: a Hugging Face causal LM.
        prompt_ids: ``(B, L)`` left-padded prompts; consecutive groups of ``group_size`` identical rows are
            prefilled once (:class:`GroupSampler`'s sharing).
        prompt_mask: ``(B, L)``.
        group_size: rows per group (1 = no sharing).
        temperature, top_p, do_sample: sampling settings (:func:`sample_tokens`).
        pad_token_id: the token returned for rows not writing.
        eos_token_id: ends a turn (kept in the turn).
        reuse_cache: keep the cache across turns (False: prefill each turn's whole conversation).

    Attributes:
        live: ``(A,)`` the rows still in the cache (episodes not ended), in batch order.
        prefilled_tokens: tokens run through the model outside the per-token decode (prompt prefill, the
            tails of :meth:`extend`, rebuilds): the per-turn cost the cache saves.
        n_rebuilds: times the cache was rebuilt from the conversations (``reuse_cache=True``).
    """

    def __init__(self, model: torch.nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                 group_size: int = 1, temperature: float = 1.0, top_p: float = 1.0, pad_token_id: int = 0,
                 eos_token_id: int | None = None, do_sample: bool = True, reuse_cache: bool = True):
        self._group = GroupSampler(model, prompt_ids, prompt_mask, group_size, temperature, top_p, pad_token_id,
                                   do_sample)
        self.model, self.pad_token_id, self.eos_token_id = model, int(pad_token_id), eos_token_id
        self.reuse_cache = reuse_cache
        self.n_rows = prompt_ids.shape[0]
        self.live = torch.arange(self.n_rows)
        self._fed = [row[m.bool()].tolist() for row, m in zip(prompt_ids, prompt_mask, strict=True)]
        self.prefilled_tokens = int(prompt_mask[::group_size].sum()) if group_starts(
            prompt_ids, prompt_mask, group_size) else int(prompt_mask.sum())
        self.n_rebuilds = 0

    @property
    def state(self) -> DecodeState:
        """The cache, attention mask ``(A, S)`` and next-token logits ``(A, V)`` of the live rows."""
        return self._group.state

    @torch.no_grad()
    def sample_turn(self, max_new_tokens: int) -> torch.Tensor:
        """Sample one turn for every live row: ``(B, max_new_tokens)`` int64, right-padded with pad.

        A row's turn ends at its first EOS (kept) or after ``max_new_tokens`` tokens; rows not live get
        only padding. Every sampled token but each row's last is fed to the cache (the last is fed by
        :meth:`extend`, before the env's message).
        """
        g, live = self._group, self.live
        turn = torch.full((self.n_rows, max_new_tokens), self.pad_token_id, dtype=torch.long)
        writing = torch.ones(len(live), dtype=torch.bool)  # (A,)
        for t in range(max_new_tokens):
            tokens = torch.full((len(live),), self.pad_token_id, dtype=torch.long)
            tokens[writing] = sample_tokens(g.state.logits[writing.to(g.state.logits.device)], g.temperature,
                                            g.top_p, g.do_sample).cpu()
            turn[live[writing], t] = tokens[writing]
            if self.eos_token_id is not None:
                writing &= tokens != self.eos_token_id
            if t == max_new_tokens - 1 or not bool(writing.any()):
                break
            feed = torch.where(writing, tokens, torch.full_like(tokens, self.pad_token_id))
            g.state = _extend(self.model, g.state, feed[:, None], writing.long()[:, None])
            for i in writing.nonzero().squeeze(1).tolist():
                self._fed[int(live[i])].append(int(tokens[i]))
        return turn

    @torch.no_grad()
    def extend(self, conversations: dict[int, list[int] | None]) -> None:
        """Continue every live row with its conversation after the env's answer; drop the rows that ended.

        Args:
            conversations: ``row -> the unpadded conversation ids`` (prompt, turns and env messages, as
                the env's observation holds them) for every live row; None for a row whose episode ended
                (it leaves the cache).

        Raises:
            KeyError: a live row is missing from ``conversations``.
        """
        keep = torch.tensor([conversations[int(r)] is not None for r in self.live], dtype=torch.bool)
        g = self._group
        if not bool(keep.all()):
            index = keep.nonzero().squeeze(1).to(g.state.attention_mask.device)
            g.state.past_key_values.batch_select_indices(index)
            g.state = DecodeState(g.state.past_key_values, g.state.attention_mask[index], g.state.logits[index])
            self.live = self.live[keep]
        if len(self.live) == 0:
            return
        rows = [int(r) for r in self.live]
        convs = [list(conversations[r]) for r in rows]
        extends = all(len(c) > len(self._fed[r]) and c[:len(self._fed[r])] == self._fed[r]
                      for r, c in zip(rows, convs, strict=True))
        if self.reuse_cache and extends:
            tails = [c[len(self._fed[r]):] for r, c in zip(rows, convs, strict=True)]
            ids, mask = _left_padded(tails, self.pad_token_id)
            g.state = _extend(self.model, g.state, ids, mask)
            self.prefilled_tokens += sum(len(t) for t in tails)
        else:
            self.n_rebuilds += int(self.reuse_cache)
            ids, mask = _left_padded(convs, self.pad_token_id)
            g.state = prefill(self.model, ids, mask)
            self.prefilled_tokens += sum(len(c) for c in convs)
        for r, c in zip(rows, convs, strict=True):
            self._fed[r] = c
