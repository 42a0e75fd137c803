"""Process supervision primitives: step splitting with token indices, the arithmetic step checker, validation."""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import pytest

from llm_gym.rewards import RewardFunctionError
from llm_gym.rewards.arithmetic import arithmetic_step_reward, check_arithmetic_step
from llm_gym.rewards.process import call_process_reward_fn
from llm_gym.rewards.steps import IncrementalDecoder, Step, split_steps, token_texts
from llm_gym.tasks import get_problems


class ByteTokenizer:
    """A byte-level fake tokenizer: each id is a byte string, decoded as UTF-8 (``errors="replace"``).

    Like SmolLM2's BPE, one token can hold several characters (``".\\n\\n"``) or half a character.
    """

    def __init__(self, pieces: dict[int, bytes], special: frozenset[int] = frozenset()):
        self.pieces, self.special = pieces, special

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=False):
        kept = [i for i in ids if not (skip_special_tokens and i in self.special)]
        return b"".join(self.pieces[i] for i in kept).decode("utf-8", errors="replace")


EOS = 9
FAKE = ByteTokenizer({0: b"Hello", 1: b".\n\n", 2: b"World", 3: b".", 4: b"\n", 5: b"\xc3", 6: b"\xbc",
                      7: b" ok", EOS: b"<eos>"}, special=frozenset({EOS}))


def char_ids(lm, text: str, eos: bool = True) -> list[int]:
    """Ids of ``text`` with the tiny model's character tokenizer (one token per character), then EOS."""
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per character: indices below are character positions
    return ids + ([lm.eos_token_id] if eos else [])


# ----------------------------------------------------------------------------------- split_steps
def test_split_steps_maps_each_step_to_its_newline_token_with_the_real_tokenizer(tiny_lm):
    text = "3 + 4 = 7\n\n7 * 2 = 14\nSo \\boxed{14}"
    # "3 + 4 = 7" is chars 0-8, its "\n" 9, a blank line "\n" 10, "7 * 2 = 14" 11-20, "\n" 21,
    # "So \boxed{14}" 22-34 and the EOS token 35: the final step ends on the EOS.
    ids = char_ids(tiny_lm, text)
    assert len(ids) == 36
    assert split_steps(ids, tiny_lm.tokenizer) == [
        Step("3 + 4 = 7", 9), Step("7 * 2 = 14", 21), Step("So \\boxed{14}", 35)]
    # unfinished response: the last segment is not a step yet
    assert split_steps(ids[:30], tiny_lm.tokenizer, final=False) == [Step("3 + 4 = 7", 9), Step("7 * 2 = 14", 21)]
    # a two-character delimiter ends at its second character; lines inside a paragraph stay together
    assert split_steps(ids, tiny_lm.tokenizer, delimiter="\n\n") == [
        Step("3 + 4 = 7", 10), Step("7 * 2 = 14\nSo \\boxed{14}", 35)]
    assert split_steps(np.array(ids), tiny_lm.tokenizer) == split_steps(ids, tiny_lm.tokenizer)


def test_split_steps_trailing_eos_blank_lines_and_no_delimiter(tiny_lm):
    tok = tiny_lm.tokenizer
    assert split_steps(char_ids(tiny_lm, "3+4=7"), tok) == [Step("3+4=7", 5)]  # ends on the EOS (index 5)
    assert split_steps(char_ids(tiny_lm, "3+4=7", eos=False), tok) == [Step("3+4=7", 4)]  # truncated: last token
    assert split_steps(char_ids(tiny_lm, "So 7"), tok, final=False) == []  # no delimiter, unfinished: no step
    # "\n\n  \n" are blank lines (chars 0-4), "3+4=7" 5-9 ends at the "\n" 10; " \n" is blank again
    assert split_steps(char_ids(tiny_lm, "\n\n  \n3+4=7\n \n"), tok) == [Step("3+4=7", 10)]
    assert split_steps([tiny_lm.eos_token_id], tok) == [] and split_steps([], tok) == []
    # special tokens are not part of the step text
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    assert split_steps([im_start, *char_ids(tiny_lm, "ab\ncd")], tok) == [Step("ab", 3), Step("cd", 6)]


def test_split_steps_with_a_token_holding_text_and_the_delimiter():
    # "Hello" | ".\n\n" | "World" | "." | EOS: one token carries the full stop and both newlines
    ids = [0, 1, 2, 3, EOS]
    assert token_texts(ids, FAKE) == ["Hello", ".\n\n", "World", ".", ""]
    assert split_steps(ids, FAKE) == [Step("Hello.", 1), Step("World.", 4)]
    assert split_steps(ids, FAKE, delimiter="\n\n") == [Step("Hello.", 1), Step("World.", 4)]
    assert split_steps(ids, FAKE, final=False) == [Step("Hello.", 1)]
    # the delimiter split over two tokens ends on the second: "Hello" "\n" "\n" "World"
    assert split_steps([0, 4, 4, 2], FAKE, delimiter="\n\n") == [Step("Hello", 2), Step("World", 3)]


def test_a_character_split_over_two_tokens_belongs_to_the_token_completing_it():
    ids = [5, 6, 4, 7]  # "\xc3" "\xbc" = "ü", then "\n", " ok"
    assert token_texts(ids, FAKE) == ["", "ü", "\n", " ok"]
    assert split_steps(ids, FAKE) == [Step("ü", 2), Step("ok", 3)]


def test_incremental_decoder_flags_the_tokens_that_end_a_step(tiny_lm):
    decoder = IncrementalDecoder(tiny_lm.tokenizer)
    ends = []
    for i in char_ids(tiny_lm, "a\n\nb\nc"):
        decoder.push(i)
        ends.append(decoder.ends_step("\n"))
    assert ends == [False, True, True, False, True, False, False]
    assert decoder.text == "a\n\nb\nc"
    decoder = IncrementalDecoder(FAKE)
    assert [(decoder.push(i), decoder.ends_step("\n\n")) for i in (0, 4, 4, 1)] == [
        ("Hello", False), ("\n", False), ("\n", True), (".\n\n", True)]


def test_split_steps_errors(tiny_lm):
    with pytest.raises(ValueError, match="delimiter must be a non-empty string"):
        split_steps([5], tiny_lm.tokenizer, delimiter="")
    with pytest.raises(ValueError, match="1-D"):
        split_steps(np.zeros((2, 3), dtype=np.int64), tiny_lm.tokenizer)


# -------------------------------------------------------------------------- arithmetic checker
def test_correct_chain_is_rewarded_at_every_step():
    steps = ["3 + 4 * 2 = 3 + 8 = 11", "11 - 1 = 10", "(2 + 3) * 4 = 5 * 4 = 20"]
    assert arithmetic_step_reward(["p"], [steps], ["20"]) == [[1.0, 1.0, 1.0]]


def test_a_wrong_step_gets_zero_at_exactly_that_step():
    steps = ["3 + 4 = 7", "7 * 2 = 15", "15 - 1 = 14"]
    assert arithmetic_step_reward(["p"], [steps], ["14"]) == [[1.0, 0.0, 1.0]]
    # one wrong link of a chain makes the step wrong: 2 * 3 + 1 = 7 = 6 + 1, but 6 + 1 != 8
    assert check_arithmetic_step("2 * 3 + 1 = 6 + 1 = 8") == 0.0
    assert check_arithmetic_step("3 + 4 = 7 and 7 * 2 = 15") == 0.0
    assert check_arithmetic_step("3 + 4 = 7\n7 * 2 = 15") == 0.0  # a step holding two lines


def test_batch_of_responses_with_different_step_counts():
    out = arithmetic_step_reward(["p", "q"], [["1 + 1 = 2"], ["2 + 2 = 5", "ok", "5 = 5"]], ["2", "5"])
    assert out == [[1.0], [0.0, None, 1.0]]


@pytest.mark.parametrize(("step", "expected"), [
    ("7 / 2 = 3.5", 1.0),
    ("12 / 8 = 3/2", 1.0),
    ("1 / 3 + 1 / 6 = 1 / 2", 1.0),
    ("0.1 + 0.2 = 0.3", 1.0),  # exact decimals, not floats
    ("10 / 3 = 3.33", 0.0),  # a rounded value is not exact
    ("5 / 0 = 0", None),  # undefined: not checkable
])
def test_division_is_exact_with_fractions(step, expected):
    assert check_arithmetic_step(step) == expected


@pytest.mark.parametrize(("step", "expected"), [
    ("\\boxed{7}", None),  # an answer, not an equation
    ("The answer is \\boxed{7}.", None),
    ("$3 + 4 = \\boxed{7}$.", 1.0),
    ("\\boxed{3 + 4 = 8}", 0.0),
    ("So 7 - 0 = \\boxed{7}", 1.0),
])
def test_boxed_lines(step, expected):
    assert check_arithmetic_step(step) == expected


@pytest.mark.parametrize("step", [
    "First, 3 + 4 = 7.", "3+4=7", "-3 + 4 = 1", "3 × 4 = 12", "3 x 4 = 12", "3 \\times 4 = 12",
    "3 \\cdot 4 = 12", "12 ÷ 4 = 3", "\\frac{12}{4} = 3", "1,000 + 2,000 = 3,000", "1. 3 + 4 = 7",
    "**3 + 4 = 7**", "He has 3 + 4 = 7 apples (3 + 4 = 7).", "5 * $2 = $10", "x = 3 + 4 = 7",
    "3 + 4 = 7, so 7 * 2 = 14", "3 − 4 = -1",
])
def test_notation_and_surrounding_words_are_understood(step):
    assert check_arithmetic_step(step) == 1.0


@pytest.mark.parametrize("step", [
    "Let me think.", "", "3 + = 7", "= 7", "x + 3 = 7", "2x + 3 = 7", "y - 3 = 4", "half of 8 = 4",
    "50% of 8 = 4", "3 + 4 == 7", "3 <= 4", "2**3 = 8", "2(3 + 4) = 14", "f(3) = 7", "= 3 hundred",
    "2 * 3 = 6x", "import os; os.system('x') = 0",
])
def test_malformed_or_prose_steps_get_no_opinion(step):
    assert check_arithmetic_step(step) is None


def test_the_task_solutions_are_all_correct_steps():
    problems = get_problems("arithmetic", split="train", n=30, seed=3, difficulty=(3, 4))
    for p in problems:
        lines = p.solution.splitlines()
        assert arithmetic_step_reward([p.question], [lines], [p.answer]) == [[1.0] * len(lines)], p.solution


# --------------------------------------------------------------------------------- validation
def constant_steps(prompts, steps, answers, **fields):
    return [[0.5] * len(s) for s in steps]


def test_call_process_reward_fn_validates_and_passes_fields():
    seen = {}

    def scorer(prompts, steps, answers, **fields):
        seen.update(fields)
        return (np.array([1, 0]), [True, None, np.float32(0.25)])

    out = call_process_reward_fn(scorer, ["p", "q"], [["a", "b"], ["c", "d", "e"]], ["1", "2"], solutions=["s", "t"])
    assert out == [[1.0, 0.0], [1.0, None, 0.25]] and seen == {"solutions": ["s", "t"]}
    assert call_process_reward_fn(constant_steps, ["p"], [[]], ["1"]) == [[]]


def test_wrong_inner_length_names_the_function():
    def bad_inner(prompts, steps, answers, **fields):
        return [[1.0]]

    with pytest.raises(RewardFunctionError, match=r"'bad_inner' returned 1 values for response 0, which has 2 steps"):
        call_process_reward_fn(bad_inner, ["p"], [["a", "b"]], ["1"])


def test_wrong_outer_length_and_type_name_the_function():
    with pytest.raises(RewardFunctionError, match=r"'constant_steps' returned 1 lists; it must return a list of 2"):
        call_process_reward_fn(_truncating(constant_steps), ["p", "q"], [["a"], ["b"]], ["1", "2"])
    with pytest.raises(RewardFunctionError, match=r"'scalar' returned float"):
        call_process_reward_fn(_named("scalar", lambda *a, **k: 1.0), ["p"], [["a"]], ["1"])
    with pytest.raises(RewardFunctionError, match=r"'flat' returned float for response 0"):
        call_process_reward_fn(_named("flat", lambda *a, **k: [1.0]), ["p"], [["a"]], ["1"])


def test_nan_and_non_numbers_name_the_function():
    with pytest.raises(RewardFunctionError, match=r"'nan_fn' returned a non-finite value nan for step 1 of response 0"):
        call_process_reward_fn(_named("nan_fn", lambda *a, **k: [[1.0, math.nan]]), ["p"], [["a", "b"]], ["1"])
    with pytest.raises(RewardFunctionError, match=r"'text_fn' returned 'good'.*real number"):
        call_process_reward_fn(_named("text_fn", lambda *a, **k: [["good"]]), ["p"], [["a"]], ["1"])


def test_exceptions_and_timeouts_are_wrapped_with_the_function_name():
    def crashes(prompts, steps, answers, **fields):
        return 1 / 0

    with pytest.raises(RewardFunctionError, match=r"'crashes' raised ZeroDivisionError.*Fix the function"):
        call_process_reward_fn(crashes, ["p"], [["a"]], ["1"])

    def slow(prompts, steps, answers, **fields):
        time.sleep(0.5)
        return [[1.0]]

    with pytest.raises(RewardFunctionError, match=r"'slow' did not return within timeout=0.05"):
        call_process_reward_fn(slow, ["p"], [["a"]], ["1"], timeout=0.05)
    assert call_process_reward_fn(slow, ["p"], [["a"]], ["1"], timeout=5) == [[1.0]]


def test_caller_errors():
    with pytest.raises(ValueError, match="same length"):
        call_process_reward_fn(constant_steps, ["p"], [["a"], ["b"]], ["1", "2"])


def _named(name, fn):
    fn.__name__ = name
    return fn


def _truncating(fn):
    @functools.wraps(fn)
    def wrapper(prompts, steps, answers, **fields):
        return fn(prompts, steps, answers, **fields)[:1]

    return wrapper


def test_arithmetic_step_penalty_only_penalises_errors():
    from llm_gym.rewards import arithmetic_step_penalty

    steps = [["3 + 4 = 7", "7 * 2 = 15", "The answer is 15"], ["2 + 2 = 4"]]
    assert arithmetic_step_penalty(["p", "p"], steps, ["14", "4"]) == [[0.0, -1.0, None], [0.0]]
