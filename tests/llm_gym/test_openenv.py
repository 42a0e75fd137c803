"""OpenEnv environments as multi-turn envs, played against a real OpenEnv server on 127.0.0.1.

The server is openenv-core's own (``HTTPEnvServer`` routes on FastAPI, served by uvicorn in a thread) around a
small guess-the-number ``Environment`` defined here with openenv's server API; the adapter talks to it over
openenv's WebSocket client. No mock.
"""

from __future__ import annotations

import random
import re
import socket
import sys
import threading
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from test_sequence_env import encode_action  # noqa: E402  (tests/llm_gym is on sys.path under pytest)

import llm_gym

pytest.importorskip("openenv.core", reason='the `tasks` extra: pip install -e ".[tasks]"')
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from openenv.core.env_server import Action, Environment, HTTPEnvServer, Observation, State  # noqa: E402

from llm_gym.envs.openenv import OpenEnvEnv, OpenEnvError, OpenEnvTimeoutError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = "Guess my number between 1 and 8. Reply with one integer."


class GuessAction(Action):
    message: str


class GuessObservation(Observation):
    text: str = ""


class GuessEnvironment(Environment):
    """Guess a number in 1..8 drawn from the reset seed; ``CRASH`` raises, ``SLOW`` takes 1.5 s."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self):
        super().__init__()
        self._state, self.secret = State(step_count=0), 0

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs) -> GuessObservation:
        self._state, self.secret = State(episode_id=episode_id, step_count=0), random.Random(seed).randint(1, 8)
        return GuessObservation(text=PROMPT, reward=0.0)

    def step(self, action: GuessAction, timeout_s: float | None = None, **kwargs) -> GuessObservation:
        if "CRASH" in action.message:
            raise RuntimeError("the game crashed")
        if "SLOW" in action.message:
            time.sleep(1.5)
        self._state.step_count += 1
        numbers = re.findall(r"\d+", action.message)
        if not numbers:
            return GuessObservation(text="Reply with one integer.", reward=-0.1)
        guess = int(numbers[-1])
        if guess == self.secret:
            return GuessObservation(text="Correct!", reward=1.0, done=True)
        if self._state.step_count >= 6:
            return GuessObservation(text=f"Out of guesses: it was {self.secret}.", reward=0.0, done=True)
        return GuessObservation(text="higher" if guess < self.secret else "lower", reward=0.0)

    @property
    def state(self) -> State:
        return self._state


class UnseededEnvironment(GuessEnvironment):
    """Its first observation changes at every reset, whatever the seed."""

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs) -> GuessObservation:
        super().reset(seed, episode_id)
        return GuessObservation(text=f"{PROMPT} Round {random.random():.6f}.")


class Server:
    """openenv's HTTPEnvServer on FastAPI, served by uvicorn on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, max_sessions: int = 8):
        self.http = HTTPEnvServer(GuessEnvironment, GuessAction, GuessObservation, max_concurrent_envs=max_sessions)
        app = FastAPI()
        self.http.register_routes(app)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, ws="websockets-sansio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the OpenEnv server did not start"
            time.sleep(0.02)

    def wait_sessions(self, n: int, timeout: float = 5.0) -> int:
        """The server's open sessions once they are ``n`` (or after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while self.http.active_sessions != n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.http.active_sessions

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def make(tiny_model_dir, server):
    made = []

    def _make(**kwargs) -> OpenEnvEnv:
        params = {"model": str(tiny_model_dir), "device": "cpu", "base_url": server.url, "max_new_tokens": 12,
                  "n_problems": 4, "max_turns": 6, "max_message_tokens": 32}
        env = OpenEnvEnv(**(params | kwargs))
        made.append(env)
        return env

    yield _make
    for env in made:
        env.close()
    assert server.wait_sessions(0) == 0  # every session the test opened is closed


def play(env, text: str):
    return env.step(encode_action(env, text))


def binary_search(env) -> tuple[list[tuple], dict]:
    """Play the episode by binary search on the env's hints: the steps' (reward, terminated, message)."""
    low, high, steps = 1, 8, []
    while True:
        guess = (low + high) // 2
        _, reward, terminated, truncated, info = play(env, f"I guess {guess}")
        steps.append((reward, terminated, info["env_message"]))
        if terminated or truncated:
            return steps, info
        low, high = (guess + 1, high) if info["env_message"] == "higher" else (low, guess - 1)


def test_both_checkers_pass_against_the_server(make, server):
    env = make()
    assert server.wait_sessions(1) == 1  # one WebSocket session per gym env
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs) and info["prompt_text"].count(PROMPT) == 1


def test_an_episode_against_the_server_the_rewards_and_messages_are_the_servers(make):
    env = make()
    _, info = env.reset(options={"problem_id": 2})
    assert info["episode_seed"] == 2 and env.problems[2].id == "openenv/train/2" and env.task == env.base_url
    obs, reward, terminated, _, info = play(env, "no idea")
    assert (reward, terminated, info["env_message"], info["success"]) == (-0.1, False, "Reply with one integer.",
                                                                         False)
    assert info["env_observation"] == {"text": "Reply with one integer."} and info["reward_components"] == {
        "env": -0.1}
    assert "Reply with one integer." in info["conversation_text"]  # the observation is the env message
    steps, info = binary_search(env)
    assert steps[-1][:2] == (1.0, True) and all(r == 0.0 for r, *_ in steps[:-1])
    assert (info["accuracy"], info["success"], info["env_observation"]) == (1.0, True, {"text": "Correct!"})
    assert info["turns"] == len(steps) + 1 and info["episode_reward_components"] == {"env": pytest.approx(0.9)}


def test_a_local_environment_class_plays_the_same_episodes_as_the_server(make):
    remote, local = make(), make(base_url=None, env=GuessEnvironment)
    assert local.task == "GuessEnvironment" and [p.question for p in local.problems] == [
        p.question for p in remote.problems]
    for k in range(3):
        a, _ = remote.reset(options={"problem_id": k})
        b, _ = local.reset(options={"problem_id": k})
        for text in ("4", "2", "6", "7"):
            a, ra, ta, _, _ = play(remote, text)
            b, rb, tb, _, _ = play(local, text)
            assert ra == rb and ta == tb and all(np.array_equal(a[key], b[key]) for key in a)
            if ta:
                break


def test_registered_id_vector_env_and_grpo_one_session_per_copy(tiny_model_dir, server):
    from agents import GRPO

    env = llm_gym.make_group_vec_env("LLMOpenEnv-v0", n_envs=4, model=str(tiny_model_dir), device="cpu",
                                     base_url=server.url, max_new_tokens=6, n_problems=2, max_turns=3)
    assert server.wait_sessions(4) == 4
    model = GRPO("LLMPolicy", env, seed=0, n_prompts=2, group_size=2)
    model.learn(4)
    infos = model.rollout_buffer.samples.infos
    assert model._rollout_stats["rollout/num_turns"] == pytest.approx(np.mean([i["turns"] for i in infos]))
    assert model._rollout_stats["rollout/accuracy"] == pytest.approx(np.mean([i["success"] for i in infos]))
    env.close()
    assert server.wait_sessions(0) == 0


def test_a_server_error_is_named_and_closes_the_session(make, server):
    env = make()
    env.reset(seed=0)
    with pytest.raises(OpenEnvError, match="failed on 'step'.*the game crashed.*session was closed"):
        play(env, "CRASH")
    assert server.wait_sessions(0) == 0
    with pytest.raises(OpenEnvError, match=r"closed after an error: call reset\(\)"):
        play(env, "3")  # the episode cannot go on in a new session
    env.reset(seed=0)  # a new session
    assert server.wait_sessions(1) == 1
    _, info = binary_search(env)
    assert info["success"]


def test_a_timeout_is_named_and_closes_the_session(make, server):
    env = make(timeout=0.3)
    env.reset(seed=0)
    with pytest.raises(OpenEnvTimeoutError, match=r"did not answer 'step' within timeout=0.3 s") as caught:
        play(env, "SLOW 3")
    assert isinstance(caught.value, TimeoutError)
    assert server.wait_sessions(0) == 0  # the server drops it once the slow step is over


def test_an_unreachable_server_is_a_connection_error_naming_it(tiny_model_dir):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nothing listens there
    with pytest.raises(ConnectionError, match=rf"Cannot reach the OpenEnv server at {url}.*Is the server running"):
        OpenEnvEnv(model=str(tiny_model_dir), device="cpu", base_url=url, connect_timeout=2)


def test_a_server_that_goes_away_mid_episode(tiny_model_dir):
    gone = Server()
    env = OpenEnvEnv(model=str(tiny_model_dir), device="cpu", base_url=gone.url, n_problems=1, max_new_tokens=12,
                     timeout=5)
    env.reset(seed=0)
    gone.stop()
    with pytest.raises(OpenEnvError, match="Lost the connection to the OpenEnv server"):
        play(env, "4")
    env.close()


def test_a_failed_constructor_closes_its_session(make, server, tiny_model_dir):
    with pytest.raises(ValueError, match="max_context_length"):
        OpenEnvEnv(model=str(tiny_model_dir), device="cpu", base_url=server.url, n_problems=2, max_context_length=8)
    assert server.wait_sessions(0) == 0


def test_reset_must_be_reproducible_from_the_seed(make):
    env = make(base_url=None, env=UnseededEnvironment, n_problems=2)
    with pytest.raises(RuntimeError, match="reproducible from the seed"):
        env.reset(seed=0)


def test_action_and_observation_mappings(make):
    env = make(action_fn=lambda text: {"message": text.upper()}, observation_fn=lambda f: f"[{f['text']}]")
    env.reset(options={"problem_id": 0})
    _, _, _, _, info = play(env, "none")
    assert info["env_message"] == "[Reply with one integer.]" and env.problems[0].question == f"[{PROMPT}]"
    with pytest.raises(ValueError, match=r"observation_field='board' is not a field.*\['text'\]"):
        make(observation_field="board")


def test_bad_arguments_and_missing_package(monkeypatch, server, tiny_model_dir):
    with pytest.raises(ValueError, match="exactly one of base_url"):
        OpenEnvEnv(model=str(tiny_model_dir), device="cpu")
    with pytest.raises(ValueError, match="exactly one of base_url"):
        OpenEnvEnv(model=str(tiny_model_dir), device="cpu", base_url=server.url, env=GuessEnvironment)
    with pytest.raises(ValueError, match="base_url"):
        gym.make("LLMOpenEnv-v0", model=str(tiny_model_dir), device="cpu")
    with pytest.raises(TypeError, match="Environment"):
        OpenEnvEnv(model=str(tiny_model_dir), device="cpu", env=object())
    with pytest.raises(ValueError, match="timeout"):
        OpenEnvEnv(model=str(tiny_model_dir), device="cpu", base_url=server.url, timeout=0)
    monkeypatch.setitem(sys.modules, "openenv", None)  # `from openenv import core` raises ImportError
    with pytest.raises(ImportError, match=r'openenv-core.*pip install -e "\.\[tasks\]"'):
        OpenEnvEnv(model=str(tiny_model_dir), device="cpu", base_url=server.url)
