"""Shared fixtures: a tiny random GPT-2 with a character-level tokenizer, built locally (no downloads)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: the tiny model is overhead-bound, so one thread is as fast on an idle
    machine and about 10x faster on a busy one (use with ``pytest.mark.usefixtures("one_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folder of a tiny random causal LM (2 layers, width 64, char tokenizer, 2048-token context)."""
    from llm_gym.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    """Shared :class:`LanguageModel` handle on the tiny model (CPU)."""
    from llm_gym.lm import get_language_model

    return get_language_model(str(tiny_model_dir), device="cpu")


@pytest.fixture
def make_env(tiny_model_dir):
    """Factory for a sequence env on the tiny model: short responses, 40 arithmetic problems."""
    from llm_gym.envs.sequence import SequenceEnv

    def _make(**kwargs):
        params = {"model": str(tiny_model_dir), "max_new_tokens": 12, "n_problems": 40, "device": "cpu",
                  "max_prompt_length": 96}
        params.update(kwargs)
        return SequenceEnv(**params)

    return _make
