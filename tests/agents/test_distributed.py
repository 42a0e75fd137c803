"""Data-parallel training on torch.distributed: two CPU processes (gloo) with the tiny model, started by torchrun.

The workers are ``tests/agents/ddp_worker.py``. Checked: the weights end bit-identical on both ranks; on a
fixed batch the 2-process update equals the single-process update on the union of the ranks' rows (GRPO's
per-sequence mean, DAPO's token mean with batch-std scaling, PPO's critic with whitened GAE advantages); the
logged metrics and counters are global; each rank samples its own prompts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import peft
import pytest
import torch

from agents.common.buffers import micro_batch_weight
from agents.common.distributed import (
    all_gather_rows,
    all_reduce_sum,
    any_rank,
    mean_over_ranks,
    rank,
    world_size,
)

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from ddp_worker import build, fixed_batch, fixed_kwargs, train_on  # noqa: E402

FIXED = ("grpo", "dapo", "ppo")
LEARN = ("grpo", "dapo", "ppo")


@pytest.fixture(scope="module")
def ddp_results(tiny_model_dir, tmp_path_factory):
    """Run every job in one 2-process torchrun launch; ``{(mode, algo): (rank0, rank1)}``."""
    jobs = [f"fixed:{a}" for a in FIXED] + [f"learn:{a}" for a in LEARN]
    return launch_workers(tiny_model_dir, tmp_path_factory.mktemp("ddp"), jobs)


def launch_workers(model_dir, out: Path, jobs) -> dict:
    """Run ``jobs`` (``MODE:ALGO``) in one 2-process torchrun launch of ddp_worker.py; ``{(mode, algo): (rank0,
    rank1)}``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "ddp_worker.py"), str(model_dir), str(out), *jobs]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {tuple(job.split(":")): tuple(torch.load(out / f"{job.replace(':', '_')}_rank{r}.pt") for r in (0, 1))
            for job in jobs}


def single_process_update(algo: str, model_dir) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The initial parameters and the flattened update of one single-process ``train()`` on the whole fixed batch
    (both ranks' rows)."""
    model = build(algo, str(model_dir), **fixed_kwargs(algo))
    initial = [p.detach().clone() for p in model.policy.parameters()]
    batch = fixed_batch(2 * model.rollout_size, model.config.group_size, model.lm.vocab_size)
    model.config = model.config.replace(n_prompts=2 * model.config.n_prompts)  # one process holds both ranks' rows
    train_on(model, batch)
    delta = torch.cat([(p.detach() - i).flatten() for p, i in zip(model.policy.parameters(), initial, strict=True)])
    return initial, delta


@pytest.mark.parametrize("algo", LEARN)
def test_weights_end_bit_identical_on_both_ranks(ddp_results, algo):
    r0, r1 = ddp_results["learn", algo]
    assert r0["n_updates"] >= 2
    for a, b in zip(r0["params"], r1["params"], strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("algo", FIXED)
def test_two_process_update_equals_single_process_update_on_the_union(ddp_results, tiny_model_dir, algo):
    initial, single = single_process_update(algo, tiny_model_dir)
    r0, r1 = ddp_results["fixed", algo]
    ddp = torch.cat([(p - i).flatten() for p, i in zip(r0["params"], initial, strict=True)])
    assert single.norm() > 1e-4  # a real update
    torch.testing.assert_close(ddp, single, rtol=1e-5, atol=1e-7)
    assert all(torch.equal(a, b) for a, b in zip(r0["params"], r1["params"], strict=True))


def test_metrics_and_counters_are_global_and_prompts_differ(ddp_results):
    r0, r1 = ddp_results["learn", "grpo"]
    # Two iterations of 2 x 4 responses on each of 2 ranks: 32 env steps in all, counted on every rank.
    assert r0["num_timesteps"] == r1["num_timesteps"] == 2 * 2 * 8
    untimed = [{k: v for k, v in r["rollout_stats"].items() if not k.startswith("time/")} for r in (r0, r1)]
    assert untimed[0] == untimed[1] and r0["train_stats"] == r1["train_stats"]  # wall times are each rank's
    mean_length = torch.cat([r0["response_length"], r1["response_length"]]).mean()
    assert r0["rollout_stats"]["rollout/response_length"] == pytest.approx(float(mean_length))
    assert r0["generated_tokens"] == r1["generated_tokens"]
    assert not torch.equal(r0["prompt_ids"], r1["prompt_ids"])  # each rank draws its own problems


def test_dynamic_sampling_counts_groups_over_ranks(ddp_results):
    r0, r1 = ddp_results["learn", "dapo"]
    stats = r0["rollout_stats"]
    # Every generated sequence of every rank is counted; both ranks train on as many rows.
    assert stats["rollout/generated_sequences"] % (2 * 8) == 0
    assert r0["response_length"].shape == r1["response_length"].shape


def test_single_process_helpers_are_the_identity():
    assert (world_size(), rank(), all_reduce_sum(2.5), any_rank(True), any_rank(False)) == (1, 0, 2.5, True, False)
    assert mean_over_ranks({"a": 1.0}) == {"a": 1.0}
    batch = fixed_batch(4, 2, 50)
    assert all_gather_rows(batch) is batch


def test_shutdown_destroys_the_process_group(tmp_path):
    """shutdown_distributed ends the job's process group (a no-op without one), so no rank exits with gloo's
    threads still running."""
    import torch.distributed as dist

    from agents.common.distributed import shutdown_distributed

    shutdown_distributed()  # no group: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    shutdown_distributed()
    assert not dist.is_initialized()


def test_micro_batch_weight_uses_the_total_over_ranks():
    micro = torch.tensor([[1, 1, 0], [1, 0, 0]])  # 3 tokens, 2 rows
    local = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])  # 6 tokens, 3 rows
    assert micro_batch_weight(micro, local, "token-mean") == pytest.approx(3 / 6)
    # Two ranks, 10 tokens over both: DDP averages, so the weight is 3 / 10 * 2.
    assert micro_batch_weight(micro, local, "token-mean", world_size=2, minibatch_total=10) == pytest.approx(0.6)
    assert micro_batch_weight(micro, local, "seq-mean-token-mean", world_size=2, minibatch_total=6) == pytest.approx(
        2 / 6 * 2)


FSDP_JOBS = ("fixed_fsdp:grpo", "fixed_fsdp:ppo", "learn_fsdp:grpo", "learn_fsdp_lora:grpo")


@pytest.fixture(scope="module")
def fsdp_results(tiny_model_dir, tmp_path_factory):
    """The FSDP jobs in one 2-process torchrun launch; ``(out_dir, {(mode, algo): (rank0, rank1)})``."""
    out = tmp_path_factory.mktemp("fsdp")
    return out, launch_workers(tiny_model_dir, out, FSDP_JOBS)


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_fsdp_update_equals_single_process_update_on_the_union(fsdp_results, tiny_model_dir, algo):
    initial, single = single_process_update(algo, tiny_model_dir)
    r0, r1 = fsdp_results[1]["fixed_fsdp", algo]
    fsdp = torch.cat([(p - i).flatten() for p, i in zip(r0["params"], initial, strict=True)])
    assert single.norm() > 1e-4
    torch.testing.assert_close(fsdp, single, rtol=1e-5, atol=1e-7)
    assert r1["params"] == []  # gathered to rank 0 only


@pytest.mark.parametrize("mode", ["learn_fsdp", "learn_fsdp_lora"])
def test_fsdp_shards_parameters_and_its_checkpoint_loads_in_one_process(fsdp_results, tiny_model_dir, mode):
    from agents import GRPO
    from llm_gym.envs.sequence import SequenceEnv

    out, results = fsdp_results
    r0, r1 = results[mode, "grpo"]
    assert r0["n_updates"] >= 2
    # Each rank holds about half of every parameter (FSDP shards dim 0), together exactly all of them.
    assert r0["local_numel"] + r1["local_numel"] == r0["total_numel"]
    assert max(r0["local_numel"], r1["local_numel"]) < 0.55 * r0["total_numel"]
    assert r0["resumed_sharded"]  # loaded back under FSDP: the same full weights
    assert all(torch.equal(a, b) for a, b in zip(r0["params"], r0["resumed_params"], strict=True))
    env = SequenceEnv(model=str(tiny_model_dir), max_new_tokens=8, n_problems=40, device="cpu",
                      max_prompt_length=96)
    loaded = GRPO.load(out / f"{mode}_grpo.zip", env=env, device="cpu")
    assert loaded._n_updates == r0["n_updates"]
    for a, b in zip(loaded.policy.parameters(), r0["params"], strict=True):
        torch.testing.assert_close(a.detach(), b, rtol=0, atol=0)
    # Rank 0's initial weights (FSDP broadcasts them; rank 1 drew another LoRA init) moved; with LoRA only
    # the adapters did.
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]) if mode == "learn_fsdp_lora" else None
    fresh = build("grpo", str(tiny_model_dir), peft_config=lora).policy
    for a, b in zip(r0["initial_params"], fresh.parameters(), strict=True):  # rank 0's initialisation
        assert torch.equal(a, b.detach())
    initial = fresh.model.state_dict()
    current = loaded.policy.model.state_dict()
    assert current.keys() == initial.keys()
    moved = [k for k, v in current.items() if not torch.equal(v, initial[k])]
    assert moved
    if mode == "learn_fsdp_lora":
        from transformers import AutoModelForCausalLM

        assert all("lora" in k for k in moved)  # only the adapters trained
        merged = AutoModelForCausalLM.from_pretrained(out / f"{mode}_grpo_hf")
        ids = torch.randint(3, 50, (2, 7))
        torch.testing.assert_close(merged(input_ids=ids).logits, loaded.policy.model(input_ids=ids).logits,
                                   rtol=1e-4, atol=1e-4)
