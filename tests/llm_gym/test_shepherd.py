"""Math-Shepherd step labels: hand-worked labels (scripted completer), batching, errors, the tiny model."""

from __future__ import annotations

import math

import pytest
import torch

import llm_gym.decoding
from llm_gym.rewards import RewardFunctionError, math_answer_reward, shepherd_step_labels
from llm_gym.rewards.shepherd import ShepherdLabels, continuation_prefix, step_label_agreement

pytestmark = pytest.mark.usefixtures("one_thread")


class ScriptedCompleter:
    """A fake policy: the j-th continuation of a prefix (by the response so far) is ``script[prefix][j]``.

    Records every call as ``(texts, group_size, max_new_tokens, temperature)``.
    """

    def __init__(self, prompts: list[str], script: dict[str, list[str]]):
        self.prompts, self.script = prompts, script
        self.calls: list[tuple[list[str], int, int, float]] = []
        self.served: dict[str, int] = {}

    def __call__(self, texts, *, group_size, max_new_tokens, temperature):
        self.calls.append((list(texts), group_size, max_new_tokens, temperature))
        out = []
        for text in texts:
            prompt = next(p for p in self.prompts if text.startswith(p))
            so_far = text[len(prompt):]
            j = self.served.get(text, 0)
            self.served[text] = j + 1
            out.append(self.script[so_far][j])
        return out


PROMPTS = ["Q1: 3 * 4 + 2? ", "Q2: 2 + 3? "]
ANSWERS = ["14", "5"]
# Response 0 is wrong (15), response 1 right (5).
STEPS = [["3 * 4 = 12", "12 + 2 = 15", "\\boxed{15}"], ["2 + 3 = 5", "\\boxed{5}"]]
SCRIPT = {
    # step 0 of response 0: continuations 1 and 4 reach 14 -> HE 1, SE 2/4
    "3 * 4 = 12\n": ["12 + 2 = 14\n\\boxed{14}", "\\boxed{15}", "\\boxed{13}", "so \\boxed{14}"],
    # step 1 of response 0: only continuation 3 reaches 14 -> HE 1, SE 1/4
    "3 * 4 = 12\n12 + 2 = 15\n": ["\\boxed{15}", "\\boxed{15}", "oops, \\boxed{14}", "\\boxed{16}"],
    # step 0 of response 1: none reaches 5 -> HE 0, SE 0
    "2 + 3 = 5\n": ["\\boxed{6}", "\\boxed{6}", "\\boxed{4}", "so \\boxed{7}"],
}
# The last steps: response 0 wrong -> 0, response 1 right -> 1.
HARD = [[1.0, 1.0, 0.0], [0.0, 1.0]]
SOFT = [[0.5, 0.25, 0.0], [0.0, 1.0]]


def label(estimation="hard", batch_size=32, **kwargs):
    completer = ScriptedCompleter(PROMPTS, SCRIPT)
    labels = shepherd_step_labels(completer, PROMPTS, STEPS, ANSWERS, k=4, estimation=estimation,
                                  batch_size=batch_size, **kwargs)
    return labels, completer


@pytest.mark.parametrize(("estimation", "expected"), [("hard", HARD), ("soft", SOFT)])
def test_labels_match_the_hand_worked_estimates(estimation, expected):
    labels, completer = label(estimation)
    assert labels == expected
    assert isinstance(labels, ShepherdLabels) and isinstance(labels, list)
    # 3 steps that are not a response's last, k = 4 completions each; the last steps need none.
    assert labels.n_completions == 12 == sum(len(texts) for texts, *_ in completer.calls)
    assert labels.stats["n_completions"] == 12 and labels.n_sampling_calls == 1
    assert labels.completion_tokens is None  # the fake does not count tokens
    # Every prefix is the prompt, the steps so far joined by newlines and a trailing newline, served k times.
    texts = completer.calls[0][0]
    assert texts[:4] == ["Q1: 3 * 4 + 2? 3 * 4 = 12\n"] * 4
    assert texts[4:8] == ["Q1: 3 * 4 + 2? 3 * 4 = 12\n12 + 2 = 15\n"] * 4
    assert texts[8:] == ["Q2: 2 + 3? 2 + 3 = 5\n"] * 4
    assert completer.calls[0][1:] == (4, 64, 0.7)  # group_size = k, default budget and temperature


def test_the_last_step_is_the_responses_own_correctness_without_completions():
    completer = ScriptedCompleter(PROMPTS, {})
    labels = shepherd_step_labels(completer, PROMPTS, [["\\boxed{14}"], ["so \\boxed{4}"]], ANSWERS, k=3)
    assert labels == [[1.0], [0.0]]
    assert labels.n_completions == 0 and completer.calls == [] and labels.n_sampling_calls == 0
    empty = shepherd_step_labels(completer, ["p"], [[]], ["1"])
    assert empty == [[]] and empty.n_completions == 0


@pytest.mark.parametrize(("batch_size", "sizes", "group_size"), [
    (8, [8, 4], 4),      # two whole groups per call, then one
    (6, [4, 4, 4], 4),   # rounded down to whole groups of k = 4
    (12, [12], 4),
    (3, [3, 3, 3, 3], 1),  # batch_size < k: plain chunks, no prefix sharing
])
def test_completions_are_batched_in_chunks_of_whole_groups(batch_size, sizes, group_size):
    labels, completer = label("soft", batch_size=batch_size)
    assert labels == SOFT  # batching does not change the labels
    assert [len(texts) for texts, *_ in completer.calls] == sizes
    assert all(g == group_size for _, g, *_ in completer.calls)
    assert labels.n_sampling_calls == len(sizes)
    flat = [t for texts, *_ in completer.calls for t in texts]
    assert flat == [continuation_prefix(PROMPTS[r], STEPS[r], i) for r, i in [(0, 0), (0, 1), (1, 0)]
                    for _ in range(4)]


def test_problem_fields_follow_their_response_and_none_counts_as_wrong():
    seen = {}

    def judge(prompts, responses, answers, tag, **fields):
        """math_answer_reward, but no opinion (None) instead of 1.0 on response 0's problem (tag "a")."""
        seen["tag"], seen["answers"] = list(tag), list(answers)
        values = math_answer_reward(prompts, responses, answers)
        return [None if t == "a" and v == 1.0 else v for t, v in zip(tag, values, strict=True)]

    labels, _ = label("soft", answer_fn=judge, tag=["a", "b"])
    # Order of the checks: 8 completions of response 0, 4 of response 1, then the two whole responses.
    assert seen["tag"] == ["a"] * 8 + ["b"] * 4 + ["a", "b"]
    assert seen["answers"] == ["14"] * 8 + ["5"] * 4 + ["14", "5"]
    # Response 0's correct completions now count as wrong; response 1 is unchanged.
    assert labels == [[0.0, 0.0, 0.0], [0.0, 1.0]]


def test_answer_fn_errors_name_the_function():
    def one_value(prompts, responses, answers, **fields):
        return [1.0]

    with pytest.raises(RewardFunctionError, match="one_value"):
        label(answer_fn=one_value)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"k": 0}, "k must be an integer >= 1"),
    ({"k": 2.5}, "k must be an integer >= 1"),
    ({"estimation": "medium"}, "estimation must be one of"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"max_new_tokens": 0}, "max_new_tokens must be"),
    ({"temperature": 0.0}, "temperature must be"),
    ({"answers": ["14"]}, "one entry per response"),
    ({"steps": ["3 * 4 = 12", "2 + 3 = 5"]}, "plain string"),
    ({"tag": ["only one"]}, "problem field 'tag'"),
])
def test_bad_arguments_raise_value_errors_with_the_fix(kwargs, match):
    args = {"prompts": PROMPTS, "steps": STEPS, "answers": ANSWERS} | kwargs
    with pytest.raises(ValueError, match=match):
        shepherd_step_labels(ScriptedCompleter(PROMPTS, SCRIPT), **args)


def test_a_completer_returning_the_wrong_count_is_an_error():
    with pytest.raises(ValueError, match="one string per text"):
        shepherd_step_labels(lambda texts, **kw: texts[:1], PROMPTS, STEPS, ANSWERS, k=2)


def test_step_label_agreement_by_hand():
    prm = [[0.9, 0.2, 0.7], [0.1]]
    rule = [[1.0, None, -1.0], [0.0]]  # value > 0 is a good step; None is skipped
    # compared: (1 vs 1) agree, (1 vs 0) disagree, (0 vs 0) agree -> 2/3
    assert step_label_agreement(prm, rule) == {"agreement": 2 / 3, "n": 3, "label_rate": 2 / 3,
                                                "reference_rate": 1 / 3}
    assert step_label_agreement([[1.0, None]], [[1.0, 1.0]])["n"] == 1  # a None label is skipped too
    empty = step_label_agreement([[0.5]], [[None]])
    assert empty["n"] == 0 and math.isnan(empty["agreement"])
    with pytest.raises(ValueError, match="same responses and steps"):
        step_label_agreement([[1.0]], [[1.0, 0.0]])


# ---------------------------------------------------------------------------------------------- tiny model
def test_tiny_model_labels_have_the_right_shape_and_are_deterministic(tiny_lm, monkeypatch):
    calls = []
    real = llm_gym.decoding.sample_responses

    def spy(model, prompt_ids, prompt_mask, *args, **kwargs):
        calls.append((tuple(prompt_ids.shape), kwargs["group_size"]))
        return real(model, prompt_ids, prompt_mask, *args, **kwargs)

    monkeypatch.setattr(llm_gym.decoding, "sample_responses", spy)
    prompts = [tiny_lm.format_prompt("What is 1 + 1?"), tiny_lm.format_prompt("What is 2 + 1?")]
    steps = [["1 + 1 = 2", "so 2", "\\boxed{2}"], ["2 + 1 = 4"]]
    seen: list[list[str]] = []

    def judge(prompts, responses, answers, **fields):
        seen.append(list(responses))
        return [float(r.strip().endswith(f"\\boxed{{{a}}}")) for r, a in zip(responses, answers, strict=True)]

    state = torch.random.get_rng_state()
    kwargs = {"k": 2, "max_new_tokens": 6, "batch_size": 3, "answer_fn": judge}
    first = shepherd_step_labels(tiny_lm, prompts, steps, ["2", "3"], seed=5, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG stream is untouched
    assert [len(row) for row in first] == [3, 1]
    assert all(v in (0.0, 1.0) for row in first for v in row)
    assert first[0][2] == 1.0 and first[1] == [0.0]  # the last steps: right, wrong
    # 2 prefixes x k=2 = 4 continuations; batch_size 3 -> one whole group (2 rows) per call, its prefix shared
    assert first.n_completions == 4 and first.n_sampling_calls == 2
    assert [g for _, g in calls] == [2, 2] and [shape[0] for shape, _ in calls] == [2, 2]
    assert 4 <= first.completion_tokens <= 4 * 6
    again = shepherd_step_labels(tiny_lm, prompts, steps, ["2", "3"], seed=5, **kwargs)
    assert again == first and seen[1] == seen[0] and again.completion_tokens == first.completion_tokens
    other = shepherd_step_labels(tiny_lm, prompts, steps, ["2", "3"], seed=6, **kwargs)
    assert seen[2][:4] != seen[0][:4]  # another seed samples other continuations
    assert [len(row) for row in other] == [3, 1]
    # The completed responses are the steps so far, a newline and the continuation.
    assert all(r.startswith("1 + 1 = 2\n") for r in seen[0][:2])
    assert all(r.startswith("1 + 1 = 2\nso 2\n") for r in seen[0][2:4])


def test_a_prefix_beyond_the_context_is_an_error(tiny_lm):
    with pytest.raises(ValueError, match="Lower max_new_tokens"):
        shepherd_step_labels(tiny_lm, ["p"], [["a", "b"]], ["1"], k=1, max_new_tokens=tiny_lm.context_length)
