"""grounded_arithmetic_step_reward: the reward hacks of the plain step checker earn nothing; hand-made chains."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llm_gym
from llm_gym.rewards import (
    arithmetic_step_reward,
    classify_arithmetic_steps,
    grounded_arithmetic_step_reward,
    math_answer_reward,
)

Q = "<|im_start|>user\nWhat is 4 + 10 + 10?\nPut your final answer within \\boxed{}.<|im_end|>\n"


def grounded(steps, answer="24", prompt=Q, **kwargs):
    return grounded_arithmetic_step_reward([prompt], [steps], [answer], **kwargs)[0]


def test_exported_from_the_package():
    assert llm_gym.rewards.grounded_arithmetic_step_reward is grounded_arithmetic_step_reward


def test_first_step_and_stop_hack_is_penalised_where_the_plain_checker_paid():
    # The +1/0 run's hack: one true equation as the whole answer to a two-step question.
    assert arithmetic_step_reward([Q], [["4 + 10 = 14"]], ["24"]) == [[1.0]]
    assert grounded(["4 + 10 = 14"]) == [-1.0]


def test_prose_without_equations_is_scored_only_by_its_answer():
    # The 0/-1 run's hack: no checkable equation. Prose steps get None; the last step carries the verdict.
    assert grounded(["First, you add 10 to 4, which results in 4.", "So the answer is 4."]) == [None, -1.0]
    assert grounded(["First add the numbers.", "The answer is \\boxed{24}."]) == [None, 1.0]


def test_correct_grounded_chain_earns_every_step():
    assert grounded(["4 + 10 = 14", "14 + 10 = 24", "The answer is \\boxed{24}."]) == [1.0, 1.0, 1.0]
    assert grounded(["4 + 10 + 10 = 24"]) == [1.0]  # one step straight from the question


def test_chain_that_stops_short_or_slips_gets_no_positive_credit():
    assert grounded(["4 + 10 = 14", "So the answer is 14."]) == [0.0, -1.0]
    assert grounded(["4 + 10 = 14", "14 + 10 = 25"]) == [0.0, -1.0]


def test_unrelated_true_equation_and_restatement_are_penalised():
    assert grounded(["2 + 2 = 4", "4 + 10 + 10 = 24"]) == [-1.0, 1.0]  # 2 is not in the question
    assert grounded(["4 + 10 = 14", "4 + 10 = 14", "14 + 10 = 24"]) == [1.0, -1.0, 1.0]  # said before
    assert grounded(["24 = 24", "4 + 10 + 10 = 24"]) == [-1.0, 1.0]  # a bare number computes nothing
    assert classify_arithmetic_steps(Q, ["4 + 10 + 10 = 4 + 10 + 10 = 4 + 10 + 10"]) == ["restatement"]


def test_results_are_available_only_after_they_are_computed():
    # 14 is used before it is derived: ungrounded; the later derivation does not make it grounded.
    assert classify_arithmetic_steps(Q, ["14 + 10 = 24", "4 + 10 = 14"]) == ["ungrounded", "grounded"]
    # Inside one step, a chain's intermediate results may be used by the next equation.
    assert classify_arithmetic_steps("What is 3 + 4 * 2?", ["4 * 2 = 8, then 3 + 8 = 11"]) == ["grounded"]
    assert classify_arithmetic_steps("What is 3 + 4 * 2?", ["3 + 4 * 2 = 3 + 8 = 11"]) == ["grounded"]


def test_level_three_product_chain_and_a_wrong_product():
    prompt = "What is 11 * 4 * 10?"
    assert grounded(["11 * 4 = 44", "44 * 10 = 440"], "440", prompt) == [1.0, 1.0]
    assert classify_arithmetic_steps(prompt, ["11 * 4 = 42", "42 * 10 = 420"]) == ["false", "ungrounded"]
    assert grounded(["11 * 4 = 42", "42 * 10 = 420"], "440", prompt) == [-1.0, -1.0]


def test_penalty_and_reward_are_configurable():
    assert grounded(["2 + 2 = 4", "4 + 10 + 10 = 24"], penalty=-0.25, reward=2.0) == [-0.25, 2.0]
    assert grounded(["4 + 10 = 14"], penalty=0.0) == [0.0]


def test_last_step_with_a_wrong_equation_is_penalised_even_with_the_right_answer():
    assert grounded(["4 + 10 + 10 = 24", "24 + 1 = 24"]) == [1.0, -1.0]


def test_bad_settings_and_counts_name_the_fix():
    with pytest.raises(ValueError, match="reward > 0 >= penalty"):
        grounded(["4 + 10 = 14"], penalty=0.5)
    with pytest.raises(ValueError, match="one entry per response"):
        grounded_arithmetic_step_reward([Q, Q], [["4 + 10 = 14"]], ["24", "24"])


_term = st.integers(1, 12).map(str)
_step = st.builds(lambda a, op, b, c: f"{a} {op} {b} = {c}", _term, st.sampled_from("+-*"), _term,
                  st.integers(0, 150)) | st.sampled_from(["Let me think.", "Add them up.", "\\boxed{7}"])


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(_step, min_size=1, max_size=5), answer=st.integers(0, 150))
def test_no_positive_credit_unless_the_answer_is_correct(steps, answer):
    values = grounded(steps, str(answer), "What is 3 + 4 * 5?")
    assert len(values) == len(steps) and values[-1] is not None
    correct = math_answer_reward([""], ["\n".join(steps)], [str(answer)])[0] == 1.0
    if not correct:  # a wrong answer: nothing is paid, and the last step is penalised
        assert all(v is None or v <= 0 for v in values) and values[-1] == -1.0
    kinds = classify_arithmetic_steps("What is 3 + 4 * 5?", steps)
    assert all((v is None) == (k == "prose") for v, k in zip(values[:-1], kinds[:-1], strict=True))
