"""SequenceEnv: spaces, checkers, reset options, info contract, rewards and clear errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import llm_gym
from llm_gym.rewards import RewardFunctionError
from llm_gym.tasks import Problem


def encode_action(env, text: str, eos: bool = True) -> np.ndarray:
    lm = env.unwrapped.lm
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"] + ([lm.eos_token_id] if eos else [])
    action = np.full(env.unwrapped.max_new_tokens, lm.pad_token_id, dtype=np.int64)
    action[: len(ids)] = ids[: len(action)]
    return action


@pytest.mark.parametrize("env_id", llm_gym.ENV_IDS)
def test_every_registered_env_passes_both_checkers(env_id, tiny_model_dir):
    env = gym.make(env_id, model=str(tiny_model_dir), n_problems=5 if env_id == "LLMMath-v0" else None,
                   device="cpu", max_prompt_length=None)  # character-level prompts are longer
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)


def test_registered_envs_use_their_tasks(tiny_model_dir):
    gsm = gym.make("LLMGSM8K-v0", model=str(tiny_model_dir), device="cpu", max_prompt_length=None).unwrapped
    assert gsm.n_problems == 100 and gsm.split == "test" and gsm.max_new_tokens == 256
    math = gym.make("LLMMath-v0", model=str(tiny_model_dir), device="cpu", n_problems=7).unwrapped
    assert math.n_problems == 7 and all(p.source == "arithmetic" for p in math.problems)
    assert math.max_prompt_length == 128 == gym.make("LLMMath-v0", model=str(tiny_model_dir), device="cpu",
                                                     split="test").unwrapped.max_prompt_length


def test_runs_in_dummy_vec_env_with_monitor(make_env):
    venv = DummyVecEnv([lambda: Monitor(make_env()) for _ in range(2)])
    venv.set_options([{"problem_id": 3}, {"problem_id": 5}])
    obs = venv.reset()
    assert obs["input_ids"].shape == (2, make_env().max_prompt_length)
    _, rewards, dones, infos = venv.step(np.stack([venv.action_space.sample() for _ in range(2)]))
    assert dones.all() and rewards.shape == (2,)
    assert [i["problem_id"] for i in infos] == [3, 5]
    assert all("episode" in i for i in infos)  # Monitor recorded each one-step episode


def test_reset_options_and_info_contract(make_env):
    env = make_env(max_new_tokens=20)
    obs, info = env.reset(options={"problem_id": 4})
    problem = env.problems[4]
    assert info["problem_id"] == 4 and info["answer"] == problem.answer
    assert problem.question in info["prompt_text"] and "\\boxed{}" in info["prompt_text"]
    text = env.lm.tokenizer.decode(obs["input_ids"][obs["attention_mask"].astype(bool)].tolist())
    assert text == info["prompt_text"]
    assert obs["attention_mask"][0] == 0 or obs["attention_mask"].all()  # left-padded
    _, reward, terminated, truncated, info = env.step(encode_action(env, f"So \\boxed{{{problem.answer}}}"))
    assert (reward, terminated, truncated) == (1.0, True, False)
    for key in ("problem_id", "prompt_text", "response_text", "answer", "reward_components", "step_rewards",
                "truncated_by_length"):
        assert key in info
    assert info["response_text"] == f"So \\boxed{{{problem.answer}}}"
    assert info["reward_components"] == {"accuracy": 1.0} and info["truncated_by_length"] is False
    with pytest.raises(ValueError, match="problem_id=40 is outside 0..39"):
        env.reset(options={"problem_id": 40})


def test_same_seed_same_problem(make_env):
    a, b = make_env(), make_env()
    assert a.reset(seed=7)[1]["problem_id"] == b.reset(seed=7)[1]["problem_id"]


def test_wrong_answer_truncation_and_format_component(make_env):
    env = make_env(format_weight=0.5)
    env.reset(options={"problem_id": 0})
    wrong = str(int(env.problems[0].answer) + 1)
    _, reward, *_, info = env.step(encode_action(env, f"\\boxed{{{wrong}}}"))
    assert reward == 0.5 and info["reward_components"] == {"accuracy": 0.0, "format": 1.0}
    env.reset(options={"problem_id": 0})
    _, reward, *_, info = env.step(encode_action(env, "x" * 20, eos=False))
    assert reward == 0.0 and info["truncated_by_length"] is True and info["response_length"] == 12


def test_bad_actions_get_clear_errors(make_env):
    env = make_env()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())
    env.reset()
    with pytest.raises(ValueError, match=r"\(12,\) array"):
        env.step(np.zeros(5, dtype=np.int64))
    bad = np.zeros(12, dtype=np.int64)
    bad[3] = env.lm.vocab_size
    with pytest.raises(ValueError, match="outside the vocabulary"):
        env.step(bad)


def test_dataset_errors(make_env):
    with pytest.raises(ValueError, match="empty"):
        make_env(dataset=[])
    long = Problem(id="long/0", question="x" * 3000, answer="1")
    with pytest.raises(ValueError, match="context"):
        make_env(dataset=[long], max_prompt_length=None)
    with pytest.raises(ValueError, match="long/0"):
        make_env(dataset=[long], max_prompt_length=50)


def test_custom_dataset_and_reward_fn(make_env):
    def length_reward(prompts, responses, answers, **fields):
        return [len(r) / 10 for r in responses]

    env = make_env(dataset=[Problem(id="q/0", question="Say hi", answer="hi")], reward_fn=length_reward)
    env.reset()
    _, reward, *_, info = env.step(encode_action(env, "hello"))
    assert reward == pytest.approx(0.5)
    assert info["reward_components"] == {"length_reward": 0.5} and info["accuracy"] == 0.0


@pytest.mark.parametrize("bad, match", [
    (lambda p, r, a, **k: 1 / 0, "ZeroDivisionError"),
    (lambda p, r, a, **k: [float("nan")] * len(r), "NaN"),
    (lambda p, r, a, **k: [1.0, 2.0], "expected 1"),
])
def test_bad_reward_functions_are_named(make_env, bad, match):
    def my_reward(prompts, responses, answers, **fields):
        return bad(prompts, responses, answers, **fields)

    env = make_env(reward_fn=my_reward)
    env.reset()
    with pytest.raises(RewardFunctionError, match="my_reward") as err:
        env.step(env.action_space.sample())
    assert match in str(err.value)


def test_step_after_the_episode_ended_raises(make_env):
    env = make_env()
    env.reset(options={"problem_id": 0})
    action = encode_action(env, "\\boxed{1}")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        env.step(np.full(12, env.lm.vocab_size))  # an invalid action does not end the episode...
    env.step(action)  # ...so the episode's one step still works
    with pytest.raises(RuntimeError, match=r"The episode has ended.*call reset\(\) before step\(\)"):
        env.step(action)  # scoring the same episode again is refused, as in TokenEnv
    env.reset(options={"problem_id": 0})
    assert env.step(action)[2] is True


def test_dataset_of_dicts_is_converted(make_env):
    env = make_env(dataset=[{"question": "What is 1 + 1?", "answer": 2, "id": "a"},
                            {"question": "Say hi", "answer": "hi", "solution": "Just say it."}])
    assert [(p.id, p.answer, p.solution) for p in env.problems] == [("a", "2", None),
                                                                     ("dataset/1", "hi", "Just say it.")]
    env.reset(options={"problem_id": 0})
    assert env.step(encode_action(env, "\\boxed{2}"))[1] == 1.0


def test_bad_datasets_get_clear_errors(make_env):
    with pytest.raises(TypeError, match=r"dataset\[0\] is a int, not a Problem or a dict: pass a list of"):
        make_env(dataset=[1, 2])
    with pytest.raises(ValueError, match=r"dataset\[0\]: missing key 'answer'"):
        make_env(dataset=[{"question": "q?"}])
    with pytest.raises(ValueError, match=r"dataset\[0\]: 'answer' is inf"):
        make_env(dataset=[{"question": "q?", "answer": float("inf")}])
    with pytest.raises(ValueError, match=r"dataset\[1\] has the id 'x' of dataset\[0\]"):
        make_env(dataset=[Problem(id="x", question="q1?", answer="1"), Problem(id="x", question="q2?", answer="2")])


@pytest.mark.parametrize("template, cause", [
    ("{q}", "unknown field {q}"),
    ("Solve: {question", "expected '}' before end of string"),
    ("Solve: {question}}", "Single '}' encountered"),
    ("Solve {question} in {} steps", "unknown field {}"),
    ("Solve {question.upper}", "unknown field {question.upper}"),
    ("Solve the problem.", "no {question} field"),
    ("{question:d}", "Unknown format code 'd'"),
])
def test_bad_prompt_template_names_it_and_says_what_to_write(make_env, template, cause):
    with pytest.raises(ValueError) as err:
        make_env(prompt_template=template)
    message = str(err.value)
    assert f"prompt_template {template!r}" in message and cause in message
    assert "must be a str.format template that contains {question}" in message


def test_good_prompt_templates(make_env):
    env = make_env(prompt_template="Q: {question} A: {{\\boxed{{}}}}", n_problems=2)
    assert f"Q: {env.problems[0].question} A: {{\\boxed{{}}}}" in env.prompts[0]
    with pytest.raises(TypeError, match="prompt_template must be a string"):
        make_env(prompt_template=None)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1, got 0"),
    ({"max_new_tokens": 12.0}, "max_new_tokens must be an integer >= 1 (a whole number, not a float or bool), got 12.0"),
    ({"max_new_tokens": True}, "max_new_tokens must be an integer >= 1 (a whole number, not a float or bool), got True"),
    ({"max_new_tokens": float("nan")}, "max_new_tokens must be an integer >= 1"),
    ({"max_new_tokens": "12"}, "max_new_tokens must be an integer >= 1, got '12'"),
    ({"max_prompt_length": 0}, "max_prompt_length must be an integer >= 1 or None, got 0"),
    ({"max_prompt_length": 96.5}, "max_prompt_length must be an integer >= 1 or None"),
    ({"n_problems": 0}, "n_problems must be an integer >= 1 or None, got 0"),
    ({"n_problems": False}, "n_problems must be an integer >= 1 or None"),
    ({"format_weight": -0.5}, "format_weight must be a finite number >= 0, got -0.5"),
    ({"format_weight": float("nan")}, "format_weight must be a finite number >= 0, got nan"),
    ({"format_weight": float("inf")}, "format_weight must be a finite number >= 0, got inf"),
    ({"format_weight": True}, "format_weight must be a finite number >= 0, got True"),
    ({"reward_timeout": 0}, "reward_timeout must be a finite number > 0 or None, got 0"),
    ({"reward_timeout": float("nan")}, "reward_timeout must be a finite number > 0 or None, got nan"),
    ({"reward_timeout": float("inf")}, "reward_timeout must be a finite number > 0 or None, got inf"),
    ({"difficulty": 0}, "difficulty must be an integer in [1, 4], got 0"),
    ({"difficulty": 1.0}, "difficulty must be an integer in [1, 4]"),
    ({"difficulty": [1, 7]}, "difficulty must be an integer in [1, 4], got 7"),
    ({"difficulty": []}, "difficulty must be an arithmetic level in 1..4 or a non-empty list of them"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"chat_template": "no"}, "chat_template must be True or False, got 'no'"),
    ({"render_mode": "human"}, "render_mode must be None or one of ['ansi'], got 'human'"),
])
def test_numeric_arguments_are_validated_before_loading_the_model(make_env, kwargs, message):
    with pytest.raises(ValueError) as err:
        make_env(model="/no/such/model", **kwargs)  # the check comes first: the model is never looked up
    assert str(err.value).startswith("SequenceEnv: ") and message in str(err.value)


def test_numpy_integers_are_accepted(make_env):
    env = make_env(max_new_tokens=np.int64(12), n_problems=np.int32(5), difficulty=np.array([1, 2]), seed=np.int64(3))
    assert env.max_new_tokens == 12 and type(env.max_new_tokens) is int and env.n_problems == 5
    assert env.action_space.shape == (12,)
