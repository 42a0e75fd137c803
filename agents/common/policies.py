"""Policies: the language model as an SB3 policy (actor, or actor + value head) and the reference model."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy

from agents.common.fsdp import full_model_state, is_sharded
from agents.common.precision import (
    autocast_region,
    base_transformer,
    checkpointing,
    enable_gradient_checkpointing,
    enable_mixed_precision,
    wrap_lora,
)
from llm_gym.decoding import decode_step, left_align, prefill, sample_responses, sample_tokens
from llm_gym.lm import LanguageModel, sequence_inputs, sequence_log_probs


class LLMPolicy(BasePolicy):
    """The actor: a causal LM that maps a prompt observation to a whole response (sequence level).

    It owns its own copy of the weights (``self.model``, loaded from the env's
    :class:`~llm_gym.lm.LanguageModel`), the optimizer (AdamW by default) and the sampling settings.

    Args:
        observation_space: the env's ``Dict(input_ids=Box(L,), attention_mask=Box(L,))``.
        action_space: ``Box(int64, (T,))``; ``T`` is the response budget ``max_new_tokens``.
        lr_schedule: SB3 learning-rate schedule (progress remaining -> learning rate).
        lm: the tokenizer/model handle (from the env).
        temperature: sampling temperature; also divides the logits when computing log-probs.
        top_p: nucleus sampling threshold (1.0 = off).
        optimizer_class: torch optimizer class (default AdamW).
        optimizer_kwargs: extra optimizer arguments.
        mixed_precision: ``"no"``, ``"bf16"`` or ``"fp16"``: autocast of the model's forward
            (:func:`~agents.common.precision.enable_mixed_precision`); the weights stay float32.
        gradient_checkpointing: transformers' gradient checkpointing in forwards with grad.
        peft_config: a ``peft.LoraConfig``: the model gets LoRA adapters and only they (and a value head) are
            trained and held by the optimizer; the base weights are frozen.

    Raises:
        TypeError: ``peft_config`` that is not a peft config.
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule,
        lm: LanguageModel,
        temperature: float = 1.0,
        top_p: float = 1.0,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.AdamW,
        optimizer_kwargs: dict | None = None,
        mixed_precision: str = "no",
        gradient_checkpointing: bool = False,
        peft_config=None,
    ):
        super().__init__(observation_space, action_space, optimizer_class=optimizer_class,
                         optimizer_kwargs=optimizer_kwargs or {})
        self.lm = lm
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.mixed_precision = mixed_precision
        self.peft_config = peft_config
        model = lm.load_model()
        if peft_config is not None:
            model = wrap_lora(model, peft_config)
        if gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.model = enable_mixed_precision(model, mixed_precision)
        self.optimizer = self.make_optimizer(lr_schedule)

    def make_optimizer(self, lr_schedule) -> torch.optim.Optimizer:
        """The optimizer over the trainable parameters only (with LoRA: the adapters and any value head)."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        return self.optimizer_class(trainable, lr=lr_schedule(1), **self.optimizer_kwargs)

    @property
    def is_peft(self) -> bool:
        """True when the model carries LoRA (peft) adapters."""
        return hasattr(self.model, "disable_adapter")

    @property
    def max_new_tokens(self) -> int:
        """Response budget ``T`` in tokens (the action space's length)."""
        return int(self.action_space.shape[0])

    def set_training_mode(self, mode: bool) -> None:
        """Keep the transformer in eval mode (no dropout: the ratio must be exactly 1 on-policy)."""
        self.training = mode

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, deterministic: bool = False):
        """Sample (or greedily decode) responses for ``(B, L)`` prompts; see :meth:`LanguageModel.generate`."""
        return self.lm.generate(input_ids, attention_mask, self.max_new_tokens, model=self.model,
                                temperature=self.temperature, top_p=self.top_p, do_sample=not deterministic)

    def sample_rollout(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, group_size: int = 1):
        """Sample one response per ``(B, L)`` prompt for a rollout: :class:`~llm_gym.decoding.GroupSampler` (each
        group's prompt prefilled once, finished rows leave the batch). Returns a :class:`~llm_gym.lm.Generation`
        with ``(B, T)`` ids."""
        with autocast_region(self.model):  # low-precision weights cast once for the whole loop
            ids = sample_responses(self.model, input_ids, attention_mask, self.max_new_tokens,
                                   self.lm.eos_token_id, self.lm.pad_token_id, group_size, self.temperature,
                                   self.top_p)
        return self.lm.as_generation(ids)

    def obs_to_tensor(self, observation: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], bool]:
        """Convert a prompt observation ``{"input_ids": (L,) or (B, L), "attention_mask": ...}`` to tensors.

        Unlike SB3's default, any prompt length ``L`` is accepted (an eval env may pad its prompts to
        another length than the training env); the policy only needs ids and mask to agree.

        Raises:
            ValueError: not a dict with ``input_ids`` and ``attention_mask`` of the same shape.
        """
        if not isinstance(observation, dict) or {"input_ids", "attention_mask"} - set(observation):
            raise ValueError("LLMPolicy expects observations {'input_ids': ..., 'attention_mask': ...}")
        ids, mask = np.asarray(observation["input_ids"]), np.asarray(observation["attention_mask"])
        if ids.shape != mask.shape or ids.ndim not in (1, 2):
            raise ValueError(f"input_ids {ids.shape} and attention_mask {mask.shape} must both be (L,) or (B, L)")
        vectorized = ids.ndim == 2
        tensors = {"input_ids": torch.as_tensor(ids.reshape(-1, ids.shape[-1]), device=self.device),
                   "attention_mask": torch.as_tensor(mask.reshape(-1, mask.shape[-1]), device=self.device)}
        return tensors, vectorized

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = False):
        """SB3's ``predict``. Sequence level: a whole response per observation. Token level: the next token,
        with the KV cache as the recurrent ``state`` (like SB3-contrib's recurrent policies carry LSTM state).

        At token level, pass back the returned ``state`` with the next observation. The cache is built from
        the observation (prompt + tokens so far) when ``state`` is None or any ``episode_start`` is True;
        otherwise only the previous action (the last token of the new observation) is run through the model.

        Returns:
            ``(actions, state)``: ``(B, T)`` response ids or ``(B,)`` token ids (unbatched for one
            observation), and the recurrent state (None at sequence level).
        """
        if not isinstance(self.action_space, spaces.Discrete):
            return super().predict(observation, state, episode_start, deterministic)
        obs, vectorized = self.obs_to_tensor(observation)
        ids, mask = obs["input_ids"], obs["attention_mask"]
        if state is None or episode_start is None or np.any(episode_start):
            state = prefill(self.model, *left_align(ids, mask))
        else:
            last = mask.shape[1] - 1 - torch.flip(mask, [1]).long().argmax(dim=1)  # (B,) previous action
            state = decode_step(self.model, state, ids[torch.arange(ids.shape[0]), last])
        tokens = sample_tokens(state.logits, self.temperature, self.top_p, do_sample=not deterministic)
        actions = tokens.cpu().numpy()
        return (actions if vectorized else actions[0]), state

    def _predict(self, observation: dict[str, torch.Tensor], deterministic: bool = False) -> torch.Tensor:
        """Return ``(B, T)`` response token ids for a batch of prompt observations."""
        return self.generate(observation["input_ids"], observation["attention_mask"], deterministic).response_ids

    def log_probs(self, prompt_ids, prompt_mask, response_ids, response_mask, return_entropy: bool = False):
        """Per-token log-probs ``(B, T)`` (nats, float32) of responses under the current weights (with grad)."""
        with checkpointing(self):
            return sequence_log_probs(self.model, prompt_ids, prompt_mask, response_ids, response_mask,
                                      temperature=self.temperature, return_entropy=return_entropy)

    def evaluate_actions(self, samples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """SB3's ``evaluate_actions`` for a batch of whole responses (one forward pass, with grad).

        Args:
            samples: a :class:`~agents.common.buffers.RolloutSamples` (prompt and response ids and masks).
                The model attends to ``samples.attention_mask``; with a multi-turn loss mask the outputs
                are zeroed (no gradient) outside ``response_mask``, on the env's tokens.

        Returns:
            ``log_probs (B, T)`` (nats, 0 on padding and env tokens), ``entropy (B, T)`` (nats, no grad) and
            ``values`` (None: this policy has no critic).
        """
        log_probs, entropy = self.log_probs(samples.prompt_ids, samples.prompt_mask, samples.response_ids,
                                            samples.attention_mask, return_entropy=True)
        return loss_masked(log_probs, samples), loss_masked(entropy, samples), None

    def forward(self, samples):
        """The training forward, :meth:`evaluate_actions` (what ``DistributedDataParallel`` calls)."""
        return self.evaluate_actions(samples)

    def save_pretrained(self, save_directory: str | os.PathLike, merged: bool = False) -> Path:
        """Export a Hugging Face folder (safetensors weights, config, tokenizer, chat template).

        Without LoRA: the full model. With LoRA: the adapter only (``adapter_config.json`` and
        ``adapter_model.safetensors``, loadable with ``peft.PeftModel.from_pretrained`` on the base model), or
        with ``merged=True`` a plain model with the adapters merged into the weights (built on a copy, so the
        policy keeps its adapters; the copy costs one model of memory). The folder is written beside the
        target and renamed into place, so an interrupted export never leaves a half-written model. Under FSDP
        every rank must call it (the weights are gathered); rank 0 writes.
        """
        target = Path(save_directory)
        model = self._export_model(merged)
        if model is None:  # FSDP, ranks other than 0
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            self.lm.tokenizer.save_pretrained(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def _export_model(self, merged: bool) -> torch.nn.Module | None:
        """The model :meth:`save_pretrained` writes: the policy's own, or a merged copy. A sharded (FSDP) policy
        cannot be deep-copied or saved as is: its full weights are gathered to rank 0 and loaded into a fresh
        copy of the env's model (None on the other ranks)."""
        if not is_sharded(self):
            return copy.deepcopy(self.model).merge_and_unload() if merged and self.is_peft else self.model
        state = full_model_state(self)
        if not state:
            return None
        model = self.lm.load_model()
        if self.is_peft:
            model = wrap_lora(model, self.peft_config)
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
        return model.merge_and_unload() if merged and self.is_peft else model


class ReferencePolicy(torch.nn.Module):
    """The frozen initial model, used for the KL penalty (DeepSeekMath eq. 4).

    Without LoRA: a copy of the env's model (not the possibly fine-tuned policy), never saved with the
    algorithm, and only built when ``beta > 0``; under ``mixed_precision="bf16"`` its weights are stored in
    bf16 (it is never trained; its log-probs are still float32). With a LoRA policy (``policy_model`` a peft model): no copy;
    the reference is the policy's own base model with the adapters disabled (TRL does the same), which is
    exactly the initial model because the base weights are frozen.

    Args:
        lm: the env's model handle (the copy is loaded from it).
        temperature: logits are divided by it, as the policy's.
        mixed_precision: autocast mode of the copy's forward.
        policy_model: the policy's model; used instead of a copy when it carries peft adapters.
    """

    def __init__(self, lm: LanguageModel, temperature: float = 1.0, mixed_precision: str = "no",
                 policy_model: torch.nn.Module | None = None):
        super().__init__()
        self.temperature = float(temperature)
        shared = policy_model is not None and hasattr(policy_model, "disable_adapter")
        # A plain attribute (not a submodule): the policy owns, moves and saves the shared model.
        self._shared = (policy_model,) if shared else None
        self.model = None
        if not shared:
            model = lm.load_model()
            if mixed_precision == "bf16":  # never trained: bf16 weights halve its memory and skip the casts
                model = model.to(torch.bfloat16)
            self.model = enable_mixed_precision(model, mixed_precision).requires_grad_(False)

    @torch.no_grad()
    def log_probs(self, prompt_ids, prompt_mask, response_ids, response_mask) -> torch.Tensor:
        """Per-token log-probs ``(B, T)`` (nats, float32) under the reference model, without grad."""
        args = (prompt_ids, prompt_mask, response_ids, response_mask)
        if self._shared is None:
            return sequence_log_probs(self.model, *args, temperature=self.temperature)[0]
        model = self._shared[0]
        with model.disable_adapter():
            return sequence_log_probs(model, *args, temperature=self.temperature)[0]


def loss_masked(x: torch.Tensor | None, samples) -> torch.Tensor | None:
    """``x (B, T)`` zeroed outside ``samples.response_mask`` when the attention mask is separate (multi-turn).

    The log-probs of env-inserted tokens are computed (the model reads them) but multiplied by 0, so no
    loss can give them a gradient, whatever it sums.
    """
    if x is None or samples.response_attention_mask is None:
        return x
    return x * samples.response_mask.to(device=x.device, dtype=x.dtype)


class LLMActorCriticPolicy(LLMPolicy):
    """The actor plus a critic: a scalar value head on the last hidden state of every response position (PPO).

    **Value position.** ``values[:, t] = V(s_t)`` with ``s_t = (q, o_<t)``, the state *before* response
    token ``o_t`` is emitted. It is read from the hidden state at the same position as the logits of
    ``pi(o_t | s_t)`` (the last prompt token for ``t = 0``), so one forward gives both. With this convention
    GAE's ``delta_t = r_t + gamma V(s_{t+1}) - V(s_t)`` (:func:`~agents.common.returns.gae`) uses ``r_t``,
    the reward for emitting ``o_t`` (outcome on the last real token, KL penalty on every token), and the
    value after the last real token is 0 (the episode ends with it).

    By default the value head shares the transformer trunk with the actor (the value loss also trains the
    trunk); ``separate_critic=True`` loads a second copy of the env's model (``lm.load_model()``, its base
    transformer without the LM head) as the critic's trunk. The optimizer covers the LM, the head and the
    critic trunk. The head is part of the policy's state dict, so SB3's ``save`` / ``load`` keep it;
    :meth:`save_pretrained` exports the actor only.

    Args:
        observation_space: as :class:`LLMPolicy`.
        action_space: as :class:`LLMPolicy`.
        lr_schedule: as :class:`LLMPolicy`.
        lm: as :class:`LLMPolicy`.
        temperature: as :class:`LLMPolicy`.
        top_p: as :class:`LLMPolicy`.
        optimizer_class: as :class:`LLMPolicy`.
        optimizer_kwargs: as :class:`LLMPolicy`.
        mixed_precision: as :class:`LLMPolicy`.
        gradient_checkpointing: as :class:`LLMPolicy` (the critic's own trunk too, with ``separate_critic``).
        peft_config: as :class:`LLMPolicy`.
        separate_critic: give the critic its own trunk (twice the weights and optimizer memory).
        value_head_init_std: std of the head's normal weight init (bias 0): a small value starts every
            ``V`` near 0, so the first advantages are close to the returns.

    Attributes:
        entropy_grad: when True, :meth:`evaluate_actions` returns the entropy with grad (an algorithm with an
            entropy bonus sets it; default False).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule,
        lm: LanguageModel,
        temperature: float = 1.0,
        top_p: float = 1.0,
        separate_critic: bool = False,
        value_head_init_std: float = 1e-3,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.AdamW,
        optimizer_kwargs: dict | None = None,
        mixed_precision: str = "no",
        gradient_checkpointing: bool = False,
        peft_config=None,
    ):
        super().__init__(observation_space, action_space, lr_schedule, lm=lm, temperature=temperature, top_p=top_p,
                         optimizer_class=optimizer_class, optimizer_kwargs=optimizer_kwargs,
                         mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing,
                         peft_config=peft_config)
        self.separate_critic = bool(separate_critic)
        self.entropy_grad = False
        self.critic = None
        if self.separate_critic:  # a full trainable copy, in the actor's precision
            critic = lm.load_model()
            if gradient_checkpointing:
                enable_gradient_checkpointing(critic)
            self.critic = base_transformer(enable_mixed_precision(critic, mixed_precision))
        self.value_head = torch.nn.Linear(self.model.config.hidden_size, 1, device=self.model.device)
        torch.nn.init.normal_(self.value_head.weight, std=value_head_init_std)
        torch.nn.init.zeros_(self.value_head.bias)
        self.optimizer = self.make_optimizer(lr_schedule)

    def _values(self, hidden: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        """Value head on hidden states ``(B, T, H)`` -> ``(B, T)`` float32 values, 0 on padding."""
        values = self.value_head(hidden.float()).squeeze(-1)  # (B, T)
        return torch.where(response_mask.to(values.device).bool(), values, torch.zeros_like(values))  # (B, T)

    def evaluate_actions(self, samples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probs, entropy and values of whole responses, with grad (one forward with the shared trunk).

        Args:
            samples: a :class:`~agents.common.buffers.RolloutSamples` (prompt and response ids and masks).

        Returns:
            ``log_probs (B, T)`` (nats), ``entropy (B, T)`` (nats; with grad iff :attr:`entropy_grad`) and
            ``values (B, T)`` (reward units, ``V(s_t)`` as in the class docstring), all 0 on padding.
        """
        args = (samples.prompt_ids, samples.prompt_mask, samples.response_ids, samples.attention_mask)
        with checkpointing(self):
            log_probs, entropy, *hidden = sequence_log_probs(
                self.model, *args, temperature=self.temperature, return_entropy=True,
                entropy_grad=self.entropy_grad, return_hidden=self.critic is None)  # (B, T), (B, T), [(B, T, H)]
            hidden = hidden[0] if self.critic is None else response_hidden_states(self.critic, *args)  # (B, T, H)
        return loss_masked(log_probs, samples), loss_masked(entropy, samples), self._values(hidden,
                                                                                        samples.response_mask)

    @torch.no_grad()
    def predict_values(self, samples) -> torch.Tensor:
        """Values ``V(s_t)`` ``(B, T)`` of the response positions, without grad and without the LM head."""
        trunk = base_transformer(self.model) if self.critic is None else self.critic
        hidden = response_hidden_states(trunk, samples.prompt_ids, samples.prompt_mask, samples.response_ids,
                                        samples.attention_mask)  # (B, T, H)
        return self._values(hidden, samples.response_mask)


def response_hidden_states(trunk: torch.nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                           response_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden states ``(B, T, H)`` of a base transformer at the positions that predict the response tokens.

    The same inputs as :func:`~llm_gym.lm.sequence_log_probs` (left-padding trimmed, position ids from the
    mask), so ``hidden[:, t]`` is the state before response token ``t``; ``trunk`` is a Hugging Face base
    model (``model.base_model``) returning ``last_hidden_state``. With grad if enabled.
    """
    input_ids, attention_mask, position_ids = sequence_inputs(
        prompt_ids, prompt_mask, response_ids, response_mask, next(trunk.parameters()).device)  # (B, L + T) each
    T = response_ids.shape[1]
    out = trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.last_hidden_state[:, -(T + 1):-1, :]  # (B, T, H)
