"""GroupRolloutBuffer and RolloutSamples: storage, defaults, minibatches, micro-batches, take/concat, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.common.buffers import GroupRolloutBuffer, RolloutSamples, micro_batch_weight, micro_batches


def rollout(n: int = 4, t: int = 3, lengths=(3, 1, 2, 3)) -> RolloutSamples:
    mask = (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).long()  # (N, T)
    return RolloutSamples(
        prompt_ids=torch.arange(n * 2).reshape(n, 2), prompt_mask=torch.ones(n, 2, dtype=torch.long),
        response_ids=torch.arange(n * t).reshape(n, t), response_mask=mask,
        rewards=torch.tensor([1.0, 0.0, 0.5, 2.0])[:n], group_ids=torch.tensor([0, 0, 1, 1])[:n],
        infos=[{"row": i} for i in range(n)],
    )


def test_add_puts_the_outcome_on_the_last_real_token_and_zero_fills():
    buffer = GroupRolloutBuffer()
    buffer.add(rollout())
    s = buffer.samples
    assert s.token_rewards.tolist() == [[0, 0, 1.0], [0.0, 0, 0], [0, 0.5, 0], [0, 0, 2.0]]
    assert s.response_mask.dtype == torch.float32 and s.advantages.abs().sum() == 0 and s.returns.abs().sum() == 0
    assert s.old_log_probs is None and s.ref_log_probs is None and s.values is None and s.step_mask is None
    assert [i["row"] for i in s.infos] == [0, 1, 2, 3] and len(buffer) == 4


def test_add_keeps_given_token_rewards_and_default_group_ids():
    given = torch.tensor([[0.1, 0.2, 0.3]] * 4)
    buffer = GroupRolloutBuffer()
    buffer.add(rollout()._replace(token_rewards=given, group_ids=None))
    assert torch.equal(buffer.samples.token_rewards, given) and buffer.samples.group_ids.tolist() == [0, 1, 2, 3]


def test_add_errors_name_the_field():
    buffer = GroupRolloutBuffer()
    with pytest.raises(ValueError, match="rewards has 3 rows, expected 4"):
        buffer.add(rollout()._replace(rewards=torch.zeros(3)))
    with pytest.raises(ValueError, match="infos has 2 rows"):
        buffer.add(rollout()._replace(infos=[{}, {}]))
    with pytest.raises(ValueError, match="Empty rollout"):
        buffer.add(rollout().index(slice(0, 0)))
    with pytest.raises(RuntimeError, match="empty"):
        next(GroupRolloutBuffer().get())


def test_get_yields_every_row_once_per_epoch_in_shuffled_minibatches():
    buffer = GroupRolloutBuffer()
    buffer.add(rollout())
    batches = list(buffer.get(3, generator=torch.Generator().manual_seed(0)))
    assert [b.n_sequences for b in batches] == [3, 1]
    rows = [i["row"] for b in batches for i in b.infos]
    assert sorted(rows) == [0, 1, 2, 3] and rows != [0, 1, 2, 3]  # shuffled with this seed
    for b in batches:  # every field is indexed by the same rows
        for k, info in enumerate(b.infos):
            assert b.rewards[k] == rollout().rewards[info["row"]]
            assert torch.equal(b.response_ids[k], rollout().response_ids[info["row"]])
    whole = list(buffer.get(None, shuffle=False))
    assert len(whole) == 1 and [i["row"] for i in whole[0].infos] == [0, 1, 2, 3]


def test_update_micro_batches_take_and_concat():
    buffer = GroupRolloutBuffer()
    buffer.add(rollout())
    buffer.update(advantages=torch.ones(4, 3))
    assert buffer.samples.advantages.sum() == 12
    parts = list(micro_batches(buffer.samples, 3))
    assert [p.n_sequences for p in parts] == [3, 1] and parts[1].infos == [{"row": 3}]
    taken = buffer.samples.take(np.array([3, 1, 7]))  # out-of-range 7 is ignored
    assert [i["row"] for i in taken.infos] == [3, 1] and taken.rewards.tolist() == [2.0, 0.0]
    both = RolloutSamples.concat([taken, parts[1]])
    assert [i["row"] for i in both.infos] == [3, 1, 3] and both.old_log_probs is None
    assert both.advantages.shape == (3, 3)


def test_micro_batch_weights_sum_to_one():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]])
    for mode in ("token-mean", "seq-mean-token-mean"):
        weights = [micro_batch_weight(mask[i:i + 3], mask, mode) for i in (0, 3)]
        assert sum(weights) == pytest.approx(1.0)
    assert micro_batch_weight(mask[:3], mask, "token-mean") == pytest.approx(6 / 9)
