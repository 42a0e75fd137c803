"""TextArena games as multi-turn envs (LLMTextArena-v0), played against the real textarena package."""

from __future__ import annotations

import random
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from test_sequence_env import encode_action  # noqa: E402  (tests/llm_gym is on sys.path under pytest)

import llm_gym
from llm_gym.registration import EXTRA_ENV_IDS, MULTITURN_ENV_IDS

pytest.importorskip("textarena", reason='the `tasks` extra: pip install -e ".[tasks]"')
from llm_gym.envs.textarena import TextArenaEnv, single_player_games  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
# TowerOfHanoi-v0 (3 disks) solved in the minimum 7 moves.
HANOI = ["[A C]", "[A B]", "[C B]", "[A C]", "[B A]", "[B C]", "[A C]"]


@pytest.fixture
def arena(tiny_model_dir):
    def _make(game: str = "GuessTheNumber-v0", **kwargs) -> TextArenaEnv:
        params = {"model": str(tiny_model_dir), "device": "cpu", "game": game, "max_new_tokens": 16,
                  "n_problems": 8, "max_message_tokens": 64}
        return TextArenaEnv(**(params | kwargs))

    return _make


def secret(env) -> int:
    """The number textarena's GuessTheNumber drew for this episode (its own game state)."""
    return env.unwrapped._game.state.game_state["game_number"]


def play(env, move: str):
    return env.step(encode_action(env, move))


def test_registered_with_the_extra_ids_and_game_defaults(tiny_model_dir):
    assert "LLMTextArena-v0" in EXTRA_ENV_IDS and not set(EXTRA_ENV_IDS) & set(MULTITURN_ENV_IDS)
    env = gym.make("LLMTextArena-v0", model=str(tiny_model_dir), device="cpu", n_problems=4).unwrapped
    assert isinstance(env, TextArenaEnv) and env.game == env.task == "GuessTheNumber-v0"
    # textarena's GuessTheNumber-v0 has a limit of 10 turns, checked before it counts the current one: 11 moves
    assert env.max_turns == 11 and env.max_new_tokens == 32 and env.n_problems == 4
    assert {"GuessTheNumber-v0", "TowerOfHanoi-v0", "Wordle-v0", "Mastermind-v0"} <= set(single_player_games())
    assert "TicTacToe-v0" not in single_player_games()  # two players


@pytest.mark.parametrize("game", ["GuessTheNumber-v0", "TowerOfHanoi-v0"])
def test_both_checkers_pass(arena, game):
    env = arena(game, n_problems=3)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs) and set(obs) == {"input_ids", "attention_mask", "assistant_mask"}
    assert info["episode_seed"] in env.seeds


def test_binary_search_wins_and_the_game_hints_are_the_env_messages(arena):
    env = arena()
    obs, info = env.reset(seed=0)
    assert "Guess The Number" in info["prompt_text"] and "between 1 and 20" in info["prompt_text"]
    low, high, turns = 1, 20, 0
    while True:
        guess = (low + high) // 2
        obs, reward, terminated, truncated, info = play(env, f"My guess: [{guess}]")
        turns += 1
        if terminated:
            break
        assert (reward, truncated, info["win"], info["invalid_move"]) == (0.0, False, False, False)
        hint = info["env_message"]
        assert hint in ("The target number is higher.", "The target number is lower.")  # textarena's text
        assert hint in info["conversation_text"]  # appended to the tokens of the conversation
        low, high = (guess + 1, high) if "higher" in hint else (low, guess - 1)
    assert guess == secret(env) and turns <= 5 and not truncated
    assert (reward, info["accuracy"], info["win"], info["invalid_move"]) == (1.0, 1.0, True, False)
    assert info["turns"] == turns and info["game_reward"] == 1.0 and "Congratulations" in info["game_reason"]
    assert info["reward_components"] == {"game": 1.0} and info["env_message"] is None


def test_an_invalid_move_ends_the_episode_without_the_games_partial_credit(arena):
    env = arena()
    env.reset(options={"problem_id": 0})
    first = 1 if secret(env) != 1 else 2
    _, reward, terminated, _, info = play(env, f"[{first}]")
    assert (reward, terminated) == (0.0, False)
    _, reward, terminated, truncated, info = play(env, f"[{first}]")  # the same number again: invalid
    assert terminated and not truncated and info["turns"] == 2
    # textarena pays progress for it (1 - distance / 19 > 0); the env pays the penalty and no win
    assert info["game_reward"] > 0 and "already guessed" in info["game_reason"]
    assert (reward, info["accuracy"], info["win"], info["invalid_move"]) == (-1.0, 0.0, False, True)
    assert info["episode_reward_components"] == {"game": -1.0}
    with pytest.raises(RuntimeError, match="episode has ended"):
        play(env, "[3]")


def test_hanoi_partial_progress_then_an_invalid_move_is_not_a_win(arena):
    # The failure seen elsewhere: Wordle's partial credit for invalid moves gave a fake 100 % win rate.
    env = arena("TowerOfHanoi-v0", invalid_move_reward=0.0)
    env.reset(seed=0)
    for move in HANOI[:4]:  # disk 3 is on C: one third of the puzzle
        _, reward, terminated, _, info = play(env, move)
        assert not terminated and "Current Board" in info["env_message"]
    assert "C: [3]" in info["env_message"]
    _, reward, terminated, _, info = play(env, "[A B]")  # A is empty
    assert terminated and info["invalid_move"] and info["game_reward"] == pytest.approx(1 / 3)
    assert (reward, info["accuracy"], info["win"]) == (0.0, 0.0, False)
    _, info = env.reset(seed=0)
    _, reward, terminated, _, info = play(env, "I move the small disk to the right.")  # no [X Y]: invalid
    assert terminated and info["invalid_move"] and reward == 0.0 and info["turns"] == 1


def test_hanoi_solved_in_seven_moves(arena):
    env = arena("TowerOfHanoi-v0")
    assert env.max_turns == 15  # the game's 14 + 1
    env.reset(seed=3)
    for i, move in enumerate(HANOI, 1):
        _, reward, terminated, truncated, info = play(env, f"Move {i}: {move}")
    assert terminated and not truncated and info["turns"] == 7
    assert (reward, info["accuracy"], info["win"], info["invalid_move"]) == (1.0, 1.0, True, False)


def test_the_games_turn_limit_ends_the_episode_with_its_partial_credit(arena):
    env = arena()
    env.reset(options={"problem_id": 1})
    wrong = [g for g in range(1, 21) if g != secret(env)]
    for guess in wrong[: env.max_turns]:
        _, reward, terminated, truncated, info = play(env, f"[{guess}]")
        if terminated:
            break
    assert info["turns"] == env.max_turns == 11 and terminated and not truncated  # the game ended it, not the env
    assert 0 < reward < 1 and reward == info["game_reward"] and "turn limit" in info["game_reason"]
    assert (info["accuracy"], info["win"], info["invalid_move"]) == (0.0, False, False)


def test_a_shorter_max_turns_truncates_with_no_reward(arena):
    env = arena(max_turns=2)
    env.reset(options={"problem_id": 1})
    wrong = [g for g in range(1, 21) if g != secret(env)]
    play(env, f"[{wrong[0]}]")
    _, reward, terminated, truncated, info = play(env, f"[{wrong[1]}]")
    assert truncated and not terminated and reward == 0.0 and info["accuracy"] == 0.0 and not info["win"]


def test_problems_are_reset_seeds_replayed_exactly_and_the_global_random_state_is_untouched(arena):
    env, other = arena(), arena()
    assert env.seeds == tuple(range(8)) and [p.id for p in env.problems][:2] == ["textarena/train/0",
                                                                               "textarena/train/1"]
    test = arena(split="test", n_problems=2)
    assert test.seeds == (1_000_000, 1_000_001) and not set(test.seeds) & set(env.seeds)
    secrets = []
    for k in range(8):
        env.reset(options={"problem_id": k})
        secrets.append(secret(env))
    assert len(set(secrets)) > 1  # the seeds give different games
    random.seed(123)
    np.random.seed(7)
    state, np_state = random.getstate(), np.random.get_state()[1].copy()
    for k in (5, 2, 5):  # interleaved with another env: each replays its own game
        env.reset(options={"problem_id": k})
        other.reset(options={"problem_id": 2})
        play(other, "[1]")
        assert secret(env) == secrets[k] and secret(other) == secrets[2]
    assert random.getstate() == state and np.array_equal(np.random.get_state()[1], np_state)


def test_bad_game_names_and_arguments_get_clear_errors(arena, tiny_model_dir):
    with pytest.raises(ValueError, match=r"unknown game 'Wordle'.*single-player games.*GuessTheNumber-v0.*"
                                         r"TowerOfHanoi-v0"):
        arena("Wordle")
    with pytest.raises(ValueError, match="unknown game 'TicTacToe-v0'"):
        arena("TicTacToe-v0")
    with pytest.raises(ValueError, match="dataset cannot be set"):
        arena(dataset=[{"question": "q", "answer": "1"}])
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        arena(split="validation")
    with pytest.raises(ValueError, match="invalid_move_reward"):
        arena(invalid_move_reward=float("nan"))


def test_missing_package_names_the_extra(monkeypatch, tiny_model_dir):
    monkeypatch.setitem(sys.modules, "textarena", None)  # `import textarena` raises ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[tasks\]"'):
        TextArenaEnv(model=str(tiny_model_dir), device="cpu")


def test_grpo_logs_win_rate_and_turns(tiny_model_dir):
    from agents import GRPO

    env = llm_gym.make_group_vec_env("LLMTextArena-v0", n_envs=4, model=str(tiny_model_dir), device="cpu",
                                     max_new_tokens=6, n_problems=4, max_turns=3)
    model = GRPO("LLMPolicy", env, seed=0, n_prompts=2, group_size=2)
    model.learn(4)
    infos = model.rollout_buffer.samples.infos
    assert all("win" in i and "invalid_move" in i for i in infos)
    stats = model._rollout_stats
    assert stats["rollout/accuracy"] == pytest.approx(np.mean([i["win"] for i in infos]))  # the win rate
    assert stats["rollout/num_turns"] == pytest.approx(np.mean([i["turns"] for i in infos]))
