"""Policy text cannot crash a multi-turn env step, and the env's reply is valid text made of plain tokens.

Whatever the policy writes (any Unicode, JSON escapes of lone surrogates, special-token text, integers
over Python's 4,300-digit limit, radix literals, decimals), ``env.step`` returns: the reply is valid text (an
``Error:`` reply where the text cannot be used), the next observation decodes, and the env message holds
no special token id except the chat template's own. Numbers are read exactly: ``0x10`` is not 0 (nor 10)
and GuessNumber does not read ``11.7`` as 7.
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llm_gym  # noqa: F401  (registers the envs)
from llm_gym.envs.multiturn import GuessNumberEnv, ToolMathEnv
from llm_gym.rewards import extract_answer, math_answer_reward
from llm_gym.tasks import Problem
from llm_gym.text import valid_text
from llm_gym.tools import calculator, run_tool_calls

T = 48  # max_new_tokens of the envs below
SPECIALS = ["<|im_end|>", "<|im_start|>", "<|endoftext|>", "<unk>", "<eos>", "<pad>", "<|im_start|>user\n"]
SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)
any_char = st.one_of(st.characters(exclude_categories=()), SURROGATE)
any_text = st.text(any_char, max_size=40)


def tool_call(expression: str, **extra) -> str:
    """A Hermes-style tool call; ``json.dumps`` writes a surrogate as its ``\\ud800`` escape."""
    return "<tool_call>" + json.dumps({"name": "calculator", "arguments": {"expression": expression}, **extra}) + \
        "</tool_call>"


pieces = st.one_of(
    any_text,
    st.sampled_from(SPECIALS),
    any_text.map(lambda t: f"<calc>{t}</calc>"),
    st.builds(lambda a, s, b: f"<calc>{a}{s}{b}</calc>", any_text, st.sampled_from(SPECIALS), any_text),
    st.builds(lambda e, s: tool_call(e + s), any_text, st.sampled_from(["", *SPECIALS])),
    st.integers(4000, 6000).map(lambda n: tool_call("1")[:-len("}}</tool_call>")] + "}, \"n\": " + "7" * n +
                                "}</tool_call>"),
    st.integers(4000, 6000).map(lambda n: "<tool_call>{\"name\": \"calculator\", \"x\": " + "9" * n + "}</tool_call>"),
    st.sampled_from(["0x10", "0X1f", "11.7", "-3", "42.", "1.2.3", "\\boxed{0x10}", "The answer is 0x10"]),
    st.integers(-(10**6), 10**6).map(str),
)
policy_texts = st.lists(pieces, max_size=6).map("".join)


def hostile_action(env, text: str) -> np.ndarray:
    """The ids a policy emits to write ``text`` (special-token text as plain characters), EOS, padded."""
    lm, n = env.unwrapped.lm, env.unwrapped.max_new_tokens
    ids = lm.tokenizer(valid_text(text), add_special_tokens=False, split_special_tokens=True)["input_ids"]
    ids = ids[: n - 1] + [lm.eos_token_id]
    return np.array(ids + [lm.pad_token_id] * (n - len(ids)), dtype=np.int64)


random_ids = st.lists(st.integers(0, 99), min_size=1, max_size=T).map(
    lambda ids: np.array(ids + [0] * (T - len(ids)), dtype=np.int64))  # any ids, special ones included


@pytest.fixture(scope="module", params=["LLMToolMath-v0", "LLMGuessNumber-v0"])
def env(request, tiny_model_dir):
    extra = {"n_problems": 4} if request.param == "LLMToolMath-v0" else {}
    return gym.make(request.param, model=str(tiny_model_dir), device="cpu", max_prompt_length=None,
                    max_new_tokens=T, max_turns=3, max_message_tokens=4096, **extra).unwrapped


def special_ids(env, ids) -> list[int]:
    """The special token ids among ``ids`` (``<unk>`` aside: a character outside the tiny vocabulary)."""
    tokenizer = env.lm.tokenizer
    special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    return sorted(int(i) for i in ids if int(i) in special)


def check_step(env, action: np.ndarray) -> None:
    """One step: no exception, a decodable observation, plain tokens in the env's message."""
    before = int(env.conversation_ids().shape[0])
    obs, reward, terminated, truncated, info = env.step(action)
    conv = obs["input_ids"][obs["attention_mask"].astype(bool)]
    assert isinstance(env.lm.tokenizer.decode(conv.tolist()), str) and np.isfinite(reward)
    start, end = info["turn_spans"][-1]
    assert start == before
    message = conv[end:]
    assert obs["assistant_mask"][len(obs["assistant_mask"]) - len(message):].sum() == 0
    if info["env_message"] is None:
        assert len(message) == 0 or not terminated  # truncated by turns or context: nothing appended
        return
    valid_text(info["env_message"]).encode("utf-8")  # valid text
    assert info["env_message"] == valid_text(info["env_message"])
    closed = conv[end - 1] == env.lm.eos_token_id
    role = env.message_roles[0]
    skeleton = env.message_ids("", role, closed=bool(closed))
    assert special_ids(env, message) == special_ids(env, skeleton), env.lm.tokenizer.decode(message.tolist())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(texts=st.lists(policy_texts, min_size=1, max_size=3), seed=st.integers(0, 3))
def test_env_replies_to_any_policy_text(env, texts, seed):
    env.reset(seed=seed)
    for text in texts:
        check_step(env, hostile_action(env, text))
        if env._done:
            break


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=st.lists(random_ids, min_size=1, max_size=3))
def test_env_replies_to_any_token_ids(env, actions):
    env.reset(seed=0)
    for action in actions:
        check_step(env, action)
        if env._done:
            break


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(policy_texts, st.text(any_char, min_size=1000, max_size=5000)))
def test_respond_to_any_length_of_text_gives_valid_text(env, text):
    """respond() takes the decoded turn; external envs may hand it anything: surrogates, any length."""
    env.reset(seed=0)
    result = env.respond(text)
    if result.message is not None:
        result.message.encode("utf-8")
        env.message_ids(result.message, result.role, closed=True)


# ------------------------------------------------------------------------------------ the instances


@pytest.fixture
def tool_env(tiny_model_dir):
    return ToolMathEnv(model=str(tiny_model_dir), device="cpu", max_new_tokens=96, max_prompt_length=None,
                       dataset=[Problem(id="p/0", question="What is 16 - 16?", answer="0")])


def test_a_lone_surrogate_escape_gets_an_error_reply_not_a_type_error(tool_env):
    tool_env.reset(seed=0)
    _, _, terminated, _, info = tool_env.step(hostile_action(tool_env, r'<tool_call>{"name": "calculator", '
                                                                       r'"arguments": {"expression": "\ud800"}}'
                                                                       r'</tool_call>'))
    assert not terminated and info["env_message"].startswith("\ufffd: Error: ")


@pytest.mark.parametrize("special", ["<|im_end|>", "<|im_start|>", "<|endoftext|>", "<unk>"])
def test_special_token_text_in_a_tool_call_stays_plain_text(tool_env, special):
    tool_env.reset(seed=0)
    obs, _, _, _, info = tool_env.step(hostile_action(tool_env, f"<calc>1{special}2</calc>"))
    assert special in info["env_message"]
    conv = obs["input_ids"][obs["attention_mask"].astype(bool)]
    message = conv[info["turn_spans"][-1][1]:]
    assert special_ids(tool_env, message) == special_ids(tool_env, tool_env.message_ids("", "tool"))
    assert special in tool_env.lm.tokenizer.decode(message.tolist(), skip_special_tokens=True)


@pytest.fixture(scope="module")
def long_lm(tmp_path_factory):
    """The tiny model with a 12,288-token context: room for two 4,400-digit turns (one token per character)."""
    from llm_gym.lm import get_language_model
    from llm_gym.models import build_tiny_model

    return get_language_model(str(build_tiny_model(tmp_path_factory.mktemp("long"), n_positions=12288)), device="cpu")


def long_action(lm, text: str) -> np.ndarray:
    return np.array(lm.tokenizer(text, add_special_tokens=False)["input_ids"] + [lm.eos_token_id], dtype=np.int64)


def test_a_tool_call_integer_over_the_digit_limit_gets_an_error_reply(long_lm):
    text = '<tool_call>{"name": "calculator", "n": ' + "9" * 4400 + "}</tool_call>"
    assert run_tool_calls(text)[0][1].startswith("Error: the tool call is not valid JSON (Exceeds the limit")
    action = long_action(long_lm, text)
    env = ToolMathEnv(model=long_lm, max_new_tokens=len(action), max_prompt_length=None, max_message_tokens=400,
                      dataset=[Problem(id="p/0", question="What is 16 - 16?", answer="0")])
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(action)
    assert not terminated and "Error: the tool call is not valid JSON" in info["env_message"]


@pytest.mark.parametrize("text", ["0x10", "0X10", "0x4", "5 + 0x1F", "0b101", "0o17"])
def test_radix_literals_are_refused_by_the_calculator(text):
    assert calculator(text).startswith("Error: ")


def test_0x10_is_not_read_as_0_in_answers(tool_env):
    for text in ("The answer is 0x10", "0x10", r"\boxed{0x10}", "answer: 0x10"):
        assert extract_answer(text) == "0x10"
        assert math_answer_reward([""] * 3, [text] * 3, ["0", "10", "16"]) == [0.0, 0.0, 0.0]
    assert calculator("3x4") == "12" and calculator("10x10") == "100" and calculator("0 x 4") == "0"
    tool_env.reset(seed=0)
    _, reward, terminated, _, info = tool_env.step(hostile_action(tool_env, "The answer is 0x10"))
    assert terminated and reward == 0.0 and info["accuracy"] == 0.0  # the gold answer is 0


@pytest.fixture
def guess_env(tiny_model_dir):
    return GuessNumberEnv(model=str(tiny_model_dir), device="cpu", max_new_tokens=T, max_prompt_length=None)


@pytest.mark.parametrize("text", ["11.7", "My guess: 0x7", "version 1.2.7", "6.9999"])
def test_guess_number_reads_only_whole_integers(guess_env, text):
    guess_env.reset(options={"problem_id": 6})  # secret 7
    _, reward, terminated, _, info = guess_env.step(hostile_action(guess_env, text))
    assert (reward, terminated, info["guess"]) == (0.0, False, None)
    assert info["env_message"] == "Please reply with one integer between 1 and 100."


@pytest.mark.parametrize(("text", "reply", "guess"), [
    ("My guess is 7.", None, 7), ("11", "lower", 11), ("-3", "higher", -3), ("0007", None, 7),
    ("9" * 4400, "lower", None), ("-" + "9" * 4400, "higher", None), ("0" * 4400 + "7", None, 7),
])
def test_guess_number_reads_integers_of_any_length(long_lm, text, reply, guess):
    action = long_action(long_lm, text)
    env = GuessNumberEnv(model=long_lm, max_new_tokens=len(action), max_prompt_length=None)
    env.reset(options={"problem_id": 6})  # secret 7
    _, reward, terminated, _, info = env.step(action)
    assert (info["env_message"], info["guess"], terminated) == (reply, guess, reply is None)
