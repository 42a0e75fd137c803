"""AlgorithmConfig: one source for presets, constructors, CLI flags and docs tables."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import math
from pathlib import Path

import pytest

from agents import ALGORITHMS, DAPO, GRPO, PPO, AlgorithmConfig, LLMAlgorithm
from agents.common.config import field_docs

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_presets_are_the_documented_changes():
    base = AlgorithmConfig().to_dict()
    changed = {name: {k: v for k, v in cls.default_config().to_dict().items() if v != base[k]}
               for name, cls in ALGORITHMS.items()}
    assert changed["grpo"] == {}
    assert changed["dapo"] == {"clip_range_high": 0.28, "beta": 0.0, "loss_aggregation": "token-mean",
                               "dynamic_sampling": True, "overlong_buffer": None}
    assert changed["gspo"] == {"clip_range": 3e-4, "clip_range_high": 4e-4, "beta": 0.0,
                               "importance_sampling_level": "sequence"}
    assert changed["rloo"] == {"advantage_estimator": "rloo"}
    assert changed["drgrpo"] == {"scale_rewards": "none", "loss_aggregation": "seq-mean-token-sum-norm", "beta": 0.0}
    assert changed["cispo"] == {"loss_mode": "cispo", "beta": 0.0, "loss_aggregation": "token-mean",
                                "clip_range": 1.0, "clip_range_high": 4.0}
    assert changed["reinforce_pp"] == {"advantage_estimator": "reinforce_plus_plus", "kl_placement": "reward",
                                       "kl_estimator": "k1", "beta": 0.01, "loss_aggregation": "token-mean"}
    assert changed["reinforce_pp_baseline"]["advantage_estimator"] == "reinforce_plus_plus_baseline"
    assert changed["rft"] == {"advantage_estimator": "rft", "loss_mode": "sft", "beta": 0.0}
    assert changed["ppo"]["advantage_estimator"] == "gae" and changed["ppo"]["kl_placement"] == "reward"


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_constructor_signature_is_explicit_and_matches_the_preset(name):
    cls = ALGORITHMS[name]
    params = inspect.signature(cls).parameters
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params.values())
    preset = cls.default_config().to_dict()
    for field in AlgorithmConfig.field_names():
        assert params[field].kind is inspect.Parameter.KEYWORD_ONLY and params[field].default == preset[field]
    assert {"policy_kwargs", "tensorboard_log", "verbose", "seed", "device"} <= set(params)


def test_unknown_keyword_and_invalid_values_name_the_argument(make_env):
    env = make_env()
    with pytest.raises(TypeError, match="clip_rnage"):
        GRPO("LLMPolicy", env, clip_rnage=0.1)
    with pytest.raises(ValueError, match="advantage_estimator"):
        GRPO("LLMPolicy", env, advantage_estimator="vtrace")
    with pytest.raises(ValueError, match="importance_sampling_level"):
        DAPO("LLMPolicy", env, loss_mode="cispo", importance_sampling_level="sequence")
    with pytest.raises(ValueError, match="advantage='process'"):
        GRPO("LLMPolicy", env, advantage="process", advantage_estimator="rloo")


@pytest.mark.parametrize(("field", "value"), [
    ("n_prompts", 0), ("group_size", 2.5), ("batch_size", 0), ("batch_size", 33), ("clip_range", 0.0),
    ("clip_range", math.nan), ("clip_range_high", -0.1), ("beta", -1.0), ("beta", math.inf), ("top_p", 1.5),
    ("temperature", 0.0), ("gamma", 1.1), ("max_grad_norm", -1.0), ("learning_rate", math.nan),
    ("kl_placement", "advantage"), ("loss_mode", "dpo"), ("overlong_buffer", -1), ("vf_coef", -0.5),
    ("target_kl", 0.0), ("dynamic_sampling", True),
])
def test_validate_rejects_each_bad_value_by_name(field, value):
    changes = {field: value}
    if field == "dynamic_sampling":
        changes["group_size"] = 1  # dynamic sampling needs groups of at least 2
    with pytest.raises(ValueError, match=field):
        AlgorithmConfig(**changes).validate()


def test_every_field_is_documented():
    docs = field_docs()
    assert set(docs) == set(AlgorithmConfig.field_names())
    assert "DAPO" in docs["dynamic_sampling"] and "eq. 7" in docs["clip_range"]


def tiny_digest(model: LLMAlgorithm) -> str:
    h = hashlib.sha256()
    for key, value in sorted(model.policy.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def text_len_reward(prompts, responses, answers, **fields):
    return [len(r) / 12 for r in responses]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("cls", "policy"), [(DAPO, "LLMPolicy"), (PPO, "LLMActorCriticPolicy")])
def test_a_preset_is_only_its_config(cls, policy, make_env):
    """GRPO built with another preset's config trains to bit-identical weights: no algorithm has its own loop."""
    config = cls.default_config().replace(n_prompts=2, group_size=2, learning_rate=1e-3, dynamic_sampling=False)
    digests = []
    for klass in (cls, GRPO):
        model = klass(policy, make_env(reward_fn=text_len_reward), **config.to_dict(), seed=3, device="cpu")
        model.learn(8)
        digests.append(tiny_digest(model))
    assert digests[0] == digests[1]


def test_docs_tables_are_generated_from_the_config():
    tables = load_script("docs_tables")
    assert tables.main(["--check"]) == 0, "run: python scripts/docs_tables.py"
    table = tables.config_table("dapo")
    assert "| `clip_range_high` | **`0.28`** |" in table and "| `clip_range` | `0.2` |" in table


def test_train_flags_come_from_the_config():
    train = load_script("train")
    args = train.parse_args(["--algo", "drgrpo"])
    assert args.scale_rewards == "none" and args.loss_aggregation == "seq-mean-token-sum-norm"
    assert args.learning_rate == 2e-5 and args.temperature == 0.7  # the CPU profile on top of the preset
    args = train.parse_args(["--algo", "dapo", "--no-dynamic-sampling", "--clip-range-high", "none",
                             "--overlong-buffer", "5"])
    assert args.dynamic_sampling is False and args.clip_range_high is None and args.overlong_buffer == 5
    ppo = train.parse_args(["--algo", "ppo"])
    assert (ppo.n_prompts, ppo.n_epochs, ppo.batch_size, ppo.total_timesteps) == (32, 2, 16, 7100)
    help_text = train.build_parser("gspo").format_help()
    flags = {a.dest for a in train.build_parser().__dict__["_actions"]}
    assert set(AlgorithmConfig.field_names()) <= flags
    assert "(default: 0.0003" in help_text and "(default: sequence)" in help_text


def test_the_resolved_config_is_the_one_held(make_env):
    model = DAPO("LLMPolicy", make_env(), n_prompts=2, group_size=2, clip_range_high=0.3, device="cpu")
    assert model.config.clip_range_high == 0.3 and model.config.overlong_buffer == 2  # 20 % of 12 tokens
    assert model.config == DAPO.default_config().replace(n_prompts=2, group_size=2, clip_range_high=0.3,
                                                         overlong_buffer=2)


def test_the_config_is_held_once_and_read_by_the_loss(make_env, monkeypatch):
    """One object, not attributes rebuilt on access: the same instance reaches every micro-batch's loss."""
    import agents.common.update as update

    model = GRPO("LLMPolicy", make_env(reward_fn=text_len_reward), n_prompts=2, group_size=2, micro_batch_size=2,
                 learning_rate=1e-3, seed=0, device="cpu")
    assert model.config is model.config and model.learning_rate is model.config.learning_rate
    assert not set(vars(model)) & set(AlgorithmConfig.field_names())  # no field copied onto the model
    seen = []
    real = update.compute_loss
    monkeypatch.setattr(update, "compute_loss", lambda cfg, *a, **k: seen.append(cfg) or real(cfg, *a, **k))
    model.learn(4)
    assert len(seen) == 2 and all(cfg is model.config for cfg in seen)  # two micro-batches of 2


def test_config_fields_are_not_model_attributes(make_env):
    model = GRPO("LLMPolicy", make_env(), n_prompts=1, group_size=2, device="cpu")
    with pytest.raises(AttributeError):
        model.beta  # noqa: B018 - the read is the test
    with pytest.raises(AttributeError, match=r"model\.config = model\.config\.replace\(beta=\.\.\.\)"):
        model.beta = 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.config.beta = 0.0
    assert model.config.beta == 0.04


def test_a_new_config_is_validated_and_kept(make_env):
    model = GRPO("LLMPolicy", make_env(), n_prompts=1, group_size=2, device="cpu")
    before = model.config
    with pytest.raises(ValueError, match="clip_range"):
        model.config = model.config.replace(clip_range=-1.0)
    with pytest.raises(TypeError, match="AlgorithmConfig"):
        model.config = before.to_dict()
    assert model.config is before
    model.config = model.config.replace(beta=0.1, reward_threshold=0.5)
    assert (model.config.beta, model.config.reward_threshold) == (0.1, 0.5)
    for change in ({"temperature": 0.5}, {"beta": 0.0}, {"ent_coef": 0.01}, {"mixed_precision": "bf16"}):
        with pytest.raises(ValueError, match=f"{next(iter(change))}: the model was built with the previous value"):
            model.config = model.config.replace(**change)  # the policy / reference model were built from it
    assert model.config.beta == 0.1 and model.ref_policy is not None


def test_learning_rate_is_sb3s_attribute_and_a_view_of_the_config(make_env):
    model = GRPO("LLMPolicy", make_env(), n_prompts=1, group_size=2, learning_rate=1e-3, device="cpu")
    assert model.lr_schedule(1.0) == 1e-3
    model.learning_rate = 5e-4  # SB3 users set it on the model: it updates the config and the schedule
    assert model.config.learning_rate == 5e-4 and model.lr_schedule(1.0) == 5e-4
    model.config = model.config.replace(learning_rate=2e-4)
    assert model.learning_rate == 2e-4 and model.lr_schedule(1.0) == 2e-4
    with pytest.raises(ValueError, match="learning_rate"):
        model.learning_rate = -1.0
