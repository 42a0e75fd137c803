"""TrainingDoctor: each condition warns once at the expected iteration; healthy runs stay quiet."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.common.doctor import (
    KINDS,
    STREAK_KINDS,
    DoctorConfig,
    TrainingDoctor,
    TrainingDoctorWarning,
    make_doctor,
)


def healthy(i: int) -> dict[str, float]:
    """Iteration ``i``'s metrics of a healthy run: every key, all values comfortably inside the thresholds."""
    return {
        "rollout/zero_std_groups": 0.5 if i % 2 else 0.0,
        "rollout/accuracy": 0.3 + 0.01 * i,
        "rollout/ep_rew_mean": 0.35 + 0.01 * i,
        "rollout/reward/accuracy": 0.3 + 0.01 * i,
        "rollout/reward/format": 0.05,
        "rollout/truncated_fraction": 0.1,
        "rollout/response_length": 40.0,
        "train/entropy": 1.2 - 0.01 * i,
        "train/kl": 0.001 * i,
        "train/approx_kl": 0.005,
        "train/clip_fraction": 0.05,
        "train/grad_norm": 0.5 + 0.05 * (i % 3),
        "train/policy_loss": -0.01,
    }


def run(doctor: TrainingDoctor, sequence: list[dict], start: int = 1) -> dict[int, list[str]]:
    """Feed ``sequence`` (iterations ``start``...); returns iteration -> kinds warned there (UserWarnings
    recorded and checked against the returned messages)."""
    raised = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, metrics in enumerate(sequence, start):
            messages = doctor.update(metrics, i)
            if messages:
                raised[i] = [re.search(r"\[(\w+)\]", m).group(1) for m in messages]
    emitted = [w for w in caught if issubclass(w.category, TrainingDoctorWarning)]
    assert all(issubclass(w.category, UserWarning) for w in emitted)
    assert len(emitted) == sum(len(kinds) for kinds in raised.values())
    return raised


def with_key(n: int, key: str, values: list[float] | float) -> list[dict]:
    """``n`` healthy iterations where ``key`` takes ``values`` (one per iteration, or a constant)."""
    values = values if isinstance(values, list) else [values] * n
    return [healthy(i) | {key: v} for i, v in zip(range(1, n + 1), values, strict=True)]


def test_healthy_run_is_quiet():
    doctor = TrainingDoctor()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingDoctorWarning)
        assert run(doctor, [healthy(i) for i in range(1, 61)]) == {}
    assert doctor.counters == {"doctor/warnings": 0.0, **{f"doctor/{k}": 0.0 for k in KINDS},
                               **{f"doctor/{k}_streak": 0.0 for k in STREAK_KINDS}}


# ---------------------------------------------------------------------- zero variance
def test_zero_variance_warns_once_after_k_rollouts_with_counters():
    doctor = TrainingDoctor()
    assert run(doctor, with_key(6, "rollout/zero_std_groups", 1.0)) == {3: ["zero_variance"]}
    assert doctor.counters["doctor/zero_variance"] == 4.0  # iterations 3, 4, 5, 6
    assert doctor.counters["doctor/zero_variance_streak"] == 6.0
    assert doctor.counters["doctor/warnings"] == 1.0
    assert doctor.warned == {"zero_variance": 3}


def test_zero_variance_streak_resets_on_a_mixed_rollout():
    doctor = TrainingDoctor()
    values = [1.0, 1.0, 0.75, 1.0, 1.0, 1.0]
    assert run(doctor, with_key(6, "rollout/zero_std_groups", values)) == {6: ["zero_variance"]}
    assert doctor.counters["doctor/zero_variance"] == 1.0


def test_zero_variance_does_not_apply_to_one_response_per_prompt():
    """PPO (group_size=1): every "group" has std 0 by construction, so rollout/zero_std_groups is always 1.0;
    that is no warning, no count and no streak. With G = 2, or G unknown, the same metrics warn at iteration 3."""
    sequence = with_key(6, "rollout/zero_std_groups", 1.0)
    doctor = TrainingDoctor()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingDoctorWarning)
        for i, metrics in enumerate(sequence, 1):
            assert doctor.update(metrics, i, group_size=1) == []
    assert doctor.counters["doctor/zero_variance"] == doctor.counters["doctor/zero_variance_streak"] == 0.0
    for group_size in (2, None):
        doctor = TrainingDoctor()
        raised = {}
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            for i, metrics in enumerate(sequence, 1):
                if messages := doctor.update(metrics, i, group_size=group_size):
                    raised[i] = messages
        assert list(raised) == [3] and "[zero_variance]" in raised[3][0]
        assert doctor.counters["doctor/zero_variance"] == 4.0  # iterations 3, 4, 5, 6


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_update_rejects_a_bad_group_size(bad):
    with pytest.raises(ValueError, match=r"group_size must be an int >= 1"):
        TrainingDoctor().update({}, 1, group_size=bad)


@pytest.mark.parametrize(("estimator", "group_size", "expected"), [
    ("grpo", 1, 1), ("grpo", 4, 4), ("rloo", 4, 4), ("reinforce_plus_plus_baseline", 4, 4),
    ("gae", 2, 1), ("rft", 4, 1), ("reinforce_plus_plus", 4, 1)])
def test_learn_loop_passes_the_config_group_size(estimator, group_size, expected):
    """The learn loop gives the doctor its config's group_size (so PPO's G = 1 reaches the check), and 1 for
    estimators without a group baseline (GAE, RFT, REINFORCE++ learn from a group of equal rewards)."""
    from types import SimpleNamespace

    from agents.common.loop import LearnLoop

    seen = {}
    fake = SimpleNamespace(_rollout_stats={"rollout/zero_std_groups": 1.0}, _train_stats={}, ep_info_buffer=[],
                           config=SimpleNamespace(group_size=group_size, advantage_estimator=estimator),
                           doctor=SimpleNamespace(update=lambda metrics, iteration, **kw: seen.update(kw)))
    LearnLoop._consult_doctor(fake, 1)
    assert seen == {"group_size": expected}


def test_zero_variance_message_says_loss_is_zero_and_the_fixes():
    doctor = TrainingDoctor(DoctorConfig(zero_std_patience=1))
    metrics = healthy(1) | {"rollout/zero_std_groups": 1.0, "rollout/accuracy": 0.0}
    with pytest.warns(UserWarning, match=r"loss is 0 because every group's rewards are equal") as record:
        doctor.update(metrics, 1)
    message = str(record[0].message)
    for text in ("rollout/zero_std_groups = 1.00", "too hard", "group_size", "temperature", "dynamic_sampling",
                 "curriculum", "TRL #3857", "docs/troubleshooting.md"):
        assert text in message


# ---------------------------------------------------------------------- entropy collapse
def test_entropy_below_floor_warns_after_patience():
    doctor = TrainingDoctor()
    values = [1.0, 0.9, 0.02, 0.02, 0.01, 0.01]
    assert run(doctor, with_key(6, "train/entropy", values)) == {4: ["entropy_collapse"]}
    assert doctor.counters["doctor/entropy_collapse"] == 3.0
    assert doctor.counters["doctor/entropy_collapse_streak"] == 4.0


def test_entropy_below_fraction_of_first_value_warns():
    doctor = TrainingDoctor()
    values = [2.0, 1.5, 0.19, 0.15]  # 0.1 x 2.0 = 0.2, both above the 0.03 floor
    raised = run(doctor, with_key(4, "train/entropy", values))
    assert raised == {4: ["entropy_collapse"]}


def test_entropy_message_has_the_numbers():
    doctor = TrainingDoctor(DoctorConfig(entropy_patience=1))
    doctor.update({"train/entropy": 2.0}, 1)
    with pytest.warns(UserWarning, match=r"train/entropy = 0\.1000 nats/token \(first value 2\.0000\)") as rec:
        doctor.update({"train/entropy": 0.1}, 2)
    assert "clip_range_high=0.28" in str(rec[0].message)
    assert "verl #5953" in str(rec[0].message)


# ---------------------------------------------------------------------- KL explosion
def test_kl_above_threshold_warns_at_once_and_once():
    doctor = TrainingDoctor()
    values = [0.01, 0.02, 1.5, 3.0, 6.0]
    assert run(doctor, with_key(5, "train/kl", values)) == {3: ["kl_explosion"]}
    assert doctor.counters["doctor/kl_explosion"] == 3.0


def test_approx_kl_above_threshold_warns():
    doctor = TrainingDoctor()
    assert run(doctor, with_key(3, "train/approx_kl", [0.01, 0.2, 0.3])) == {2: ["kl_explosion"]}


def test_kl_growth_over_the_window_warns():
    doctor = TrainingDoctor()
    values = [0.01, 0.015, 0.02, 0.04, 0.08, 0.15]  # x15 over 5 updates, and 0.15 >= kl_growth_min
    assert run(doctor, with_key(6, "train/kl", values)) == {6: ["kl_explosion"]}
    assert doctor.counters["doctor/kl_explosion"] == 1.0


def test_kl_growth_needs_the_minimum_and_the_factor():
    small = [0.0001, 0.0002, 0.0004, 0.001, 0.002, 0.005]  # x50 but below kl_growth_min
    slow = [0.1, 0.12, 0.15, 0.2, 0.3, 0.5]  # above the minimum but only x5
    assert run(TrainingDoctor(), with_key(6, "train/kl", small)) == {}
    assert run(TrainingDoctor(), with_key(6, "train/kl", slow)) == {}


def test_kl_message_names_what_was_seen():
    doctor = TrainingDoctor()
    with pytest.warns(UserWarning, match=r"train/kl = 2\.5 nats/token > kl_max=1\.0") as rec:
        doctor.update({"train/kl": 2.5}, 7)
    assert "at iteration 7" in str(rec[0].message)
    assert "target_kl" in str(rec[0].message)


# ---------------------------------------------------------------------- truncation
def test_truncated_fraction_above_half_for_k_rollouts_warns():
    doctor = TrainingDoctor()
    values = [0.6, 0.7, 0.5, 0.6, 0.6, 0.6, 0.9]  # 0.5 is not above 0.5: the streak restarts
    assert run(doctor, with_key(7, "rollout/truncated_fraction", values)) == {6: ["truncation"]}
    assert doctor.counters["doctor/truncation"] == 2.0
    assert doctor.counters["doctor/truncation_streak"] == 4.0


def test_truncation_message_suggests_max_new_tokens():
    doctor = TrainingDoctor(DoctorConfig(truncated_patience=1))
    with pytest.warns(UserWarning, match=r"rollout/truncated_fraction = 0\.80") as rec:
        doctor.update({"rollout/truncated_fraction": 0.8}, 1)
    for text in ("max_new_tokens", "overlong", "format"):
        assert text in str(rec[0].message)


# ---------------------------------------------------------------------- clip fraction
def test_clip_fraction_persistently_high_warns():
    doctor = TrainingDoctor()
    assert run(doctor, with_key(5, "train/clip_fraction", 0.4)) == {3: ["high_clip_fraction"]}
    assert doctor.counters["doctor/high_clip_fraction"] == 3.0


def test_clip_fraction_threshold_is_configurable_for_gspo():
    doctor = TrainingDoctor(DoctorConfig(clip_fraction_max=0.9))
    assert run(doctor, with_key(5, "train/clip_fraction", 0.6)) == {}
    with pytest.warns(UserWarning, match="GSPO"):
        TrainingDoctor(DoctorConfig(clip_fraction_patience=1)).update({"train/clip_fraction": 0.6}, 1)


# ---------------------------------------------------------------------- gradient-norm spike
def test_grad_norm_spike_warns_once_and_counts_each_spike():
    doctor = TrainingDoctor()
    values = [0.5, 0.55, 0.6, 0.5, 0.55, 0.6, 0.5, 9.0, 0.55, 12.0, 0.6]
    assert run(doctor, with_key(11, "train/grad_norm", values)) == {8: ["grad_norm_spike"]}
    assert doctor.counters["doctor/grad_norm_spike"] == 2.0


def test_grad_norm_short_history_needs_factor_squared_and_regimes_do_not_mix():
    """Before 5 known norms only a jump above 10**2 = 100x the largest known norm warns (50 = 100 x 0.5 does
    not, 50.5 does); a KL-only rollout's tiny norms are not the baseline of the next informative update."""
    doctor = TrainingDoctor()
    assert run(doctor, with_key(4, "train/grad_norm", [0.5, 0.5, 0.5, 50.0])) == {}  # exactly 100x: not above
    doctor = TrainingDoctor()
    assert run(doctor, with_key(4, "train/grad_norm", [0.5, 0.5, 0.5, 50.5])) == {4: ["grad_norm_spike"]}
    kl_only = [healthy(i) | {"rollout/zero_std_groups": 1.0, "train/grad_norm": 0.001} for i in range(1, 3)]
    doctor = TrainingDoctor(DoctorConfig(zero_std_patience=100, grad_norm_min_history=1))
    assert run(doctor, [*kl_only, healthy(3) | {"train/grad_norm": 0.5}]) == {}


# Issue 27: a 1000x spike gave no warning when every group's rewards were equal (the check skipped the whole
# KL-only regime, and PPO's group_size=1 is always "all equal") or in the first 5 updates.
@settings(max_examples=200, deadline=None)
@given(base=st.floats(1e-3, 1e3), n_before=st.integers(1, 30), zero_std=st.sampled_from([0.0, 0.5, 1.0]),
       group_size=st.sampled_from([None, 1, 2, 8]), noise=st.lists(st.floats(0.8, 1.2), min_size=30, max_size=30))
def test_a_1000x_grad_norm_spike_always_warns(base, n_before, zero_std, group_size, noise):
    """Any level, any history length, either regime, any group size: noisy norms (+-20 %) are quiet, and a norm
    1000x the level warns at that update."""
    doctor = TrainingDoctor(DoctorConfig(ignore=("zero_variance",)))
    norms = [base * noise[i] for i in range(n_before)] + [1000.0 * base]
    raised = {}
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for i, norm in enumerate(norms, 1):
            metrics = {"rollout/zero_std_groups": zero_std, "train/grad_norm": norm}
            if messages := doctor.update(metrics, i, group_size=group_size):
                raised[i] = [re.search(r"\[(\w+)\]", m).group(1) for m in messages]
    assert raised == {len(norms): ["grad_norm_spike"]}


def test_growing_kl_only_gradient_below_grad_norm_min_is_quiet():
    """The seeded tiny GRPO runs: every reward equal, the KL gradient grows from exactly 0 (policy = reference):
    0 -> 4.2e-6 -> 0.0176 is a 4000x jump, but below grad_norm_min=0.1 it is not a spike; 0.2 after it is."""
    sequence = [{"rollout/zero_std_groups": 1.0, "train/grad_norm": v} for v in (0.0, 4.2e-6, 0.0176)]
    assert run(TrainingDoctor(DoctorConfig(ignore=("zero_variance",))), sequence) == {}
    doctor = TrainingDoctor(DoctorConfig(ignore=("zero_variance",), grad_norm_min=0.001))
    assert run(doctor, sequence) == {3: ["grad_norm_spike"]}  # 0.0176 > 100 x 4.2e-6


def test_kl_only_spike_message_names_the_regime():
    doctor = TrainingDoctor(DoctorConfig(ignore=("zero_variance",)))
    for i in range(1, 6):
        doctor.update({"rollout/zero_std_groups": 1.0, "train/grad_norm": 0.01}, i, group_size=4)
    with pytest.warns(UserWarning, match=r"train/grad_norm = 10 is 1000\.0x the running median 0\.01 of the last 5 "
                                         r"KL-only updates"):
        doctor.update({"rollout/zero_std_groups": 1.0, "train/grad_norm": 10.0}, 6, group_size=4)


def test_grad_norm_message_has_median_and_factor():
    doctor = TrainingDoctor()
    for i in range(1, 6):
        doctor.update({"train/grad_norm": 1.0}, i)
    with pytest.warns(UserWarning, match=r"train/grad_norm = 20 is 20\.0x the running median 1 "):
        doctor.update({"train/grad_norm": 20.0}, 6)


# ---------------------------------------------------------------------- reward hacking
def hacking_sequence(n_flat: int = 5, n_hack: int = 5, rise: float = 0.2, drop: float = 0.2) -> list[dict]:
    rewards = [0.8, 0.82, 0.78, 0.8, 0.8][:n_flat] + [0.8 + rise] * n_hack
    accuracy = [0.6, 0.58, 0.62, 0.6, 0.6][:n_flat] + [0.6 - drop] * n_hack
    return [healthy(i) | {"rollout/ep_rew_mean": r, "rollout/accuracy": a}
            for i, (r, a) in enumerate(zip(rewards, accuracy, strict=True), 1)]


def test_reward_up_accuracy_down_warns_when_the_windows_are_full():
    doctor = TrainingDoctor()
    assert run(doctor, hacking_sequence(n_hack=8)) == {10: ["reward_hacking"]}
    assert doctor.counters["doctor/reward_hacking"] == 4.0  # iterations 10-13; window shifts keep it true


def test_reward_hacking_needs_the_minimum_effect_on_both():
    assert run(TrainingDoctor(), hacking_sequence(drop=0.02)) == {}
    assert run(TrainingDoctor(), hacking_sequence(rise=0.01)) == {}
    assert run(TrainingDoctor(), hacking_sequence(rise=0.2, drop=-0.2)) == {}  # both rise: learning


def test_reward_hacking_message_and_configurable_keys():
    config = DoctorConfig(hack_window=2, hack_accuracy_key="rollout/reward/accuracy")
    doctor = TrainingDoctor(config)
    sequence = [{"rollout/ep_rew_mean": r, "rollout/reward/accuracy": a}
                for r, a in [(1.0, 0.5), (1.0, 0.5), (1.5, 0.2), (1.5, 0.2)]]
    assert run(doctor, sequence[:3]) == {}
    with pytest.warns(UserWarning, match=r"rollout/ep_rew_mean rose by 0\.500 .* rollout/reward/accuracy fell by "
                                         r"0\.300"):
        assert len(doctor.update(sequence[3], 4)) == 1


# ---------------------------------------------------------------------- configuration
def test_thresholds_are_configurable():
    assert run(TrainingDoctor(DoctorConfig(zero_std_patience=1)),
               with_key(3, "rollout/zero_std_groups", 1.0)) == {1: ["zero_variance"]}
    assert run(TrainingDoctor(DoctorConfig(zero_std_fraction=0.75)),
               with_key(3, "rollout/zero_std_groups", 0.8)) == {3: ["zero_variance"]}
    assert run(TrainingDoctor(DoctorConfig(truncated_max=0.7)), with_key(5, "rollout/truncated_fraction", 0.6)) == {}
    assert run(TrainingDoctor(DoctorConfig(kl_max=5.0)), with_key(2, "train/kl", [0.01, 2.0])) == {}
    assert run(TrainingDoctor(DoctorConfig(entropy_floor=0.5, entropy_patience=1)),
               with_key(2, "train/entropy", [0.6, 0.4])) == {2: ["entropy_collapse"]}
    assert run(TrainingDoctor(DoctorConfig(grad_norm_factor=100.0)),
               with_key(8, "train/grad_norm", [0.5] * 7 + [9.0])) == {}


def test_ignore_silences_one_kind():
    doctor = TrainingDoctor(DoctorConfig(ignore=("zero_variance",)))
    sequence = [m | {"rollout/truncated_fraction": 0.9} for m in with_key(4, "rollout/zero_std_groups", 1.0)]
    assert run(doctor, sequence) == {3: ["truncation"]}
    assert doctor.counters["doctor/zero_variance"] == 0.0


@pytest.mark.parametrize(("field", "value"), [
    ("zero_std_patience", 0), ("zero_std_patience", 2.5), ("entropy_floor", -1.0), ("kl_max", math.nan),
    ("truncated_max", 1.5), ("clip_fraction_max", 0.0), ("grad_norm_factor", 1.0), ("kl_growth_factor", math.inf),
    ("hack_window", True), ("ignore", ("no_such_kind",)), ("grad_norm_min_history", 50), ("grad_norm_min", 0.0),
])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        DoctorConfig(**{field: value})


def test_config_dict_round_trip():
    config = DoctorConfig(kl_max=2.0, ignore=("reward_hacking",))
    data = json.loads(json.dumps(config.to_dict()))
    assert DoctorConfig.from_dict(data) == config


# ---------------------------------------------------------------------- missing keys, disabled
def test_missing_and_non_finite_values_are_ignored():
    doctor = TrainingDoctor(DoctorConfig(zero_std_patience=1, kl_max=0.5))
    junk = [{}, {"train/kl": math.nan}, {"train/kl": math.inf}, {"train/kl": None}, {"train/kl": "high"},
            {"rollout/accuracy": math.nan, "rollout/ep_rew_mean": 3.0}]
    assert run(doctor, junk) == {}
    assert doctor.counters["doctor/warnings"] == 0.0


def test_missing_key_keeps_the_streak():
    doctor = TrainingDoctor()
    sequence = [{"rollout/zero_std_groups": 1.0}, {}, {"rollout/zero_std_groups": 1.0},
                {"train/kl": 0.01}, {"rollout/zero_std_groups": 1.0}]
    assert run(doctor, sequence) == {5: ["zero_variance"]}


def test_disabled_doctor_is_silent_and_has_no_counters():
    doctor = TrainingDoctor(enabled=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i, metrics in enumerate(with_key(10, "rollout/zero_std_groups", 1.0), 1):
            assert doctor.update(metrics | {"train/kl": 50.0}, i) == []
    assert doctor.counters == {}


def test_make_doctor_accepts_the_constructor_values():
    assert make_doctor(True).enabled and make_doctor(None).enabled
    assert not make_doctor(False).enabled
    config = DoctorConfig(kl_max=3.0)
    assert make_doctor(config).config is config
    doctor = TrainingDoctor()
    assert make_doctor(doctor) is doctor
    with pytest.raises(TypeError, match="doctor must be"):
        make_doctor("yes")


# ---------------------------------------------------------------------- state
def every_condition() -> list[dict]:
    """Thirty iterations in which every kind of warning fires at some point."""
    sequence = [healthy(i) for i in range(1, 31)]
    for i in range(3, 8):
        sequence[i]["rollout/zero_std_groups"] = 1.0
    for i in range(8, 13):
        sequence[i]["rollout/truncated_fraction"] = 0.8
        sequence[i]["train/clip_fraction"] = 0.5
    sequence[14]["train/grad_norm"] = 20.0
    sequence[16]["train/kl"] = 4.0
    for i in range(17, 21):
        sequence[i]["train/entropy"] = 0.01
    for i in range(20, 30):
        sequence[i]["rollout/ep_rew_mean"] = 2.0
        sequence[i]["rollout/accuracy"] = 0.05
    return sequence


def test_every_condition_sequence_warns_each_kind_once():
    doctor = TrainingDoctor()
    raised = run(doctor, every_condition())
    assert sorted(k for kinds in raised.values() for k in kinds) == sorted(KINDS)
    assert doctor.counters["doctor/warnings"] == len(KINDS)


@pytest.mark.parametrize("split", [1, 6, 12, 19, 25])
def test_state_round_trip_resumes_exactly(split):
    sequence = every_condition()
    reference = TrainingDoctor()
    expected = run(reference, sequence)
    first = TrainingDoctor()
    before = run(first, sequence[:split])
    state = json.loads(json.dumps(first.state_dict()))  # plain JSON data
    resumed = TrainingDoctor()
    resumed.load_state_dict(state)
    assert resumed.state_dict() == first.state_dict()
    after = run(resumed, sequence[split:], start=split + 1)
    assert before | after == expected
    assert resumed.counters == reference.counters
    assert resumed.state_dict() == reference.state_dict()


def test_load_state_dict_restores_the_config_and_keeps_enabled():
    source = TrainingDoctor(DoctorConfig(kl_max=2.0))
    target = TrainingDoctor(enabled=False)
    target.load_state_dict(source.state_dict())
    assert target.config.kl_max == 2.0
    assert not target.enabled


def test_load_state_dict_rejects_bad_state():
    state = TrainingDoctor().state_dict()
    with pytest.raises(ValueError, match="version"):
        TrainingDoctor().load_state_dict(state | {"version": 99})
    with pytest.raises(ValueError, match="unknown kinds"):
        TrainingDoctor().load_state_dict(state | {"counts": {"bogus": 1}})


# ---------------------------------------------------------------------- docs
def test_troubleshooting_documents_every_kind_field_and_counter():
    text = (Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md").read_text()
    for kind in KINDS:
        assert f"(`{kind}`)" in text, kind  # its section
    for field in DoctorConfig().to_dict():
        assert f"| `{field}` |" in text, field  # its row in the thresholds table
    for key in TrainingDoctor().counters:
        assert f"| `{key}` |" in text, key  # its row in the counters table


# ----------------------------------------------------------------------------- wired into learn()
@pytest.mark.usefixtures("one_thread")
def test_learn_consults_the_doctor_and_logs_its_counters(make_env, tmp_path):
    from stable_baselines3.common.logger import configure

    from agents import GRPO

    def constant(prompts, responses, answers, **fields):
        return [1.0] * len(responses)  # every group has equal rewards: the loss is 0

    model = GRPO("LLMPolicy", make_env(reward_fn=constant), n_prompts=1, group_size=2, beta=0.0, device="cpu",
                 doctor=DoctorConfig(zero_std_patience=2))
    model.set_logger(configure(str(tmp_path), ["csv"]))
    with pytest.warns(TrainingDoctorWarning, match=r"\[zero_variance\] at iteration 2"):
        model.learn(6)
    rows = (tmp_path / "progress.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    assert float(last[header.index("doctor/zero_variance")]) == 2.0  # iterations 2 and 3 met the condition
    quiet = GRPO("LLMPolicy", make_env(reward_fn=constant), n_prompts=1, group_size=2, beta=0.0, device="cpu",
                 doctor=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingDoctorWarning)
        quiet.learn(6)
    assert quiet.doctor.counters == {}
