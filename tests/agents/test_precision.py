"""Mixed precision, gradient checkpointing and LoRA (peft) on the tiny model.

Checked: a bf16 / fp16 update stays within tolerance of the fp32 update (and is not the fp32 update: autocast
really ran); weights, optimizer state and log-probs stay float32; checkpointing gives the same gradient while
recomputing each layer; LoRA trains the adapters only (the base weights never move), the reference is the
base model with the adapters disabled (no second copy), PPO's value head trains, save/load round-trips
exactly, and ``save_pretrained`` exports the adapter or the merged model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import peft
import pytest
import torch

from agents import GRPO, PPO
from agents.common.precision import autocast_dtype, checkpointing

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import fixed_batch, train_on  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def make_grpo(make_env, **kwargs):
    params = {"n_prompts": 2, "group_size": 4, "micro_batch_size": 4, "seed": 0, "device": "cpu",
              "learning_rate": 1e-2, "policy_kwargs": {"optimizer_class": torch.optim.SGD}, "max_grad_norm": 1e6}
    return GRPO("LLMPolicy", make_env(max_new_tokens=8), **(params | kwargs))


def update(model, batch) -> torch.Tensor:
    """The flat weight change of one ``train()`` on ``batch``."""
    before = torch.cat([p.detach().flatten().clone() for p in model.policy.parameters()])
    train_on(model, batch)
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()]) - before


@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_low_precision_update_is_close_to_the_fp32_update(make_env, mode):
    reference = make_grpo(make_env)
    batch = fixed_batch(8, 4, reference.lm.vocab_size)
    full = update(reference, batch)
    low = update(make_grpo(make_env, mixed_precision=mode), batch)
    assert full.norm() > 1e-3
    relative = float((low - full).norm() / full.norm())
    cosine = float(torch.nn.functional.cosine_similarity(low, full, dim=0))
    assert 0 < relative < 0.05 and cosine > 0.998  # close, but not equal: the forward really ran in low precision


def test_weights_optimizer_state_and_log_probs_stay_float32(make_env):
    model = make_grpo(make_env, mixed_precision="bf16", policy_kwargs={})  # AdamW
    model.learn(8)
    assert {p.dtype for p in model.policy.parameters()} == {torch.float32}
    states = [s for s in model.policy.optimizer.state.values() if s]
    assert states and {s["exp_avg"].dtype for s in states} == {torch.float32}
    batch = fixed_batch(4, 2, model.lm.vocab_size)
    log_probs, entropy, _ = model.policy.evaluate_actions(batch)
    assert log_probs.dtype == torch.float32 and entropy.dtype == torch.float32
    out = model.policy.model(input_ids=batch.response_ids)  # the forward itself runs under autocast
    assert out.logits.dtype == torch.bfloat16
    ref = model.ref_policy.model(input_ids=batch.response_ids)
    assert ref.logits.dtype == torch.bfloat16


def test_fp16_checkpoint_keeps_the_loss_scale(make_env, tmp_path):
    model = make_grpo(make_env, mixed_precision="fp16", policy_kwargs={})
    assert model._scaler.is_enabled()
    model.learn(8)
    model.save(tmp_path / "m.zip")
    loaded = GRPO.load(tmp_path / "m.zip", env=make_env(max_new_tokens=8))
    assert loaded._scaler.get_scale() == model._scaler.get_scale()
    assert not make_grpo(make_env, mixed_precision="bf16")._scaler.is_enabled()


def test_invalid_mixed_precision_names_the_field(make_env):
    with pytest.raises(ValueError, match="mixed_precision"):
        make_grpo(make_env, mixed_precision="fp8")
    assert autocast_dtype("no") is None and autocast_dtype("bf16") is torch.bfloat16


def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_gradient(make_env):
    batch = fixed_batch(4, 2, 64)
    grads, calls = [], []
    for enabled in (False, True):
        model = make_grpo(make_env, gradient_checkpointing=enabled)
        layer = model.policy.model.transformer.h[0]
        count = []
        layer.register_forward_pre_hook(lambda *_, c=count: c.append(1))  # (a recomputation may stop early)
        log_probs, _, _ = model.policy.evaluate_actions(batch)
        (log_probs * batch.response_mask).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.policy.parameters()]))
        calls.append(len(count))
        assert not layer.training  # back in eval mode after the forward (sampling keeps its KV cache)
    assert calls == [1, 2]  # checkpointing runs the layer again in the backward pass
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)


def test_checkpointing_context_leaves_no_grad_forwards_alone(make_env):
    model = make_grpo(make_env, gradient_checkpointing=True)
    layer = model.policy.model.transformer.h[0]
    with torch.no_grad(), checkpointing(model.policy):
        assert not layer.training
    with checkpointing(model.policy):
        assert layer.training


def lora(**kwargs):
    return peft.LoraConfig(r=4, lora_alpha=8, **kwargs)


def test_lora_trains_only_the_adapters(make_env):
    model = make_grpo(make_env, peft_config=lora(), policy_kwargs={})
    named = dict(model.policy.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    in_optimizer = {id(p) for g in model.policy.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(named[n]) for n in trainable}
    before = {n: p.detach().clone() for n, p in named.items()}
    batch = fixed_batch(8, 4, model.lm.vocab_size)
    train_on(model, batch)
    changed = {n for n, p in named.items() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable  # base weights never move


def test_lora_reference_is_the_base_model_with_adapters_disabled(make_env):
    model = make_grpo(make_env, peft_config=lora(init_lora_weights=False))  # adapters start non-zero
    assert model.ref_policy.model is None  # no second copy of the weights
    batch = fixed_batch(4, 2, model.lm.vocab_size)
    base = model.lm.load_model()
    expected = model.lm.log_probs(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask,
                                  model=base)[0]
    ref = model.ref_policy.log_probs(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
    torch.testing.assert_close(ref, expected)
    policy = model.policy.log_probs(batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)[0]
    assert not torch.allclose(policy, expected)  # the adapters are back on after the reference forward


def test_lora_ppo_value_head_is_trained(make_env):
    model = PPO("LLMActorCriticPolicy", make_env(max_new_tokens=8), n_prompts=4, group_size=1, seed=0, device="cpu",
                peft_config=lora(), learning_rate=1e-2)
    head = model.policy.value_head.weight.detach().clone()
    in_optimizer = {id(p) for g in model.policy.optimizer.param_groups for p in g["params"]}
    assert id(model.policy.value_head.weight) in in_optimizer
    model.learn(8)
    assert not torch.equal(model.policy.value_head.weight, head)


def test_lora_save_load_round_trips_exactly(make_env, tmp_path):
    model = make_grpo(make_env, peft_config=lora(), policy_kwargs={})
    model.learn(8)
    model.save(tmp_path / "m.zip")
    loaded = GRPO.load(tmp_path / "m.zip", env=make_env(max_new_tokens=8))
    assert isinstance(loaded.policy.model, peft.PeftModel) and loaded.peft_config.r == 4
    for (name, a), b in zip(model.policy.state_dict().items(), loaded.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    saved, restored = model.policy.optimizer.state_dict(), loaded.policy.optimizer.state_dict()
    assert saved["state"].keys() == restored["state"].keys()
    for k in saved["state"]:
        assert torch.equal(saved["state"][k]["exp_avg"], restored["state"][k]["exp_avg"])
    # Both continue identically from the same global RNG state (load restored the saved one; they share it).
    from agents.common.checkpoint import capture_rng, restore_rng

    rng = capture_rng()
    model.learn(8, reset_num_timesteps=False)
    restore_rng(rng)
    loaded.learn(8, reset_num_timesteps=False)
    for a, b in zip(model.policy.parameters(), loaded.policy.parameters(), strict=True):
        assert torch.equal(a, b)


def test_save_pretrained_exports_the_adapter_or_the_merged_model(make_env, tmp_path):
    from transformers import AutoModelForCausalLM

    model = make_grpo(make_env, peft_config=lora(init_lora_weights=False))
    adapter = model.policy.save_pretrained(tmp_path / "adapter")
    merged = model.policy.save_pretrained(tmp_path / "merged", merged=True)
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    assert not (adapter / "model.safetensors").exists()
    assert (merged / "model.safetensors").exists() and not (merged / "adapter_config.json").exists()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = model.policy.model(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(merged).eval()(input_ids=ids).logits
        reloaded = peft.PeftModel.from_pretrained(model.lm.load_model(), adapter).eval()(input_ids=ids).logits
    torch.testing.assert_close(plain, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(reloaded, expected)
    assert isinstance(model.policy.model, peft.PeftModel)  # the policy keeps its adapters


def test_peft_config_must_be_a_peft_config(make_env):
    with pytest.raises(TypeError, match="peft_config"):
        make_grpo(make_env, peft_config={"r": 4})
