"""GroupSampler: each group's prompt is prefilled once, finished rows leave the batch, and the result is exact.

Exactness is checked against Hugging Face ``generate``: greedy decoding through the sampler (shared prefill,
cache expansion, row pruning) gives the same tokens; and the sampler's sampled tokens have the log-probs of a
full forward pass.
"""

from __future__ import annotations

import pytest
import torch

from llm_gym.decoding import GroupSampler, group_starts, sample_responses
from llm_gym.lm import sequence_log_probs

pytestmark = pytest.mark.usefixtures("one_thread")


def grouped_prompts(lm, group_size: int):
    texts = [lm.format_prompt(t) for t in ("What is 3 + 4?", "Hi", "Compute 12 * 7, then add 5.")]
    ids, mask = lm.encode_prompts(texts, length=64)
    return ids.repeat_interleave(group_size, 0), mask.repeat_interleave(group_size, 0)


def greedy(lm, ids, mask, group_size: int, max_new_tokens: int = 10, drop: tuple[int, ...] = ()) -> torch.Tensor:
    """Greedy decoding through a GroupSampler; the rows in ``drop`` are also ended after their 3rd token."""
    response = torch.full((ids.shape[0], max_new_tokens), lm.pad_token_id, dtype=torch.long)
    sampler = GroupSampler(lm.model, ids, mask, group_size, pad_token_id=lm.pad_token_id, do_sample=False)
    for t in range(max_new_tokens):
        live = torch.zeros(ids.shape[0], dtype=torch.bool)
        live[sampler.active] = True
        tokens = sampler.sample()
        response[live, t] = tokens[live]
        done = live & (tokens == lm.eos_token_id)
        if t == 2:
            done[list(drop)] = True
        sampler.advance(tokens, done)
        if sampler.all_done:
            break
    return response


def test_group_starts_detects_consecutive_identical_prompts(tiny_lm):
    ids, mask = grouped_prompts(tiny_lm, 3)
    assert group_starts(ids, mask, 3) and not group_starts(ids, mask, 2) and not group_starts(ids, mask, 1)
    assert not group_starts(ids[torch.randperm(9, generator=torch.Generator().manual_seed(1))], mask, 3)


@pytest.mark.parametrize("group_size", [1, 3])
def test_greedy_through_the_sampler_equals_generate(tiny_lm, group_size):
    ids, mask = grouped_prompts(tiny_lm, group_size)
    expected = tiny_lm.generate(ids, mask, 10, do_sample=False)
    got = tiny_lm.as_generation(greedy(tiny_lm, ids, mask, group_size))
    assert torch.equal(got.response_mask, expected.response_mask)
    assert torch.equal(got.response_ids * got.response_mask, expected.response_ids * expected.response_mask)
    # Rows removed from the cache mid-way leave the others' continuations unchanged.
    drop = (0, ids.shape[0] - 2)
    pruned = greedy(tiny_lm, ids, mask, group_size, drop=drop)
    kept = [r for r in range(ids.shape[0]) if r not in drop]
    assert torch.equal(pruned[kept] * expected.response_mask[kept], expected.response_ids[kept] * expected.response_mask[kept])
    assert torch.equal(pruned[list(drop), :3], expected.response_ids[list(drop), :3])


def test_prefill_runs_once_per_group_and_finished_rows_leave_the_batch(tiny_lm):
    ids, mask = grouped_prompts(tiny_lm, 4)  # 12 rows, 3 groups
    batch_sizes = []
    hook = tiny_lm.model.register_forward_pre_hook(
        lambda module, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    torch.manual_seed(0)
    eos = tiny_lm.eos_token_id
    try:
        response = sample_responses(tiny_lm.model, ids, mask, 40, eos, tiny_lm.pad_token_id, group_size=4)
    finally:
        hook.remove()
    assert batch_sizes[0] == 3  # the prefill: one row per group
    decode = batch_sizes[1:]
    assert decode[0] == 12 and decode == sorted(decode, reverse=True)  # rows only ever leave
    finished_early = int(((response == eos).any(-1) & ((response == eos).long().argmax(-1) < 39)).sum())
    assert finished_early > 0 and decode[-1] < 12  # the test is meaningful: some rows ended early


def test_sampled_tokens_have_the_log_probs_of_a_full_forward(tiny_lm):
    ids, mask = grouped_prompts(tiny_lm, 2)
    sampler = GroupSampler(tiny_lm.model, ids, mask, 2, temperature=0.9, pad_token_id=tiny_lm.pad_token_id)
    torch.manual_seed(1)
    steps, tokens_per_step = [], []
    for _ in range(8):
        logits = torch.full((ids.shape[0], sampler.state.logits.shape[-1]), float("nan"))
        logits[sampler.active] = sampler.state.logits
        tokens = sampler.sample()
        steps.append(torch.log_softmax(logits / 0.9, -1).gather(-1, tokens[:, None]).squeeze(1))
        tokens_per_step.append(tokens)
        sampler.advance(tokens, torch.zeros(ids.shape[0], dtype=torch.bool))
    response = torch.stack(tokens_per_step, 1)
    full, _ = sequence_log_probs(tiny_lm.model, ids, mask, response, torch.ones_like(response), temperature=0.9)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
