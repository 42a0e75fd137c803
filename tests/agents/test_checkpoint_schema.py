"""A checkpoint's plain data is trusted no further than its schema (issue 27, class 3).

Hypothesis tampers with ``llm_gym.json`` (missing, extra and wrong keys, another version, hostile strings) and
with the tensor members (missing and extra keys, wrong shapes and dtypes, non-finite values, non-tensors):
``load`` either loads a model that is exactly what the schema allows, or raises one exception type,
:class:`CheckpointError`, naming the file and the member. It never crashes with another type, never keeps an
optimizer hyperparameter from the file, never sets an unknown attribute and never takes a path from it.
"""

from __future__ import annotations

import copy
import io
import json
import math
import zipfile

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agents import GRPO
from agents.common.checkpoint import META, CheckpointError
from agents.common.checkpoint_schema import read_member

MEMBER_NAMES = ("llm_gym.json", "policy.pt", "optimizer.pt", "torch_rng.pt")


def text_reward(prompts, responses, answers, **fields):
    return [float(len(r) % 3) for r in responses]


@pytest.fixture(scope="module")
def saved(tiny_model_dir, tmp_path_factory):
    """A checkpoint after one update (so ``optimizer.pt`` has state), its JSON and tensors, and an env factory."""
    from llm_gym.envs.sequence import SequenceEnv

    def make_env():
        return SequenceEnv(model=str(tiny_model_dir), max_new_tokens=4, n_problems=8, device="cpu",
                           max_prompt_length=96, reward_fn=text_reward)

    model = GRPO("LLMPolicy", make_env(), n_prompts=1, group_size=2, learning_rate=1e-3, seed=0, device="cpu",
                 tensorboard_log=str(tmp_path_factory.mktemp("tb")))
    model.learn(2)
    path = tmp_path_factory.mktemp("ckpt") / "model.zip"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read(META))
        tensors = {name: torch.load(io.BytesIO(archive.read(name)), weights_only=True) for name in MEMBER_NAMES[1:]}
    tensors["groups"] = settings_of(model.policy.optimizer)
    return path, meta, tensors, make_env


def rewrite(src, dst, meta=None, tensors=None, extra=None):
    """``src`` with ``llm_gym.json`` and tensor members replaced (and ``extra`` members added)."""
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for name in archive.namelist():
            data = archive.read(name)
            if name == META and meta is not None:
                data = json.dumps(meta).encode()
            elif tensors is not None and name in tensors:
                buffer = io.BytesIO()
                torch.save(tensors[name], buffer)
                data = buffer.getvalue()
            out.writestr(name, data)
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return dst


def load_or_error(path, make_env, **kwargs):
    """The loaded model, or the CheckpointError; any other exception fails the test."""
    try:
        return GRPO.load(path, env=make_env(), device="cpu", **kwargs)
    except CheckpointError as exc:
        return exc


def assert_named(result, path):
    message = str(result)
    assert str(path) in message, message
    assert any(member in message for member in MEMBER_NAMES), message


def settings_of(optimizer):
    """The optimizer's hyperparameters but the learning rate (which the config sets)."""
    return [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in optimizer.param_groups]


def assert_schema_only(model, groups):
    """What a loaded model may hold from a file: no path, no optimizer setting, no stray attribute."""
    assert model.tensorboard_log is None
    assert settings_of(model.policy.optimizer) == groups
    assert model.policy.optimizer.param_groups[0]["lr"] == model.config.learning_rate
    assert callable(model.learn) and not any(name.startswith(("learn", "zz_")) for name in vars(model))


# ------------------------------------------------------------------------------------------------ the instances
def test_hyperparameters_in_optimizer_pt_are_never_read(saved, tmp_path):
    """``"maximize": True`` (and a negative lr, a huge weight decay) in the file's param_groups used to be kept:
    gradient ascent. Only the state tensors are read."""
    path, meta, tensors, make_env = saved
    optimizer = copy.deepcopy(tensors["optimizer.pt"])
    for group in optimizer["param_groups"]:
        group.update(maximize=True, lr=-1.0, weight_decay=1e9, betas=(0.0, 0.0))
    model = GRPO.load(rewrite(path, tmp_path / "max.zip", tensors={"optimizer.pt": optimizer}), env=make_env(),
                      device="cpu")
    group = model.policy.optimizer.param_groups[0]
    assert group["maximize"] is False and group["lr"] == 1e-3 and group["weight_decay"] == 0.01
    assert tuple(group["betas"]) == (0.9, 0.999)
    exp_avg = next(iter(model.policy.optimizer.state.values()))["exp_avg"]
    assert torch.equal(exp_avg, tensors["optimizer.pt"]["state"][0]["exp_avg"])  # the state is loaded


def test_optimizer_settings_in_policy_kwargs_are_refused(saved, tmp_path):
    path, meta, _, make_env = saved
    bad = copy.deepcopy(meta)
    bad["policy_kwargs"] = {"optimizer_kwargs": {"maximize": True}}
    with pytest.raises(CheckpointError, match=r"key 'policy_kwargs\.optimizer_kwargs\.maximize': not read from a "
                                              r"checkpoint.*custom_objects"):
        GRPO.load(rewrite(path, tmp_path / "pk.zip", meta=bad), env=make_env(), device="cpu")


@pytest.mark.parametrize(("name", "value"), [("weight_decay", 1e6), ("momentum", 2.0), ("betas", [1.0, 1.0])])
def test_optimizer_settings_out_of_their_range_are_refused(saved, tmp_path, name, value):
    """A weight decay of 1e6 from a file wiped every weight in two steps; betas of 1 make torch raise late."""
    path, meta, _, make_env = saved
    bad = copy.deepcopy(meta)
    bad["policy_kwargs"] = {"optimizer_kwargs": {name: value}}
    with pytest.raises(CheckpointError, match=rf"policy_kwargs\.optimizer_kwargs\.{name}.*out of range"):
        GRPO.load(rewrite(path, tmp_path / "range.zip", meta=bad), env=make_env(), device="cpu")


@pytest.mark.parametrize(("section", "change", "named"), [
    ("state", {"learn": "x"}, r"key 'state\.learn': unknown key"),
    ("state", {"num_timesteps": "12"}, r"key 'state\.num_timesteps': expected an integer"),
    ("version", 99, r"key 'version': 99: this llm-gym reads checkpoint version 1.*newer llm-gym"),
    ("version", True, r"key 'version'"),
    ("config", {"dynamic_sampling": "no"}, r"key 'config\.dynamic_sampling': dynamic_sampling must be True or False"),
    ("config", {"beta": -1.0}, r"key 'config\.beta'"),
    ("sb3", {"seed": "abc"}, r"key 'sb3\.seed'"),
    ("algorithm", "os.system", r"key 'algorithm': expected a class name"),
    ("policy_class", "Evil", r"key 'policy_class': unknown policy class"),
])
def test_wrong_json_is_a_checkpoint_error_naming_file_and_key(saved, tmp_path, section, change, named):
    path, meta, _, make_env = saved
    bad = copy.deepcopy(meta)
    if isinstance(change, dict):
        bad[section].update(change)
    else:
        bad[section] = change
    with pytest.raises(CheckpointError, match=rf"bad\.zip: llm_gym\.json, {named}"):
        GRPO.load(rewrite(path, tmp_path / "bad.zip", meta=bad), env=make_env(), device="cpu")


def test_missing_key_is_named_not_a_bare_key_error(saved, tmp_path):
    path, meta, _, make_env = saved
    bad = copy.deepcopy(meta)
    del bad["problem_rng"]
    with pytest.raises(CheckpointError, match=r"llm_gym\.json, key 'problem_rng': missing"):
        GRPO.load(rewrite(path, tmp_path / "bad.zip", meta=bad), env=make_env(), device="cpu")


def test_a_stored_tensorboard_log_is_never_used(saved, tmp_path):
    """A path in a checkpoint would make a run write outside its folder: it is recorded, never read."""
    path, meta, _, make_env = saved
    bad = copy.deepcopy(meta)
    bad["sb3"]["tensorboard_log"] = "../../.."
    model = GRPO.load(rewrite(path, tmp_path / "tb.zip", meta=bad), env=make_env(), device="cpu")
    assert model.tensorboard_log is None
    chosen = GRPO.load(tmp_path / "tb.zip", env=make_env(), device="cpu", tensorboard_log=str(tmp_path / "runs"))
    assert chosen.tensorboard_log == str(tmp_path / "runs")


def test_a_zip_bomb_is_refused_by_its_declared_size(saved, tmp_path):
    """64 MiB of zeros deflates to ~64 KiB; the tiny model's policy.pt cap is a few MiB: refused unread."""
    path, _, _, make_env = saved
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path) as archive, zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for name in archive.namelist():
            if name == "policy.pt":
                with out.open(name, "w", force_zip64=True) as member:
                    for _ in range(64):
                        member.write(bytes(2**20))
            else:
                out.writestr(name, archive.read(name))
    assert bomb.stat().st_size < 2**20
    with pytest.raises(CheckpointError, match=r"bomb\.zip: policy\.pt, top level: the zip declares 67108864 bytes "
                                              r"once inflated, over this member's cap"):
        GRPO.load(bomb, env=make_env(), device="cpu")


def test_a_member_inflating_past_its_declared_size_is_refused(tmp_path):
    """A zip whose header lies about the inflated size: reading stops at the cap, and the error names it."""
    path = tmp_path / "lie.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as out:
        out.writestr(META, bytes(2**20))
    raw = bytearray(path.read_bytes())
    size = (2**20).to_bytes(4, "little")
    for at in [i for i in range(len(raw) - 3) if raw[i:i + 4] == size]:  # local header and central directory
        raw[at:at + 4] = (100).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as archive, pytest.raises(CheckpointError, match=r"lie\.zip: llm_gym\.json"):
        read_member(archive, path, META, 1000)
    with zipfile.ZipFile(path) as archive, pytest.raises(CheckpointError, match="over this member's cap of 10 bytes"):
        read_member(archive, path, META, 10)


def test_an_extra_member_is_refused(saved, tmp_path):
    path, _, _, make_env = saved
    with pytest.raises(CheckpointError, match=r"expected exactly \['llm_gym\.json'"):
        GRPO.load(rewrite(path, tmp_path / "x.zip", extra={"data": b"x"}), env=make_env(), device="cpu")


# ------------------------------------------------------------------------------------------ tampered llm_gym.json
HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12), st.sampled_from(["../../..", "/etc/passwd", "\ud800", "x" * 5000, "GRPO", "LLMPolicy",
                                           "learn", "__class__", "torch.optim.adamw.AdamW", "PCG64", "MT19937"]),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(-3, 3), max_size=2))


def json_paths(meta):
    """Every top-level key and every key one level below (``config.beta``, ``sb3.tensorboard_log``...)."""
    paths = [(key,) for key in meta]
    paths += [(key, sub) for key, value in meta.items() if isinstance(value, dict) for sub in value]
    return sorted(paths)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@example(operation="add", index=0, value="x")
@given(operation=st.sampled_from(["delete", "replace", "add"]), index=st.integers(0, 10**6), value=HOSTILE)
def test_tampered_json_is_a_checkpoint_error_or_a_model_within_the_schema(saved, tmp_path, operation, index, value):
    path, meta, tensors, make_env = saved
    paths = json_paths(meta)
    where = paths[index % len(paths)]
    bad = copy.deepcopy(meta)
    parent = bad if len(where) == 1 else bad[where[0]]
    if operation == "delete":
        del parent[where[-1]]
    elif operation == "replace":
        parent[where[-1]] = value
    else:
        parent["zz_" + str(value)[:10]] = value
    result = load_or_error(rewrite(path, tmp_path / "t.zip", meta=bad), make_env)
    if isinstance(result, CheckpointError):
        assert_named(result, tmp_path / "t.zip")
    else:
        assert_schema_only(result, tensors["groups"])


# ------------------------------------------------------------------------------------------ tampered tensors
def tensor_change(draw, tensors):
    """One change to one tensor member: ``(member, new_content)``; every change breaks the schema."""
    member = draw(st.sampled_from(["policy.pt", "optimizer.pt", "torch_rng.pt"]))
    content = copy.deepcopy(tensors[member])
    if member == "policy.pt":
        table = content
    elif member == "optimizer.pt":
        table = content["state"][draw(st.sampled_from(sorted(content["state"])))]
    else:
        table = content
    key = draw(st.sampled_from(sorted(table)))
    how = draw(st.sampled_from(["delete", "shape", "dtype", "nan", "junk", "extra", "index"]))
    old = table[key]
    if how == "delete":
        del table[key]
    elif how == "shape":
        table[key] = torch.zeros(*(tuple(getattr(old, "shape", ())) + (2,)))
    elif how == "dtype":
        dtype = draw(st.sampled_from([torch.float64, torch.float16, torch.int64, torch.bfloat16, torch.bool]))
        table[key] = old.to(dtype) if isinstance(old, torch.Tensor) else torch.zeros(1, dtype=dtype)
    elif how == "nan" and isinstance(old, torch.Tensor) and old.is_floating_point() and old.numel():
        table[key] = old.clone()
        table[key].view(-1)[draw(st.integers(0, old.numel() - 1))] = draw(st.sampled_from([math.nan, math.inf]))
    elif how == "junk" or how == "nan":
        table[key] = draw(st.one_of(st.none(), st.integers(), st.text(max_size=3),
                                    st.lists(st.integers(), min_size=1, max_size=2)))
    elif how == "extra":
        table["zz_extra"] = torch.zeros(1)
    elif member == "optimizer.pt":  # "index": a state entry under a parameter index that does not exist
        content["state"][draw(st.sampled_from([10**6, -1, "0", True]))] = content["state"].pop(
            sorted(content["state"])[0])
    else:
        table[key] = [old] if member == "torch_rng.pt" else old.unsqueeze(0)
    return member, content


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_tampered_tensors_are_a_checkpoint_error_naming_member_and_key(saved, tmp_path, data):
    path, meta, tensors, make_env = saved
    member, content = tensor_change(data.draw, tensors)
    result = load_or_error(rewrite(path, tmp_path / "t.zip", tensors={member: content}), make_env)
    assert isinstance(result, CheckpointError), f"{member}: loaded a tampered tensor"
    assert_named(result, tmp_path / "t.zip")
    assert member in str(result)


def test_a_lora_config_may_not_name_code_or_other_procedures(saved, tmp_path):
    """peft imports ``megatron_core`` by name when ``megatron_config`` is set: a checkpoint may set plain LoRA
    settings (rank, alpha, dropout, target modules...) only."""
    path, meta, _, make_env = saved
    for change, named in (({"megatron_config": {"tensor_model_parallel_size": 1}, "megatron_core": "os"},
                           "peft_config.megatron_config"),
                          ({"r": "x"}, "peft_config.r"), ({"peft_type": "PREFIX_TUNING"}, "peft_config.peft_type"),
                          ({"init_lora_weights": "loftq"}, "peft_config.init_lora_weights")):
        bad = copy.deepcopy(meta)
        bad["peft_config"] = {"peft_type": "LORA", "r": 4, "target_modules": ["c_attn"], **change}
        with pytest.raises(CheckpointError, match=rf"llm_gym\.json, key '{named}'"):
            GRPO.load(rewrite(path, tmp_path / "lora.zip", meta=bad), env=make_env(), device="cpu")
