"""Precision and memory: mixed precision (autocast), gradient checkpointing and LoRA adapters (peft).

Mixed precision follows accelerate's recipe (``Accelerator(mixed_precision=...)``): the master weights and
the optimizer state stay float32; only the transformer's forward runs under ``torch.autocast``, so matmuls
run in bf16/fp16 while the log-probs, the ratio, the KL and the losses (computed from the float32-cast
logits outside the forward) stay float32. fp16 also scales the loss (``torch.amp.GradScaler``) so small
gradients do not underflow. The forward is wrapped on the model itself, so ``generate`` (rollouts), the
training forward, the reference model and the critic's trunk all run in the same precision.

Gradient checkpointing is transformers' (``model.gradient_checkpointing_enable``, non-reentrant). Its
layers only checkpoint in training mode, and llm-gym keeps models in eval mode (no dropout: the ratio must be
exactly 1 on-policy), so :func:`checkpointing` switches only the decoder layers (not their dropout children)
to training mode, and only for forwards with grad; sampling keeps the KV cache.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["MIXED_PRECISION", "autocast_dtype", "autocast_region", "base_transformer", "checkpointing", "enable_gradient_checkpointing",
           "enable_mixed_precision", "lora_from_dict", "lora_to_dict", "make_grad_scaler", "wrap_lora"]

#: Valid ``mixed_precision`` values (accelerate's names): full float32, bfloat16 or float16 autocast.
MIXED_PRECISION: tuple[str, ...] = ("no", "bf16", "fp16")


def autocast_dtype(mixed_precision: str) -> torch.dtype | None:
    """The autocast dtype of a ``mixed_precision`` mode (None for ``"no"``).

    Raises:
        ValueError: not one of :data:`MIXED_PRECISION`.
    """
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {mixed_precision!r}")
    return {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]


def base_transformer(model: torch.nn.Module) -> torch.nn.Module:
    """The bare transformer (``LlamaModel``, ``GPT2Model``...) of a causal LM, a peft model or a bare trunk."""
    if hasattr(model, "get_base_model"):  # a peft model: the HF model with the adapters injected
        model = model.get_base_model()
    return getattr(model, "base_model", model)


def enable_mixed_precision(model: torch.nn.Module, mixed_precision: str) -> torch.nn.Module:
    """Run ``model``'s forward (and its transformer trunk's) under ``torch.autocast``; weights stay as they are.

    Both the causal LM's forward (so the LM head's matmul is in low precision too) and the trunk's (used alone
    by a critic) are wrapped; nested autocast regions are no-ops. Idempotent per mode. The logits come out in
    the autocast dtype; every consumer in llm-gym casts them to float32 before a softmax.

    Args:
        model: a Hugging Face causal LM, or a peft model around one.
        mixed_precision: ``"no"`` (returns the model unchanged), ``"bf16"`` or ``"fp16"``.

    Returns:
        The same module.

    Raises:
        ValueError: an unknown mode.
    """
    dtype = autocast_dtype(mixed_precision)
    if dtype is None:
        return model
    hf_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    for module in {id(m): m for m in (hf_model, base_transformer(hf_model))}.values():
        if getattr(module, "_llm_gym_autocast", None) is None:
            module._llm_gym_forward = module.forward  # a bound method: deepcopy rebinds it to the copy
            module.forward = types.MethodType(_autocast_forward(type(module).forward), module)
        module._llm_gym_autocast = dtype
    return model


def _autocast_forward(class_forward):
    """A forward that runs the module's original forward under autocast; it keeps the class forward's signature
    (transformers inspects it, e.g. for ``logits_to_keep``)."""

    @functools.wraps(class_forward)
    def forward(self, *args, **kwargs):
        device_type = next(self.parameters()).device.type  # read per call: the module may have moved
        with torch.autocast(device_type, dtype=self._llm_gym_autocast):
            return self._llm_gym_forward(*args, **kwargs)

    return forward


def autocast_region(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """An autocast region matching ``model``'s mixed precision (a no-op context for float32 models).

    Open it around a loop of forwards (a sampling loop): autocast caches the low-precision copy of each
    trainable float32 weight until the outermost region exits, so the weights are cast once per loop instead
    of once per decode step. The forwards' own (nested) regions then add nothing.
    """
    hf_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    dtype = getattr(hf_model, "_llm_gym_autocast", None)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=dtype)


def make_grad_scaler(mixed_precision: str, device: torch.device | str) -> torch.amp.GradScaler:
    """A ``torch.amp.GradScaler``, enabled only for fp16 (bf16 has float32's exponent range and needs none)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=mixed_precision == "fp16")


def enable_gradient_checkpointing(model: torch.nn.Module) -> torch.nn.Module:
    """transformers' gradient checkpointing, non-reentrant (works with frozen weights and LoRA).

    Activations of each decoder layer are recomputed in the backward pass instead of stored: less memory for
    about one more forward of compute. Active only inside :func:`checkpointing`.

    Raises:
        ValueError: the model does not support gradient checkpointing (transformers' message).
    """
    hf_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _checkpointed_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True
            and hasattr(m, "_gradient_checkpointing_func")]


@contextlib.contextmanager
def checkpointing(model: torch.nn.Module) -> Iterator[None]:
    """Inside: the checkpointed decoder layers are in training mode when grad is enabled (their children,
    dropout included, stay in eval mode). Outside, or without grad, the model is untouched (the KV cache works).
    """
    layers = _checkpointed_layers(model) if torch.is_grad_enabled() else []
    for layer in layers:
        layer.training = True
    try:
        yield
    finally:
        for layer in layers:
            layer.training = False


def wrap_lora(model: torch.nn.Module, peft_config: Any) -> torch.nn.Module:
    """``peft.get_peft_model``: inject the adapters; only their parameters keep ``requires_grad``.

    Args:
        model: a Hugging Face causal LM.
        peft_config: a ``peft.LoraConfig`` (or any peft config); ``task_type`` defaults to ``"CAUSAL_LM"``.

    Raises:
        ImportError: peft is not installed (the message has the fix).
        TypeError: ``peft_config`` is not a peft config.
    """
    try:
        import peft
    except ImportError as exc:  # pragma: no cover - peft is a dependency
        raise ImportError("peft_config needs peft: pip install 'peft>=0.13'") from exc
    if not isinstance(peft_config, peft.PeftConfig):
        raise TypeError(f"peft_config must be a peft config such as peft.LoraConfig(r=16), got "
                        f"{type(peft_config).__name__}")
    if peft_config.task_type is None:
        peft_config.task_type = "CAUSAL_LM"
    return peft.get_peft_model(model, peft_config).eval()


def lora_to_dict(peft_config: Any) -> dict[str, Any] | None:
    """A peft config as plain JSON data (sets become sorted lists), for the checkpoint; None stays None."""
    if peft_config is None:
        return None
    out = {}
    for key, value in peft_config.to_dict().items():
        out[key] = sorted(value) if isinstance(value, set) else value
    return out


def lora_from_dict(data: dict[str, Any] | None) -> Any:
    """The inverse of :func:`lora_to_dict` (``peft.get_peft_config``)."""
    if data is None:
        return None
    import peft

    return peft.get_peft_config(dict(data))
