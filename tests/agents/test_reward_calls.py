"""During ``learn()``, every reward function is called once per rollout at sequence level, and once per vector
step on which episodes end at token and multi-turn level, with all the built-in reward layers stacked.

Counted: the env's ``reward_fn`` components (a ``CombinedReward`` from a dict) and its accuracy fallback,
``process_reward_fn``, ``FormatReward``'s check, ``LengthPenalty``'s and ``OverlongPenalty``'s functions and
a reward-model scorer (``RewardModel``); ``ScaleReward`` and ``ClipReward`` (and ``TurnLimit`` on the
multi-turn env) sit in the stack too. The expected calls are derived from the episodes' ends, recorded by a
callback.
"""

from __future__ import annotations

import gymnasium as gym
import pytest
from stable_baselines3.common.callbacks import BaseCallback

import llm_gym
import llm_gym.envs.scoring as env_scoring
import llm_gym.wrappers.functions as functions
import llm_gym.wrappers.terms as terms
from agents import GRPO
from llm_gym.envs import GroupVecEnv, MultiTurnEnv, SequenceVecEnv, TurnResult
from llm_gym.tasks import Problem
from llm_gym.wrappers import (
    ClipReward,
    FormatReward,
    LengthPenalty,
    OverlongPenalty,
    RewardModel,
    ScaleReward,
    TurnLimit,
)

T = 8  # max_new_tokens
N = 4  # n_prompts x group_size


class Counted:
    """Wraps a function and records the batch size (first argument's length) of every call."""

    def __init__(self, fn, name: str):
        self.fn, self.__name__, self.calls = fn, name, []

    def __call__(self, *args, **kwargs):
        self.calls.append(len(args[0]))
        return self.fn(*args, **kwargs)


def digits(prompts, responses, answers, **fields):
    return [sum(c.isdigit() for c in r) / max(len(r), 1) for r in responses]


def short(prompts, responses, answers, **fields):
    return [float(len(r) < 4) for r in responses]


def every_step(prompts, steps, answers, **fields):
    """A process reward with a value (never None) for every step, so ``info["step_rewards"]`` lists them all."""
    return [[0.1] * len(row) for row in steps]


class Ends(BaseCallback):
    """Records, for every callback step, the indices and infos of the episodes that ended on it."""

    def __init__(self):
        super().__init__()
        self.steps: list[list[dict]] = []

    def _on_step(self) -> bool:
        self.steps.append([info for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True)
                           if done])
        return True


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    from llm_gym.reward_models import RewardModelScorer, build_tiny_reward_backbone

    return RewardModelScorer(str(build_tiny_reward_backbone(tmp_path_factory.mktemp("rm"))), device="cpu")


@pytest.fixture
def counted(monkeypatch, scorer):
    """Counters for every reward function; the library's own ones are patched where the layers look them up."""
    c = {"digits": Counted(digits, "digits"), "short": Counted(short, "short"),
         "steps": Counted(every_step, "every_step"), "reward_model": Counted(scorer, "reward_model"),
         "accuracy": Counted(env_scoring.math_answer_reward, "math_answer_reward"),
         "format": Counted(functions.boxed_format_reward, "boxed_format_reward"),
         "length": Counted(terms.length_penalty, "length_penalty"),
         "overlong": Counted(terms.overlong_penalty, "overlong_penalty")}
    monkeypatch.setattr(env_scoring, "math_answer_reward", c["accuracy"])
    monkeypatch.setattr(functions, "boxed_format_reward", c["format"])
    monkeypatch.setattr(terms, "length_penalty", c["length"])
    monkeypatch.setattr(terms, "overlong_penalty", c["overlong"])
    return c


def env_kwargs(tiny_model_dir, c, process: bool = True) -> dict:
    kwargs = {"model": str(tiny_model_dir), "device": "cpu", "max_new_tokens": T,
              "reward_fn": {"digits": c["digits"], "short": c["short"]}}
    return kwargs | ({"n_problems": 20, "max_prompt_length": 96, "process_reward_fn": c["steps"]} if process else {})


def stack(env: gym.Env, c: dict) -> gym.Env:
    """Every built-in reward layer: format, length and overlong terms, a reward model, scale and clip."""
    env = OverlongPenalty(LengthPenalty(FormatReward(env, weight=0.5), coef=0.1), overlong_buffer=2)
    return ClipReward(ScaleReward(RewardModel(env, c["reward_model"], weight=0.1, replace=False), 2.0), -5.0, 5.0)


def learn_one_rollout(env, c, n_prompts: int = 2) -> Ends:
    model = GRPO("LLMPolicy", env, n_prompts=n_prompts, group_size=2, seed=0, device="cpu")
    for counter in c.values():
        counter.calls.clear()  # the constructors validate their arguments with the length functions
    ends = Ends()
    model.learn(1, callback=ends)
    assert model.num_timesteps >= 2 * n_prompts and model._n_updates > 0
    return model, ends


OUTCOME = ("digits", "short", "accuracy", "format", "length", "overlong", "reward_model")


@pytest.mark.parametrize("path", ["single_env", "group_vec_env"])
def test_sequence_level_calls_each_reward_function_once_per_rollout(tiny_model_dir, counted, path):
    kwargs = env_kwargs(tiny_model_dir, counted)
    if path == "single_env":  # the default path: SB3 would step it once per response
        env = stack(gym.make("LLMMath-v0", **kwargs), counted)
    else:
        env = llm_gym.make_group_vec_env("LLMMath-v0", N, wrapper_class=stack, wrapper_kwargs={"c": counted},
                                         **kwargs)
    model, ends = learn_one_rollout(env, counted)
    assert isinstance(model.env, SequenceVecEnv if path == "single_env" else GroupVecEnv)
    finals = [info for step in ends.steps for info in step]
    assert len(finals) == N and all("episode" in info for info in finals)
    assert {name: counted[name].calls for name in OUTCOME} == {name: [N] for name in OUTCOME}
    assert counted["steps"].calls == [sum(bool(info["step_rewards"]) for info in finals)]  # rows with steps
    assert len(ends.steps) == (N if path == "single_env" else 1)  # callbacks: one per response of a single env


def test_token_level_calls_once_per_vector_step_with_endings(tiny_model_dir, counted):
    n = 8  # 8 responses of up to 24 tokens: some end early with EOS, on different vector steps
    env = llm_gym.make_group_vec_env("LLMMathToken-v0", n, wrapper_class=stack, wrapper_kwargs={"c": counted},
                                     **(env_kwargs(tiny_model_dir, counted) | {"max_new_tokens": 24}))
    _, ends = learn_one_rollout(env, counted, n_prompts=4)
    finals = [info for step in ends.steps for info in step]
    assert len(finals) == n and len(ends.steps) == max(info["token_index"] for info in finals) + 1  # one wave
    ending = [len(step) for step in ends.steps if step]  # rows ending on each vector step that has endings
    assert len(ending) >= 2  # on this platform's seeded sampling; the counts below hold whatever it is
    assert {name: counted[name].calls for name in OUTCOME} == {name: ending for name in OUTCOME}
    # The process function: once per vector step on which a row ends (with steps) or completes a step.
    scored = {}
    for info in finals:
        last = info["token_index"]
        for t in {i for i, _ in info["step_rewards"] if i < last} | ({last} if info["step_rewards"] else set()):
            scored[t] = scored.get(t, 0) + 1
    assert counted["steps"].calls == [scored[t] for t in sorted(scored)]


class ParityEnv(MultiTurnEnv):
    """A turn whose characters' code points sum to an even number is a final answer, scored by the env's
    reward (``score_answer``); the env answers the others. Episodes end on different turns."""

    def respond(self, turn_text: str) -> TurnResult:
        if sum(map(ord, turn_text)) % 2 == 0:
            return TurnResult(None, score_answer=True)
        return TurnResult("Go on.")


def test_multi_turn_calls_once_per_vector_step_with_endings(tiny_model_dir, counted):
    n = 8
    kwargs = env_kwargs(tiny_model_dir, counted, process=False) | {
        "dataset": [Problem(id=f"p{k}", question=f"What is {k} + 1?", answer=str(k + 1)) for k in range(4)],
        "max_prompt_length": None, "max_turns": 4, "max_message_tokens": 16}
    env = GroupVecEnv([lambda: stack(TurnLimit(ParityEnv(**kwargs), max_turns=3), counted) for _ in range(n)],
                      monitor=True)
    assert len(env.scorers) == 1
    _, ends = learn_one_rollout(env, counted, n_prompts=4)
    assert sum(len(step) for step in ends.steps) == n
    ending = [len(step) for step in ends.steps if step]
    answered = [k for k in (sum(not i["TimeLimit.truncated"] for i in step) for step in ends.steps) if k]
    assert len(ending) >= 2 and len(answered) >= 2  # on this platform's seeded sampling
    assert {name: counted[name].calls for name in ("format", "length", "reward_model")} == {
        name: ending for name in ("format", "length", "reward_model")}
    # OverlongPenalty: one call per such step too, on every turn of the episodes that end (summed per episode).
    assert counted["overlong"].calls == [sum(len(i["turn_spans"]) for i in step) for step in ends.steps if step]
    # The env's own reward scores final answers (episodes the env terminated), once per vector step with any.
    assert {name: counted[name].calls for name in ("digits", "short", "accuracy")} == {
        name: answered for name in ("digits", "short", "accuracy")}
    assert counted["steps"].calls == []
