"""Policies: the language model as an SB3 policy, and the frozen reference model."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy

from llm_gym.lm import LanguageModel, sequence_log_probs


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
    ):
        super().__init__(observation_space, action_space, optimizer_class=optimizer_class,
                         optimizer_kwargs=optimizer_kwargs or {})
        self.lm = lm
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.model = lm.load_model()
        self.optimizer = self.optimizer_class(self.model.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

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

    def _predict(self, observation: dict[str, torch.Tensor], deterministic: bool = False) -> torch.Tensor:
        """Return ``(B, T)`` response token ids for a batch of prompt observations."""
        return self.generate(observation["input_ids"], observation["attention_mask"], deterministic).response_ids

    def log_probs(self, prompt_ids, prompt_mask, response_ids, response_mask, return_entropy: bool = False):
        """Per-token log-probs ``(B, T)`` (nats) of responses under the current weights (with grad)."""
        return sequence_log_probs(self.model, prompt_ids, prompt_mask, response_ids, response_mask,
                                  temperature=self.temperature, return_entropy=return_entropy)

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Export a plain Hugging Face model folder (weights, config, tokenizer, chat template).

        The folder is written beside the target and renamed into place, so an interrupted export
        never leaves a half-written model.
        """
        target = Path(save_directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.lm.tokenizer.save_pretrained(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target


class ReferencePolicy(torch.nn.Module):
    """A frozen copy of the initial model, used for the KL penalty (DeepSeekMath eq. 4).

    Loaded from the env's model (not the possibly fine-tuned policy), never saved with the algorithm,
    and only built when ``beta > 0``.
    """

    def __init__(self, lm: LanguageModel, temperature: float = 1.0):
        super().__init__()
        self.model = lm.load_model()
        self.model.requires_grad_(False)
        self.temperature = float(temperature)

    @torch.no_grad()
    def log_probs(self, prompt_ids, prompt_mask, response_ids, response_mask) -> torch.Tensor:
        """Per-token log-probs ``(B, T)`` under the reference model, without grad."""
        return sequence_log_probs(self.model, prompt_ids, prompt_mask, response_ids, response_mask,
                                  temperature=self.temperature)[0]
