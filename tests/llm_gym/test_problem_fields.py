"""Every field of a problem reaches reward functions as a keyword argument (TRL's "dataset columns become kwargs").

Pinned here: each loader keeps the columns it does not map (values as read, the answer exact), the answer also
arrives under its own column name, the keyword arguments are the same on sequence, token and multi-turn envs,
and seven reward functions written to TRL's documented ``GRPOTrainer`` signature score through ``from_trl`` as
written (``completion_ids`` without a tokenizer, ``trainer_state.global_step`` from the algorithm).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
from test_sequence_env import encode_action  # noqa: E402  (tests/llm_gym is on sys.path under pytest)

from agents import GRPO
from llm_gym.envs.multiturn import ToolMathEnv
from llm_gym.envs.problems import TrainerState, problem_fields
from llm_gym.envs.sequence import SequenceEnv
from llm_gym.envs.token import TokenEnv
from llm_gym.rewards import from_trl
from llm_gym.tasks import Problem, load_problem_source

T = 40
# A dataset as TRL users write them: the answer in "ground_truth", and extra columns of several types.
ROWS = [
    {"question": "What is 2 + 3?", "ground_truth": "5", "difficulty": 1, "task": "math",
     "metadata": {"source": "hand", "tags": ["add"]}, "weight": 0.5},
    {"question": "Say hi.", "ground_truth": "hi", "difficulty": 3, "task": "chat",
     "metadata": {"source": "hand", "tags": []}, "weight": 2.0},
]


# ----------------------------------------------------------------------------------------- TRL's signature
# Seven reward functions written exactly to TRL's documented GRPOTrainer signature ("Using a custom reward
# function": prompts, completions, completion_ids and the dataset columns as keyword arguments, trainer_state).
def reward_num_tokens(completion_ids, **kwargs):
    """Reward longer completions (TRL docs, example 1, on token ids)."""
    return [float(len(ids)) for ids in completion_ids]


def format_reward(completions, **kwargs):
    """Reward a completion that has a specific format (TRL docs, example 2)."""
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    return [1.0 if re.match(pattern, content) else 0.0 for content in completions]


def reward_ground_truth(completions, ground_truth, **kwargs):
    """Reward completions based on a reference (TRL docs, example 3)."""
    matches = [re.search(r"\\boxed\{(.*?)\}", completion) for completion in completions]
    contents = [match.group(1) if match else "" for match in matches]
    return [1.0 if c == gt else 0.0 for c, gt in zip(contents, ground_truth, strict=True)]


def math_reward_func(prompts, completions, task, **kwargs):
    """Multi-task reward (TRL docs, example 4): None for the samples of another task."""
    return [float(len(c)) if t == "math" else None for c, t in zip(completions, task, strict=True)]


def difficulty_reward(completions, ground_truth, difficulty, **kwargs):
    """Harder problems pay more: a numeric dataset column."""
    return [float(d) * float(gt in c) for c, gt, d in zip(completions, ground_truth, difficulty, strict=True)]


def schedule_reward(completions, trainer_state, **kwargs):
    """A reward that ramps up with training progress (trainer_state.global_step)."""
    scale = min(1.0, trainer_state.global_step / 100)
    return [scale * len(c) for c in completions]


def metadata_reward(prompts, completions, completion_ids, metadata, weight, log_metric=None, **kwargs):
    """Reads a dict column and a float column; logs with the trainer's log_metric."""
    if log_metric is not None:
        log_metric("n_tagged", sum(bool(m["tags"]) for m in metadata))
    return [w * len(m["tags"]) + 0.01 * len(ids) for m, w, ids in zip(metadata, weight, completion_ids, strict=True)]


TRL_FUNCTIONS = [reward_num_tokens, format_reward, reward_ground_truth, math_reward_func, difficulty_reward,
                 schedule_reward, metadata_reward]


def test_seven_trl_reward_functions_score_as_written(tiny_model_dir):
    env = SequenceEnv(model=str(tiny_model_dir), device="cpu", dataset=ROWS, answer_column="ground_truth",
                      max_new_tokens=T, reward_fn={fn.__name__: from_trl(fn) for fn in TRL_FUNCTIONS})
    env.set_trainer_state(TrainerState(global_step=50, num_timesteps=400))
    texts = ["so \\boxed{5}", "<think>x</think><answer>hi</answer>"]
    rewards, infos = env.score_batch([0, 1], np.stack([encode_action(env, t) for t in texts]))
    n_ids = [len(t) + 1 for t in texts]  # the char tokenizer: one id per character, plus the sampled EOS
    expected = {
        "reward_num_tokens": [float(n) for n in n_ids],
        "format_reward": [0.0, 1.0],
        "reward_ground_truth": [1.0, 0.0],
        "math_reward_func": [float(len(texts[0])), 0.0],  # None (another task) counts 0
        "difficulty_reward": [1.0, 3.0],
        "schedule_reward": [0.5 * len(t) for t in texts],
        "metadata_reward": [0.5 * 1 + 0.01 * n_ids[0], 2.0 * 0 + 0.01 * n_ids[1]],
    }
    for r, info in enumerate(infos):
        assert info["reward_components"] == pytest.approx({name: v[r] for name, v in expected.items()})
    assert rewards.tolist() == pytest.approx([sum(v[r] for v in expected.values()) for r in range(2)])


def test_trl_function_sees_the_columns_of_a_dataset_as_trl_passes_them(tiny_model_dir):
    seen = {}

    def spy(prompts, completions, completion_ids, **kwargs):
        seen.update(kwargs, completion_ids=completion_ids)
        return [0.0] * len(completions)

    env = SequenceEnv(model=str(tiny_model_dir), device="cpu", dataset=ROWS, answer_column="ground_truth",
                      max_new_tokens=T, reward_fn=from_trl(spy))
    env.score_batch([1, 0], np.stack([encode_action(env, "ab"), encode_action(env, "c", eos=False)]))
    assert seen["ground_truth"] == seen["answer"] == ["hi", "5"]
    assert seen["difficulty"] == [3, 1] and seen["task"] == ["chat", "math"] and seen["weight"] == [2.0, 0.5]
    assert seen["metadata"] == [ROWS[1]["metadata"], ROWS[0]["metadata"]]
    assert seen["problem_id"] == ["dataset/1", "dataset/0"] and seen["solution"] == [None, None]
    assert seen["trainer_state"] == TrainerState() and "prompt" not in seen and "solutions" not in seen
    lm = env.lm
    assert seen["completion_ids"] == [lm.tokenizer.convert_tokens_to_ids(["a", "b"]) + [lm.eos_token_id],
                                      lm.tokenizer.convert_tokens_to_ids(["c"])]


def record_global_step(completions, trainer_state, **kwargs):
    """Module level: records the global_step of every call (one call per rollout)."""
    record_global_step.seen.append(trainer_state.global_step)
    return [0.0] * len(completions)


@pytest.mark.usefixtures("one_thread")
def test_the_algorithm_sets_trainer_state_before_each_rollout(tiny_model_dir):
    record_global_step.seen = []
    env = SequenceEnv(model=str(tiny_model_dir), device="cpu", dataset=ROWS, answer_column="ground_truth",
                      max_new_tokens=8, reward_fn=from_trl(record_global_step))
    model = GRPO("LLMPolicy", env, n_prompts=2, group_size=2, micro_batch_size=4, seed=0, device="cpu")
    model.learn(4)
    after_first = model._n_updates
    model.learn(4, reset_num_timesteps=False)
    assert after_first > 0 and record_global_step.seen == [0, after_first]
    assert env.trainer_state == TrainerState(global_step=after_first, num_timesteps=4)


# ----------------------------------------------------------------------------------------- native functions
def native_spy(prompts, responses, answers, *, weight, difficulty, problem_ids, **fields):
    """llm-gym's own signature, reading extra columns by name."""
    native_spy.calls.append({"weight": weight, "difficulty": difficulty, "ground_truth": fields["ground_truth"],
                             "completion_ids": fields.get("completion_ids"),
                             "global_step": fields["trainer_state"].global_step})
    return [w * d for w, d in zip(weight, difficulty, strict=True)]


def common_kwargs(tiny_model_dir) -> dict:
    return {"model": str(tiny_model_dir), "device": "cpu", "dataset": ROWS, "answer_column": "ground_truth",
            "reward_fn": native_spy}


@pytest.mark.parametrize("family", ["sequence", "token", "multiturn"])
def test_an_extra_column_reaches_a_native_reward_function(family, tiny_model_dir):
    native_spy.calls = []
    kwargs = common_kwargs(tiny_model_dir)
    if family == "multiturn":
        env = ToolMathEnv(max_new_tokens=T, max_prompt_length=None, max_message_tokens=32, **kwargs)
    else:
        env = (SequenceEnv if family == "sequence" else TokenEnv)(max_new_tokens=T, **kwargs)
    env.set_trainer_state(TrainerState(global_step=7))
    env.reset(options={"problem_id": 1})
    action = encode_action(env, "hi")  # no <calc>: a final turn on the multi-turn env
    if family == "token":
        real = action[: int(np.argmax(action == env.lm.eos_token_id)) + 1]
        for token in real:
            _, reward, terminated, _, info = env.step(int(token))
    else:
        _, reward, terminated, _, info = env.step(action)
    assert terminated and reward == 2.0 * 3 and info["reward_components"] == {"native_spy": 6.0}
    ids = env.lm.tokenizer.convert_tokens_to_ids(["h", "i"]) + [env.lm.eos_token_id]
    assert native_spy.calls == [{"weight": [2.0], "difficulty": [3], "ground_truth": ["hi"], "completion_ids": [ids],
                                 "global_step": 7}]


def test_the_reward_function_wrapper_passes_the_env_keywords(tiny_model_dir):
    """``llm_gym.wrappers.RewardFunction`` gives its function what the env's own reward_fn gets: the extra
    columns and ``trainer_state`` (completion ids are the env's: the wrapper sees only the step's info)."""
    from llm_gym.wrappers import RewardFunction

    native_spy.calls = []
    kwargs = common_kwargs(tiny_model_dir) | {"reward_fn": None}
    env = RewardFunction(SequenceEnv(max_new_tokens=T, **kwargs), native_spy, replace=True)
    env.unwrapped.set_trainer_state(TrainerState(global_step=9))
    env.reset(options={"problem_id": 1})
    _, reward, _, _, info = env.step(encode_action(env.unwrapped, "hi"))
    assert reward == 6.0 and info["reward_components"]["native_spy"] == 6.0
    assert native_spy.calls == [{"weight": [2.0], "difficulty": [3], "ground_truth": ["hi"], "completion_ids": None,
                                 "global_step": 9}]


# ----------------------------------------------------------------------------------------- loaders
EXPECTED_EXTRA = [{"difficulty": 1, "task": "math", "metadata": {"source": "hand", "tags": ["add"]}, "weight": 0.5,
                   "ground_truth": "5"},
                  {"difficulty": 3, "task": "chat", "metadata": {"source": "hand", "tags": []}, "weight": 2.0,
                   "ground_truth": "hi"}]


def test_list_jsonl_json_and_hf_datasets_keep_extra_columns(tmp_path: Path):
    jsonl, as_json = tmp_path / "rows.jsonl", tmp_path / "rows.json"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    as_json.write_text(json.dumps(ROWS), encoding="utf-8")
    for source in (ROWS, jsonl, as_json, datasets.Dataset.from_list(ROWS)):
        problems = load_problem_source(source, answer_column="ground_truth")
        assert [p.answer for p in problems] == ["5", "hi"] and [p.difficulty for p in problems] == [1, 3]
        assert [p.extra for p in problems] == EXPECTED_EXTRA, type(source)
        assert type(problems[0].extra["weight"]) is float  # JSON numbers outside the answer as json.loads reads them


def test_parquet_and_csv_keep_extra_columns_as_their_format_gives_them(tmp_path: Path):
    flat = [{k: v for k, v in r.items() if k != "metadata"} for r in ROWS]
    parquet, csv = tmp_path / "rows.parquet", tmp_path / "rows.csv"
    datasets.Dataset.from_list(flat).to_parquet(str(parquet))
    csv.write_text("question,ground_truth,difficulty,task,weight\nWhat is 2 + 3?,5,1,math,0.5\nSay hi.,hi,hard,chat,2\n",
                   encoding="utf-8")
    expected = [{k: v for k, v in e.items() if k != "metadata"} for e in EXPECTED_EXTRA]
    assert [p.extra for p in load_problem_source(parquet, answer_column="ground_truth")] == expected
    problems = load_problem_source(csv, answer_column="ground_truth")
    assert [p.extra for p in problems] == [  # CSV cells are text; an integer difficulty is an int
        {"difficulty": 1, "task": "math", "weight": "0.5", "ground_truth": "5"},
        {"difficulty": "hard", "task": "chat", "weight": "2", "ground_truth": "hi"}]
    assert [p.difficulty for p in problems] == [1, None]
    assert problem_fields(problems)["difficulty"] == [1, "hard"]  # the column as read


def test_answers_stay_exact_and_missing_keys_become_none(tmp_path: Path):
    path = tmp_path / "exact.jsonl"
    path.write_text('{"question": "q1?", "answer": 9007199254740993.0, "x": 0.1}\n{"question": "q2?", "answer": 2}\n',
                    encoding="utf-8")
    problems = load_problem_source(path)
    assert [p.answer for p in problems] == ["9007199254740993", "2"]
    assert [p.extra for p in problems] == [{"x": 0.1}, {"x": None}]  # the answer under "answer" is the answers arg


def test_problem_fields_and_reserved_names(tiny_model_dir):
    p = Problem("a", "q?", "1", solution="s", difficulty=2, extra={"tests": [1, 2]})
    assert problem_fields([p]) == {"problem_ids": ["a"], "solutions": ["s"], "difficulty": [2], "tests": [[1, 2]]}
    assert hash(p) == hash(Problem("a", "q?", "1", solution="s", difficulty=2))  # extra is not hashed
    assert p != Problem("a", "q?", "1", solution="s", difficulty=2)  # but compared
    with pytest.raises(TypeError, match="Problem.extra must be a mapping"):
        Problem("a", "q?", "1", extra=[1])
    with pytest.raises(ValueError, match="column 'responses', which is the name of a reward-function argument"):
        SequenceEnv(model=str(tiny_model_dir), device="cpu", dataset=[{"question": "q?", "answer": "1",
                                                                       "responses": "x"}])
