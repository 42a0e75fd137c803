"""``llm-gym check``: every check can fail. Deliberately broken envs on the tiny model are flagged; a real
registered env passes.

Each broken env breaks one thing through public API (a reward function, a subclass of an llm-gym env):
non-deterministic rewards, an observation outside its space, a multi-turn env that re-tokenises the policy's ids,
rewards that pay each reward-hack probe, and a task with no signal for GRPO.
"""

from __future__ import annotations

import json
import random
import re

import gymnasium as gym
import numpy as np
import pytest

import agents.cli
from agents.check import EXIT_CONFORMANCE, EXIT_OK, EXIT_REWARD_HACK, run_checks
from agents.check.probes import INVALID_ACTION, wrong_value
from agents.check.report import CheckResult, EnvReport
from llm_gym.envs.multiturn import GuessNumberEnv
from llm_gym.envs.sequence import SequenceEnv

pytestmark = pytest.mark.usefixtures("one_thread")

# Long enough for "\boxed{36} \boxed{36}" with the tiny model's character tokenizer.
FAST = {"max_new_tokens": 24}


def check(env_id: str, tiny_model_dir, grpo_iterations: int = 0, **env_kwargs) -> EnvReport:
    """run_checks on the tiny model, CPU, 2 problems (GRPO off unless asked)."""
    return run_checks(env_id, model=str(tiny_model_dir), device="cpu", env_kwargs={**FAST, **env_kwargs},
                      grpo_iterations=grpo_iterations, n_prompts=2, group_size=4)


def by_name(report: EnvReport) -> dict[str, CheckResult]:
    return {c.name: c for c in report.checks}


@pytest.fixture
def register():
    """Register test envs (class entry points) for one test; removed afterwards."""
    added = []

    def _register(env_id: str, entry_point, **kwargs) -> str:
        gym.register(env_id, entry_point=entry_point, kwargs=kwargs)
        added.append(env_id)
        return env_id

    yield _register
    for env_id in added:
        del gym.registry[env_id]


# ----------------------------------------------------------------------------- a real env passes
def test_a_registered_env_passes_every_check(tiny_model_dir):
    report = check("LLMMath-v0", tiny_model_dir, grpo_iterations=1)
    checks = by_name(report)
    assert report.exit_code == EXIT_OK and report.error is None, report.to_dict()
    for name in ("gymnasium_check_env", "sb3_check_env", "reward_determinism", "probe_empty_answer",
                 "probe_question_copied", "probe_repeated_token", "probe_invalid_action", "probe_gold_twice"):
        assert checks[name].status == "pass", checks[name]
    assert checks["token_consistency"].status == "skip"  # one step: no sampled ids come back
    assert checks["probe_baselines"].status == "pass"  # the gold answer beats a wrong one
    assert checks["probe_baselines"].data["gold_answer"] == [1.0, 1.0]
    assert checks["grpo_run"].kind == "learnability" and len(checks["grpo_run"].data["rewards"]) == 1


def test_multi_turn_env_passes_token_consistency(tiny_model_dir):
    report = check("LLMGuessNumber-v0", tiny_model_dir, max_prompt_length=256)
    checks = by_name(report)
    assert checks["token_consistency"].status == "pass" and checks["token_consistency"].data["steps"] >= 4
    assert report.exit_code == EXIT_OK, report.to_dict()


# ----------------------------------------------------------------------------- conformance failures
def noisy_reward(prompts, responses, answers, **kwargs):
    return [random.random() for _ in responses]


def test_non_deterministic_reward_fails(tiny_model_dir):
    report = check("LLMMath-v0", tiny_model_dir, reward_fn=noisy_reward)
    result = by_name(report)["reward_determinism"]
    assert result.status == "fail" and "different rewards" in result.detail
    assert report.exit_code == EXIT_CONFORMANCE


class SeededNoiseEnv(SequenceEnv):
    """Adds noise drawn from the env's own np_random: the same response earns another reward after a new seed."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward + float(self.np_random.random()), terminated, truncated, info


def test_reward_drawn_from_np_random_fails(tiny_model_dir, register):
    env_id = register("CheckSeededNoise-v0", SeededNoiseEnv, max_prompt_length=128)
    assert by_name(check(env_id, tiny_model_dir))["reward_determinism"].status == "fail"


class OutOfSpaceEnv(SequenceEnv):
    """Its reset observation holds token ids outside its own observation space."""

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        obs["input_ids"] = obs["input_ids"] + self.lm.vocab_size
        return obs, info


@pytest.mark.filterwarnings("ignore:.*not within the observation space")
def test_an_observation_outside_its_space_fails_both_checkers(tiny_model_dir, register):
    env_id = register("CheckOutOfSpace-v0", OutOfSpaceEnv, max_prompt_length=128)
    report = check(env_id, tiny_model_dir)
    checks = by_name(report)
    assert checks["gymnasium_check_env"].status == checks["sb3_check_env"].status == "fail"
    assert "observation" in checks["gymnasium_check_env"].detail.lower()
    assert report.exit_code == EXIT_CONFORMANCE


class RetokenizingGuessEnv(GuessNumberEnv):
    """Keeps the conversation as text and re-encodes it after every turn: the policy's ids do not come back."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        seen = obs["input_ids"][obs["attention_mask"].astype(bool)]
        text = self.lm.tokenizer.decode(seen.tolist(), skip_special_tokens=True)
        ids = np.asarray(self.lm.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
        C = len(obs["input_ids"])
        out = {key: np.zeros(C, dtype=np.int64) for key in obs}
        out["input_ids"][:] = self.lm.pad_token_id
        out["input_ids"][C - len(ids):], out["attention_mask"][C - len(ids):] = ids, 1
        return out, reward, terminated, truncated, info


def test_a_multi_turn_env_that_retokenises_fails_token_consistency(tiny_model_dir, register):
    env_id = register("CheckRetokenizing-v0", RetokenizingGuessEnv, max_prompt_length=256, max_new_tokens=16,
                      max_message_tokens=24, max_turns=3)
    report = check(env_id, tiny_model_dir)
    result = by_name(report)["token_consistency"]
    assert result.status == "fail" and result.data["step"] == 0, result
    assert report.exit_code == EXIT_CONFORMANCE


class NotAnLLMEnv(gym.Env):
    """A Gymnasium env that is not built on llm-gym's bases."""

    observation_space = gym.spaces.Discrete(2)
    action_space = gym.spaces.Discrete(2)


def test_an_env_that_is_not_an_llm_env_fails(tiny_model_dir, register):
    env_id = register("CheckNotLLM-v0", NotAnLLMEnv)
    report = run_checks(env_id, model=str(tiny_model_dir), device="cpu", grpo_iterations=0)
    assert report.exit_code == EXIT_CONFORMANCE and "not an llm-gym env" in report.error


# ----------------------------------------------------------------------------- reward hacks
def _pays(condition):
    def reward(prompts, responses, answers, **kwargs):
        return [float(condition(r, a)) for r, a in zip(responses, answers, strict=True)]

    return reward


HACKS = {
    "probe_empty_answer": lambda r, a: not r.strip(),
    "probe_question_copied": lambda r, a: "What is" in r,
    "probe_repeated_token": lambda r, a: re.search(r"(.)\1{7}", r) is not None,
    "probe_invalid_action": lambda r, a: "<calc>" in r,
    "probe_gold_twice": lambda r, a: r.count(a),
}


@pytest.mark.parametrize("probe", sorted(HACKS))
def test_a_reward_that_pays_a_probe_is_flagged(tiny_model_dir, probe):
    """Each reward pays exactly one probe; that probe fails (with its reward printed), the others pass."""
    report = check("LLMMath-v0", tiny_model_dir, reward_fn=_pays(HACKS[probe]))
    checks = by_name(report)
    failed = {c.name for c in report.checks if c.status == "fail"}
    assert failed == {probe}, report.to_dict()
    assert re.match(r"reward [12] vs .*: pays 1 more than", checks[probe].detail), checks[probe].detail
    assert report.exit_code == EXIT_REWARD_HACK


def test_probe_texts():
    assert (wrong_value("36"), wrong_value("0.5"), wrong_value("abba")) == ("37", "1.5", "abbax")
    assert "<calc>" in INVALID_ACTION and "[" in INVALID_ACTION


# ----------------------------------------------------------------------------- learnability
def test_a_task_without_signal_is_flagged(tiny_model_dir):
    """The tiny random model never answers: every group's rewards are equal, the run is flagged (exit code 0)."""
    report = check("LLMMath-v0", tiny_model_dir, grpo_iterations=2)
    result = by_name(report)["grpo_run"]
    assert result.status == "warn" and "no signal" in result.detail
    assert result.data["zero_std_groups"] == [1.0, 1.0] and result.data["reward_moved"] is False
    assert report.exit_code == EXIT_OK and report.status == "warn"


def test_a_task_with_signal_passes(tiny_model_dir):
    """A reward that differs between responses (their length's parity) gives GRPO groups with variance."""
    report = check("LLMMath-v0", tiny_model_dir, grpo_iterations=2, reward_fn=_pays(lambda r, a: len(r) % 2))
    result = by_name(report)["grpo_run"]
    assert result.status == "pass" and result.data["zero_std_fraction"] < 0.9, result


# ----------------------------------------------------------------------------- the command line
def test_check_command_prints_the_table_and_writes_json(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "check.json"
    code = agents.cli.main(["check", "LLMMath-v0", "--model", str(tiny_model_dir), "--device", "cpu",
                            "--env-kwargs", json.dumps(FAST), "--grpo-iterations", "1", "--n-prompts", "2",
                            "--group-size", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "probe_empty_answer" in printed and "reward 0 vs a wrong answer 0" in printed
    data = json.loads(out.read_text())
    (env,) = data["envs"]
    assert data["exit_code"] == 0 and env["env_id"] == "LLMMath-v0" and env["exit_code"] == 0
    assert {c["name"] for c in env["checks"]} >= {"sb3_check_env", "probe_gold_twice", "grpo_run"}
    assert {"name", "kind", "status", "detail", "data"} == set(env["checks"][0])


def test_check_all_skips_envs_that_need_arguments(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import agents.cli.check as cli_check

    monkeypatch.setattr(cli_check, "known_env_ids", lambda: ("LLMMath-v0", "LLMOpenEnv-v0"))
    out = tmp_path / "all.json"
    code = agents.cli.main(["check", "--all", "--model", str(tiny_model_dir), "--device", "cpu",
                            "--grpo-iterations", "0", "--out", str(out)])
    assert code == 0
    envs = {e["env_id"]: e for e in json.loads(out.read_text())["envs"]}
    assert envs["LLMOpenEnv-v0"]["status"] == "skip" and "base_url" in envs["LLMOpenEnv-v0"]["skipped"]
    assert envs["LLMMath-v0"]["status"] in ("pass", "warn")
    assert "summary" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["NoSuchEnv-v0"], "unknown env id 'NoSuchEnv-v0'. Known: LLMMath-v0"),
    ([], "give one ENV_ID or --all"),
    (["LLMMath-v0", "--all"], "give one ENV_ID or --all"),
    (["LLMMath-v0", "--env-kwargs", "[1]"], "--env-kwargs must be a JSON object"),
    (["LLMMath-v0", "--env-kwargs", '{"no_such_keyword": 1}'], "does not take --env-kwargs (no_such_keyword=)"),
    (["LLMMath-v0", "--repeats", "1"], "argument --repeats: must be an integer >= 2"),
])
def test_check_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        agents.cli.main(["check", *argv])
    assert done.value.code == 2
    assert message in capsys.readouterr().err
