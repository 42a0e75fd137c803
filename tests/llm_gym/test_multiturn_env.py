"""Multi-turn envs: token-in/token-out accounting, chat-format messages, tools, budgets, guess-the-number."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv
from test_sequence_env import encode_action  # noqa: E402  (tests/llm_gym is on sys.path under pytest)

import llm_gym  # noqa: F401  (registers the envs)
from llm_gym.envs.multiturn import GuessNumberEnv, MultiTurnEnv, ToolMathEnv, TurnResult
from llm_gym.registration import ENV_IDS, MULTITURN_ENV_IDS
from llm_gym.tasks import Problem
from llm_gym.tasks.arithmetic_tool import arithmetic_tool_problems

# What the tiny model's chat template (llm_gym.models.TINY_CHAT_TEMPLATE) adds after an assistant turn that
# ended with its sampled EOS <|im_end|>, for a "tool" / "user" message: worked out from the template by hand.
TOOL_408 = "\n<|im_start|>tool\n12*34 = 408<|im_end|>\n<|im_start|>assistant\n"
PROBLEM = Problem(id="p/0", question="What is 12 * 34?", answer="408")
encode = encode_action  # a turn's action: the text's ids (+ EOS), right-padded to max_new_tokens


def real(env, action: np.ndarray) -> list[int]:
    """The action's real tokens (up to the first EOS, included; trailing pads dropped), worked out here."""
    ids, eos, pad = list(action), env.lm.eos_token_id, env.lm.pad_token_id
    if eos in ids:
        return ids[: ids.index(eos) + 1]
    while ids and ids[-1] == pad:
        ids.pop()
    return ids


def unpadded(obs: dict[str, np.ndarray]) -> np.ndarray:
    return obs["input_ids"][obs["attention_mask"].astype(bool)]


@pytest.fixture
def tool_env(tiny_model_dir):
    def _make(**kwargs):
        params = {
            "model": str(tiny_model_dir),
            "device": "cpu",
            "max_new_tokens": 24,
            "dataset": [PROBLEM],
            "max_prompt_length": None,
            "max_message_tokens": 64,
        }
        params.update(kwargs)
        return ToolMathEnv(**params)

    return _make


@pytest.fixture
def guess_env(tiny_model_dir):
    def _make(**kwargs):
        params = {
            "model": str(tiny_model_dir),
            "device": "cpu",
            "max_new_tokens": 16,
            "max_prompt_length": None,
        }
        params.update(kwargs)
        return GuessNumberEnv(**params)

    return _make


def test_registration_keeps_env_ids_single_turn():
    assert MULTITURN_ENV_IDS == ("LLMToolMath-v0", "LLMGuessNumber-v0")
    assert not set(MULTITURN_ENV_IDS) & set(ENV_IDS)
    assert all(env_id in gym.registry for env_id in MULTITURN_ENV_IDS)


@pytest.mark.parametrize("env_id", MULTITURN_ENV_IDS)
def test_registered_multiturn_envs_pass_both_checkers(env_id, tiny_model_dir):
    extra = {"n_problems": 4} if env_id == "LLMToolMath-v0" else {}
    env = gym.make(env_id, model=str(tiny_model_dir), device="cpu", max_prompt_length=None, **extra)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs) and set(obs) == {
        "input_ids",
        "attention_mask",
        "assistant_mask",
    }
    assert obs["assistant_mask"].sum() == 0


def test_registered_kwargs(tiny_model_dir):
    tool = gym.make(
        "LLMToolMath-v0", model=str(tiny_model_dir), device="cpu", n_problems=6, max_prompt_length=None
    ).unwrapped
    assert tool.task == "arithmetic_tool" and tool.max_turns == 4 and tool.max_new_tokens == 64
    assert all(p.source == "arithmetic_tool" for p in tool.problems) and tool.n_problems == 6
    guess = gym.make(
        "LLMGuessNumber-v0", model=str(tiny_model_dir), device="cpu", max_prompt_length=None
    ).unwrapped
    assert (guess.low, guess.high, guess.max_turns, guess.n_problems) == (1, 100, 7, 100)


def test_calculator_result_comes_back_in_the_next_observation(tool_env):
    env = tool_env()
    obs, info = env.reset(seed=0)
    n_prompt = info["prompt_token_count"]
    assert n_prompt == env.max_prompt_length  # one problem: L is its prompt length
    action = encode(env, "<calc>12*34</calc>")
    obs, reward, terminated, truncated, info = env.step(action)
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info["tool_calls"] == [("12*34", "408")] and info["env_message"] == "12*34 = 408"
    conv = unpadded(obs)
    turn = real(env, action)
    assert conv[n_prompt : n_prompt + len(turn)].tolist() == turn
    message = env.lm.tokenizer.decode(conv[n_prompt + len(turn) :].tolist())
    assert message == TOOL_408
    # The final answer (no call) is scored with the default math reward and ends the episode.
    _, reward, terminated, truncated, info = env.step(encode(env, "So \\boxed{408}"))
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["accuracy"] == 1.0 and info["reward_components"] == {"accuracy": 1.0}
    assert info["tool_calls"] == [] and info["env_message"] is None and info["turns"] == 2


def test_tool_call_cost_and_episode_components(tool_env):
    env = tool_env(tool_call_cost=0.25, max_new_tokens=40)
    env.reset(seed=0)
    _, reward, *_, info = env.step(encode(env, "<calc>2+3</calc><calc>4*5</calc>"))
    assert reward == -0.5 and info["reward_components"] == {"tool_cost": -0.5}
    assert info["tool_calls"] == [("2+3", "5"), ("4*5", "20")] and info["env_message"] == "2+3 = 5\n4*5 = 20"
    _, reward, terminated, _, info = env.step(encode(env, "\\boxed{407}"))
    assert (reward, terminated, info["accuracy"]) == (0.0, True, 0.0)
    assert info["episode_reward_components"] == {"tool_cost": -0.5, "accuracy": 0.0}


@pytest.mark.parametrize("expression, error", [("1/0", "Error: division by zero"), ("foo bar", "Error: ")])
def test_bad_tool_calls_get_an_error_message_not_an_exception(tool_env, expression, error):
    env = tool_env()
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(encode(env, f"<calc>{expression}</calc>"))
    assert (reward, terminated, truncated) == (0.0, False, False)
    [(expr, result)] = info["tool_calls"]
    assert expr == expression and result.startswith(error)
    assert info["env_message"] == f"{expression}: {result}"
    assert f"{expression}: {result}" in info["conversation_text"]


def test_accounting_invariant_and_assistant_mask(tool_env):
    env = tool_env(max_turns=4)
    obs, info = env.reset(seed=0)
    expected = unpadded(obs).tolist()  # the prompt
    spans = []
    actions = [
        encode(env, "<calc>12*34</calc>"),
        encode(env, "<calc>7-9</calc>x" + "y" * 30, eos=False),
        encode(env, "\\boxed{408}"),
    ]
    for action in actions:
        obs, _, terminated, _, info = env.step(action)
        turn = real(env, action)
        spans.append((len(expected), len(expected) + len(turn)))
        expected += turn
        if not terminated:
            closed = turn[-1] == env.lm.eos_token_id
            expected += env.message_ids(info["env_message"], "tool", closed=closed).tolist()
        conv = unpadded(obs)
        assert conv.tolist() == expected and info["turn_spans"] == spans
        C, n = env.max_context_length, len(conv)
        assistant = np.zeros(C, dtype=np.int64)
        for start, end in spans:
            assistant[C - n + start : C - n + end] = 1
        assert np.array_equal(obs["assistant_mask"], assistant)
        assert obs["assistant_mask"].sum() == info["assistant_token_count"] == sum(e - s for s, e in spans)
        assert n == info["prompt_token_count"] + info["assistant_token_count"] + info["env_token_count"]
        assert (obs["attention_mask"][: C - n] == 0).all() and (
            obs["input_ids"][: C - n] == env.lm.pad_token_id
        ).all()
    assert terminated and len(spans) == 3
    assert info["truncated_by_length"] is False


def test_a_turn_cut_by_max_new_tokens_is_closed_by_the_env(tool_env):
    env = tool_env()
    obs, info = env.reset(seed=0)
    n_prompt = info["prompt_token_count"]
    action = encode(env, "<calc>12*34</calc>" + "z" * 10, eos=False)  # 28 characters > 24 tokens: cut
    assert env.lm.eos_token_id not in action.tolist()
    obs, _, terminated, truncated, info = env.step(action)
    assert info["truncated_by_length"] is True and not (terminated or truncated)
    conv = unpadded(obs)
    after = conv[n_prompt + 24 :]
    assert env.lm.tokenizer.decode(after.tolist()) == "<|im_end|>" + TOOL_408  # the env adds the end of turn
    assert after[0] == env.lm.eos_token_id and obs["assistant_mask"][-len(after) :].sum() == 0


def test_policy_ids_are_kept_verbatim_never_re_tokenized(tool_env):
    env = tool_env(max_new_tokens=32)
    obs, info = env.reset(seed=0)
    tok = env.lm.tokenizer
    # "<|im_end|>" spelled character by character: 10 ids that decode to the text of the single special token.
    chars = [tok.convert_tokens_to_ids(c) for c in "<|im_end|>"] + tok(
        "<calc>1+1</calc>", add_special_tokens=False
    )["input_ids"]
    ids = chars + [env.lm.eos_token_id]
    action = np.full(env.max_new_tokens, env.lm.pad_token_id, dtype=np.int64)
    action[: len(ids)] = ids
    obs, *_, info = env.step(action)
    conv = unpadded(obs)
    start, end = info["turn_spans"][0]
    assert conv[start:end].tolist() == ids
    re_encoded = tok(tok.decode(ids), add_special_tokens=False)["input_ids"]
    assert re_encoded != ids and re_encoded[0] == env.lm.eos_token_id  # re-tokenizing would have changed them


def test_truncation_at_max_turns(tool_env):
    env = tool_env(max_turns=2)
    env.reset(seed=0)
    _, _, terminated, truncated, _ = env.step(encode(env, "<calc>1+1</calc>"))
    assert not (terminated or truncated)
    obs, reward, terminated, truncated, info = env.step(encode(env, "<calc>2+2</calc>"))
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert info["truncated_by_turns"] and not info["truncated_by_context"] and info["accuracy"] == 0.0
    assert info["env_message"] is None and info["tool_calls"] == [("2+2", "4")]
    assert unpadded(obs)[-1] == env.lm.eos_token_id  # the last turn, no message after it
    with pytest.raises(RuntimeError, match="episode has ended"):
        env.step(encode(env, "1"))


def test_truncation_at_the_context_budget(tool_env):
    probe = tool_env()
    _, info = probe.reset(seed=0)
    L, T = info["prompt_token_count"], probe.max_new_tokens
    action = encode(probe, "<calc>12*34</calc>")
    n_turn, n_msg = len(real(probe, action)), len(probe.message_ids("12*34 = 408", "tool"))
    assert (n_turn, n_msg) == (19, 31)  # 18 characters + EOS; TOOL_408 is 31 tokens in the char tokenizer
    fits = tool_env(max_context_length=L + n_turn + n_msg + T)
    fits.reset(seed=0)
    _, _, _, truncated, info = fits.step(action)
    assert not truncated and info["env_message"] == "12*34 = 408"
    short = tool_env(max_context_length=L + n_turn + n_msg + T - 1)
    short.reset(seed=0)
    obs, _, terminated, truncated, info = short.step(action)
    assert (
        (terminated, truncated) == (False, True)
        and info["truncated_by_context"]
        and not info["truncated_by_turns"]
    )
    assert len(unpadded(obs)) == L + n_turn and info["env_token_count"] == 0


def test_context_budget_default_rule_and_errors(tool_env, tiny_model_dir):
    env = tool_env(max_turns=3, max_message_tokens=10)
    L, T = env.max_prompt_length, env.max_new_tokens
    assert env.max_context_length == L + 3 * T + 2 * 10 == env.observation_space["input_ids"].shape[0]
    assert tool_env(max_turns=500).max_context_length == 2048  # capped at the tiny model's context
    with pytest.raises(
        ValueError, match=rf"max_context_length={L + T - 1} cannot hold the prompt.*at least {L + T}"
    ):
        tool_env(max_context_length=L + T - 1)
    with pytest.raises(ValueError, match="exceeds the model's context of 2048 tokens"):
        tool_env(max_context_length=4096)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_turns": 0}, "max_turns must be an integer >= 1, got 0"),
        ({"max_turns": 2.0}, "max_turns must be an integer >= 1"),
        ({"max_context_length": 0}, "max_context_length must be an integer >= 1 or None, got 0"),
        ({"max_message_tokens": -1}, "max_message_tokens must be an integer >= 0, got -1"),
        ({"tool_call_cost": -1.0}, "tool_call_cost must be a finite number >= 0, got -1.0"),
        ({"tool_role": ""}, "tool_role must be a non-empty chat role"),
        ({"process_reward_fn": lambda *a, **k: []}, "process_reward_fn is not supported"),
    ],
)
def test_arguments_are_validated_before_loading_the_model(tool_env, kwargs, message):
    with pytest.raises(ValueError) as err:
        tool_env(model="/no/such/model", **kwargs)
    assert str(err.value).startswith("ToolMathEnv: ") and message in str(err.value)


def test_plain_text_fallback_without_chat_template(tool_env):
    env = tool_env(chat_template=False)
    obs, info = env.reset(seed=0)
    assert info["prompt_text"].startswith("What is 12 * 34?")  # no chat markup
    n_prompt = info["prompt_token_count"]
    action = encode(env, "<calc>12*34</calc>")
    obs, *_, info = env.step(action)
    conv = unpadded(obs)
    assert env.lm.tokenizer.decode(conv[n_prompt:].tolist()) == (
        "<calc>12*34</calc><|im_end|>\nTool: 12*34 = 408\nAssistant: "
    )


def test_message_text_closes_an_open_turn_and_names_the_role(tool_env):
    env = tool_env(system_prompt="Be brief.")
    assert (
        env.message_text("hi", "user", closed=True)
        == "\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert env.message_text("hi", "tool", closed=False) == (
        "<|im_end|>\n<|im_start|>tool\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_seeded_episodes_are_reproducible(tiny_model_dir):
    def run(seed):
        env = ToolMathEnv(
            model=str(tiny_model_dir), device="cpu", n_problems=20, max_new_tokens=24, max_prompt_length=None
        )
        env.action_space.seed(seed)
        obs, info = env.reset(seed=seed)
        out = [info["problem_id"], obs["input_ids"].copy()]
        for action in (encode(env, "<calc>3*3</calc>"), env.action_space.sample()):
            obs, reward, terminated, truncated, info = env.step(action)
            out += [obs["input_ids"].copy(), obs["assistant_mask"].copy(), reward, terminated, truncated]
            if terminated or truncated:
                break
        return out

    a, b, c = run(5), run(5), run(6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert len(a) != len(c) or not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_runs_in_dummy_vec_env_with_monitor(tool_env):
    venv = DummyVecEnv([lambda: Monitor(tool_env()) for _ in range(2)])
    obs = venv.reset()
    assert obs["assistant_mask"].shape == (2, tool_env().max_context_length)
    actions = np.stack([encode(venv.envs[0], "<calc>1+2</calc>"), encode(venv.envs[0], "\\boxed{408}")])
    _, rewards, dones, infos = venv.step(actions)
    assert rewards.tolist() == [0.0, 1.0] and dones.tolist() == [False, True]
    assert "episode" in infos[1] and infos[1]["episode"]["r"] == 1.0 and infos[1]["episode"]["l"] == 1
    assert infos[0]["tool_calls"] == [("1+2", "3")]


def test_gsm_style_tasks_work_via_task(tiny_model_dir):
    env = ToolMathEnv(
        model=str(tiny_model_dir),
        device="cpu",
        task="arithmetic",
        n_problems=3,
        max_new_tokens=8,
        max_prompt_length=None,
    )
    assert env.task == "arithmetic" and all(p.source == "arithmetic" for p in env.problems)


# ------------------------------------------------------------------------------------------ guess the number
def test_guess_number_answers_higher_lower_and_ends_on_the_secret(guess_env):
    env = guess_env()
    obs, info = env.reset(options={"problem_id": 36})
    assert env.secret == 37 and info["answer"] == "37"
    for guess, reply in (("50", "lower"), ("I say 25", "higher"), ("31 or maybe 40", "lower")):
        obs, reward, terminated, truncated, info = env.step(encode(env, guess))
        assert (reward, terminated, truncated) == (0.0, False, False) and info["env_message"] == reply
        assert env.lm.tokenizer.decode(unpadded(obs).tolist()).endswith(
            f"<|im_end|>\n<|im_start|>user\n{reply}<|im_end|>\n<|im_start|>assistant\n"
        )
    assert info["guess"] == 40
    obs, reward, terminated, truncated, info = env.step(encode(env, "37"))
    assert (
        (reward, terminated, truncated) == (1.0, True, False)
        and info["accuracy"] == 1.0
        and info["turns"] == 4
    )


def test_guess_number_reminder_and_truncation(guess_env):
    env = guess_env(max_turns=2, low=1, high=10)
    env.reset(options={"problem_id": 0})
    _, _, _, _, info = env.step(encode(env, "hmm"))
    assert info["env_message"] == "Please reply with one integer between 1 and 10." and info["guess"] is None
    _, reward, terminated, truncated, info = env.step(encode(env, "5"))
    assert (reward, terminated, truncated) == (0.0, False, True) and info["accuracy"] == 0.0


def test_guess_number_secret_is_seeded(guess_env):
    a, b = guess_env(), guess_env()
    secrets = [(a.reset(seed=s), a.secret)[1] for s in range(6)]
    assert secrets == [(b.reset(seed=s), b.secret)[1] for s in range(6)]
    assert len(set(secrets)) > 1 and all(1 <= s <= 100 for s in secrets)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"low": 5, "high": 4}, "high must be an integer >= 5, got 4"),
        ({"low": 0, "high": 20_000}, "holds more than 10000 secrets"),
        ({"dataset": [PROBLEM]}, "dataset cannot be set"),
        ({"n_problems": 3}, "n_problems cannot be set"),
    ],
)
def test_guess_number_argument_errors(guess_env, kwargs, message):
    with pytest.raises(ValueError, match=message):
        guess_env(**kwargs)


# ------------------------------------------------------------------------------------------ base class / task
def test_respond_must_return_a_turn_result(tiny_model_dir):
    class Echo(MultiTurnEnv):
        def respond(self, turn_text):
            return TurnResult(f"you said {turn_text}") if turn_text != "bye" else "bye"

    env = Echo(
        model=str(tiny_model_dir), device="cpu", dataset=[PROBLEM], max_new_tokens=8, max_prompt_length=None
    )
    env.reset()
    _, _, _, _, info = env.step(encode(env, "hi"))
    assert info["env_message"] == "you said hi"
    with pytest.raises(TypeError, match="Echo.respond must return a TurnResult, got str"):
        env.step(encode(env, "bye"))


def test_arithmetic_tool_problems():
    problems = arithmetic_tool_problems(40, difficulty=[1, 2, 3, 4], seed=1)
    assert [p.difficulty for p in problems] == [1] * 10 + [2] * 10 + [3] * 10 + [4] * 10
    for p in problems:
        expression = p.question.removeprefix("What is ").removesuffix("?")
        assert p.answer == str(eval(expression)) and int(p.answer) >= 0  # exact integer arithmetic
    assert problems == arithmetic_tool_problems(40, difficulty=[1, 2, 3, 4], seed=1)
    train = {p.question for p in arithmetic_tool_problems(300, difficulty=2)}
    test = {p.question for p in arithmetic_tool_problems(300, difficulty=2, split="test")}
    assert len(train) == len(test) == 300 and not train & test
    assert len(arithmetic_tool_problems(split="test")) == 200
    with pytest.raises(ValueError, match=r"difficulty must be a level in \[1, 2, 3, 4\]"):
        arithmetic_tool_problems(3, difficulty=5)
    with pytest.raises(ValueError, match="unknown split"):
        arithmetic_tool_problems(3, split="dev")


def test_few_shot_messages_come_before_the_question(tool_env, make_env):
    demo = [{"role": "user", "content": "What is 2 * 3?"}, {"role": "assistant", "content": "<calc>2 * 3</calc>"},
            {"role": "tool", "content": "2 * 3 = 6"}, {"role": "assistant", "content": "\\boxed{6}"}]
    env = tool_env(few_shot=demo, prompt_template="{question}")
    # the tiny model's chat template, worked out by hand: every message as <|im_start|>role\ncontent<|im_end|>\n
    assert env.prompts[0] == (
        "<|im_start|>user\nWhat is 2 * 3?<|im_end|>\n<|im_start|>assistant\n<calc>2 * 3</calc><|im_end|>\n"
        "<|im_start|>tool\n2 * 3 = 6<|im_end|>\n<|im_start|>assistant\n\\boxed{6}<|im_end|>\n"
        "<|im_start|>user\nWhat is 12 * 34?<|im_end|>\n<|im_start|>assistant\n")
    _, info = env.reset(seed=0)
    assert info["prompt_token_count"] == len(env.lm.tokenizer(env.prompts[0])["input_ids"])  # all of it is prompt
    plain = make_env(few_shot=demo[:2], chat_template=False, prompt_template="Q: {question}")
    assert plain.prompts[0].startswith("User: What is 2 * 3?\nAssistant: <calc>2 * 3</calc>\nQ: ")
    for bad in ("hello", [{"role": "user"}], [{"role": 1, "content": "x"}], {"role": "user", "content": "x"}):
        with pytest.raises(TypeError, match="few_shot"):
            tool_env(few_shot=bad)
