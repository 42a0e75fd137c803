"""One rank of the data-parallel tests (tests/agents/test_distributed.py), started by torchrun.

Usage: ``torchrun --standalone --nproc_per_node 2 ddp_worker.py MODEL_DIR OUT_DIR JOB [JOB ...]``, each job
``MODE:ALGO`` (one launch runs them all, so the process start is paid once):

* ``learn:ALGO``: ``ALGO.learn`` for two iterations on the tiny model; writes ``learn_ALGO_rank{r}.pt`` with
  the final weights, the counters, the logged metrics and this rank's own rows.
* ``fixed:ALGO``: one ``train()`` on this rank's half of a fixed batch (:func:`fixed_batch`); writes
  ``fixed_ALGO_rank{r}.pt`` with the weights. The test compares them with one single-process ``train()`` on
  the whole batch (:func:`fixed_kwargs` and :func:`train_on`, as here).
* ``fixed_fsdp:ALGO``, ``learn_fsdp:ALGO``, ``learn_fsdp_lora:ALGO``: the same with ``fsdp=True``
  (:func:`run_fsdp_job`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

torch.set_num_threads(1)


def fixed_batch(n: int, group_size: int, vocab: int, prompt_len: int = 6, response_len: int = 5, seed: int = 0):
    """A deterministic batch of ``n`` sequences (groups of ``group_size`` share a prompt) with 0/1 rewards."""
    from agents.common.buffers import RolloutSamples

    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(3, vocab, (n // group_size, prompt_len), generator=g).repeat_interleave(group_size, 0)
    prompt_mask = torch.ones_like(prompts)
    prompt_mask[::3, :2] = 0  # some left padding
    response = torch.randint(3, vocab, (n, response_len), generator=g)
    lengths = torch.randint(1, response_len + 1, (n,), generator=g)
    response_mask = (torch.arange(response_len)[None, :] < lengths[:, None]).long()
    rewards = torch.randint(0, 2, (n,), generator=g).float()
    group_ids = torch.arange(n // group_size).repeat_interleave(group_size)
    return RolloutSamples(prompts, prompt_mask, response, response_mask, rewards, group_ids=group_ids,
                          infos=[{} for _ in range(n)])


def parity_reward(prompts, responses, answers, **fields):
    """1 for a response of even character length, else 0: mixed groups on the random tiny model."""
    return [float(len(r) % 2 == 0) for r in responses]


def build(algo: str, model_dir: str, **kwargs):
    """The algorithm on the tiny model with the test's sizes (SGD for ``fixed``, so updates are linear)."""
    from agents import ALGORITHMS
    from llm_gym.envs.sequence import SequenceEnv

    env = SequenceEnv(model=model_dir, max_new_tokens=8, n_problems=40, device="cpu", max_prompt_length=96,
                      reward_fn=parity_reward)
    policy = "LLMActorCriticPolicy" if algo == "ppo" else "LLMPolicy"
    sizes = {"n_prompts": 4, "group_size": 1} if algo == "ppo" else {"n_prompts": 2, "group_size": 4}
    return ALGORITHMS[algo](policy, env, **sizes, micro_batch_size=2, seed=0, device="cpu",
                            learning_rate=1e-2, **kwargs)


def train_on(model, samples) -> None:
    """One ``train()`` on ``samples`` (old/ref log-probs and values computed as after a rollout)."""
    from stable_baselines3.common.logger import configure

    model.set_logger(configure(None, [""]))
    model._rollout_stats = {}
    model.rollout_buffer.add(samples)
    model._prepare_rollout(model.rollout_buffer)
    model.train()


def fixed_kwargs(algo: str) -> dict:
    """The ``fixed`` job's settings: SGD (updates linear in the gradient) and no clipping (it would hide a
    wrongly scaled gradient); DAPO without dynamic sampling and with batch-std scaling (a global statistic)."""
    kwargs = {"policy_kwargs": {"optimizer_class": torch.optim.SGD}, "max_grad_norm": 1e6}
    if algo == "dapo":
        kwargs |= {"dynamic_sampling": False, "scale_rewards": "batch"}
    return kwargs


def full_params(model) -> list[torch.Tensor]:
    """The policy's parameters as full tensors, in ``named_parameters`` order (gathered to rank 0 under FSDP:
    the other ranks get an empty list)."""
    from agents.common.fsdp import full_state, is_sharded

    if not is_sharded(model.policy):
        return [p.detach().clone() for p in model.policy.parameters()]
    state, _ = full_state(model.policy, model.policy.optimizer)
    return [state[name] for name, _ in model.policy.named_parameters()] if state else []


def run_fsdp_job(mode: str, algo: str, model_dir: str, out: Path) -> dict:
    """``fixed_fsdp``, ``learn_fsdp`` and ``learn_fsdp_lora``: the FSDP counterparts of the jobs above. The
    ``learn`` jobs also save a checkpoint (every rank takes part; rank 0 writes) and record each rank's shard
    sizes, and the LoRA job exports the merged model."""
    import peft

    from agents.common.distributed import rank, world_size
    from agents.common.fsdp import is_sharded

    if mode == "fixed_fsdp":
        model = build(algo, model_dir, fsdp=True, **fixed_kwargs(algo))
        batch = fixed_batch(2 * model.rollout_size, model.config.group_size, model.lm.vocab_size)
        n = model.rollout_size
        train_on(model, batch.take(torch.arange(rank() * n, (rank() + 1) * n).numpy()))
        return {"params": full_params(model)}
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]) if mode == "learn_fsdp_lora" else None
    model = build(algo, model_dir, fsdp=True, peft_config=lora, beta=0.04)
    initial = full_params(model)
    model.learn(2 * model.rollout_size * world_size())
    model.save(out / f"{mode}_{algo}.zip")
    torch.distributed.barrier()  # rank 0 has written it
    resumed = type(model).load(out / f"{mode}_{algo}.zip", env=model.env, device="cpu")  # sharded again
    local = sum(p.to_local().numel() for p in model.policy.parameters())
    if lora is not None:  # every rank calls it; rank 0 writes
        model.policy.save_pretrained(out / f"{mode}_{algo}_hf", merged=True)
    return {"params": full_params(model), "initial_params": initial, "resumed_params": full_params(resumed),
            "resumed_sharded": is_sharded(resumed.policy), "local_numel": local, "n_updates": model._n_updates,
            "total_numel": sum(p.numel() for p in model.policy.parameters())}


def run_job(mode: str, algo: str, model_dir: str, out: Path) -> None:
    """One job (module docstring); writes its file for this rank."""
    from agents.common.distributed import rank, world_size

    if "fsdp" in mode:
        result = run_fsdp_job(mode, algo, model_dir, out)
    elif mode == "learn":
        model = build(algo, model_dir)
        model.learn(2 * model.rollout_size * world_size())
        s = model.rollout_buffer.samples
        result = {"params": [p.detach().clone() for p in model.policy.parameters()],
                  "num_timesteps": model.num_timesteps, "n_updates": model._n_updates,
                  "rollout_stats": model._rollout_stats, "train_stats": model._train_stats,
                  "response_length": s.response_mask.sum(-1).float(), "prompt_ids": s.prompt_ids,
                  "generated_tokens": model.generated_tokens}
    else:
        model = build(algo, model_dir, **fixed_kwargs(algo))
        batch = fixed_batch(2 * model.rollout_size, model.config.group_size, model.lm.vocab_size)
        n = model.rollout_size
        train_on(model, batch.take(torch.arange(rank() * n, (rank() + 1) * n).numpy()))
        result = {"params": [p.detach().clone() for p in model.policy.parameters()]}
    torch.save(result, out / f"{mode}_{algo}_rank{rank()}.pt")


def main(model_dir: str, out_dir: str, *jobs: str) -> None:
    """Run every ``MODE:ALGO`` job in order."""
    for job in jobs:
        mode, algo = job.split(":")
        run_job(mode, algo, model_dir, Path(out_dir))


if __name__ == "__main__":
    main(*sys.argv[1:])
