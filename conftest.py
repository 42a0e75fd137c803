"""Collect the code blocks of README.md and docs/ as tests (Sybil; conventions in docs/docs-tests.md)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def _load_harness():
    """Import tests/docs_harness.py as the module ``docs_harness`` (tests/ is not a package)."""
    if "docs_harness" not in sys.modules:
        spec = importlib.util.spec_from_file_location("docs_harness", ROOT / "tests" / "docs_harness.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["docs_harness"] = module
        spec.loader.exec_module(module)
    return sys.modules["docs_harness"]


pytest_collect_file = _load_harness().make_sybil(ROOT).pytest()


@pytest.fixture(scope="session")
def docs_tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny test model (llm_gym.models.build_tiny_model), built once per session for the docs."""
    from llm_gym.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("docs_tiny_model"))


@pytest.fixture(scope="session")
def docs_tiny_reward_model_dir(tmp_path_factory) -> Path:
    """A tiny random 2-label reward model folder (what ``scripts/train_reward_model.py`` writes)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from llm_gym.reward_models import build_tiny_reward_backbone, save_reward_model

    backbone = build_tiny_reward_backbone(tmp_path_factory.mktemp("docs_tiny_backbone"))
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=2)
    out = tmp_path_factory.mktemp("docs_tiny_reward_model") / "model"
    return save_reward_model(model, AutoTokenizer.from_pretrained(backbone), out, {"kind": "outcome"})


def write_sample_files(workspace: Path, model_dir: Path, reward_model_dir: Path) -> None:
    """Put the files the docs name into ``workspace`` (listed in docs/docs-tests.md)."""
    import datasets

    problems = [{"id": f"mine/{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(4)]
    (workspace / "my_problems.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
    datasets.Dataset.from_dict({"uid": [p["id"] for p in problems], "prompt": [p["question"] for p in problems],
                                "target": [p["answer"] for p in problems]}).to_parquet(workspace / "mine.parquet")
    for split in ("train", "test"):
        datasets.Dataset.from_list(problems).to_parquet(workspace / f"{split}.parquet")
    (workspace / "path" / "to").mkdir(parents=True)
    (workspace / "path" / "to" / "hf_folder").symlink_to(model_dir, target_is_directory=True)
    shutil.copytree(reward_model_dir, workspace / "outputs" / "reward_model" / "model")
    from llm_gym.reward_models import write_labelled_samples

    write_labelled_samples(workspace / "outputs" / "reward_model" / "train_samples.jsonl",
                           [(p["question"], p["answer"]) for p in problems], [1, 0, 1, 0], "outcome")


@pytest.fixture(scope="module")
def docs_workspace(tmp_path_factory, docs_tiny_model_dir, docs_tiny_reward_model_dir):
    """Per document: the default model is the tiny model, the working folder is a fresh temporary folder
    holding the sample files, the cache is temporary and torch uses 1 thread; all restored afterwards.

    One thread: the tiny model is overhead-bound, and on a machine shared with other jobs one thread trains
    it about 5x faster than two (GRPO, 64 timesteps: 6.5 s against 34 s on a loaded 2-core machine).
    """
    import torch

    from llm_gym.models import DEFAULT_MODEL_ENV

    workspace = tmp_path_factory.mktemp("docs_workspace")
    write_sample_files(workspace, docs_tiny_model_dir, docs_tiny_reward_model_dir)
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DEFAULT_MODEL_ENV, str(docs_tiny_model_dir))
        mp.setenv("LLM_GYM_CACHE", str(tmp_path_factory.mktemp("docs_cache")))
        mp.setenv("MPLBACKEND", "Agg")
        mp.chdir(workspace)
        torch.set_num_threads(1)
        yield workspace
    torch.set_num_threads(threads)
