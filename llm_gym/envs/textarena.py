"""TextArena's single-player games as multi-turn envs: :class:`TextArenaEnv` (``"LLMTextArena-v0"``).

A thin adapter over the ``textarena`` package (an optional extra: ``pip install -e ".[tasks]"``): the game
keeps its rules, observations and scoring; llm-gym keeps the tokens. See :class:`TextArenaEnv`.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from llm_gym.envs.external import ExternalEpisodeEnv
from llm_gym.envs.multiturn.base import TurnResult
from llm_gym.lm import LanguageModel
from llm_gym.validation import check_int, check_real

__all__ = ["TextArenaEnv", "import_textarena", "single_player_games"]

#: Assistant turns of a game without a turn limit of its own (``max_turns=None``).
DEFAULT_MAX_TURNS = 20
_EXTRA = 'pip install -e ".[tasks]" (or pip install textarena==0.7.4)'


def import_textarena(owner: str = "TextArenaEnv") -> Any:
    """The ``textarena`` module, or an ImportError naming the extra that installs it.

    Raises:
        ImportError: textarena is not installed (the message says ``pip install -e ".[tasks]"``).
    """
    try:
        import textarena
    except ImportError as exc:
        raise ImportError(f"{owner} needs the textarena package, an optional extra of llm-gym: {_EXTRA}.") from exc
    return textarena


@functools.cache
def single_player_games() -> tuple[str, ...]:
    """The single-player game ids of the installed textarena, sorted (e.g. ``"GuessTheNumber-v0"``).

    A registered id counts when it has a wrapper-free ``"{id}-raw"`` version (the one the adapter plays) and its
    game module builds a ``textarena.SinglePlayerState`` and compiles on this Python (a few need 3.12). The
    modules are read as text, not imported: some games download word lists when imported.

    Raises:
        ImportError: textarena is not installed (names the extra).
    """
    ta = import_textarena("single_player_games")
    from textarena.envs.registration import ENV_REGISTRY

    root = Path(ta.__file__).parent
    games = []
    for env_id, spec in ENV_REGISTRY.items():
        if f"{env_id}-raw" not in ENV_REGISTRY or not isinstance(spec.entry_point, str):
            continue
        module = spec.entry_point.split(":")[0].split(".")
        path = root.joinpath(*module[1:]).with_suffix(".py")
        if module[0] == "textarena" and path.is_file() and _builds_single_player_state(path):
            games.append(env_id)
    return tuple(sorted(games))


@functools.cache
def _builds_single_player_state(path: Path) -> bool:
    """Whether the game module at ``path`` uses ``SinglePlayerState`` and compiles on this Python."""
    text = path.read_text("utf-8")
    if "SinglePlayerState" not in text:
        return False
    try:
        compile(text, str(path), "exec")
    except SyntaxError:  # e.g. f-strings that need Python 3.12
        return False
    return True


class TextArenaEnv(ExternalEpisodeEnv):
    """A single-player TextArena game, one assistant turn per move: ``gym.make("LLMTextArena-v0", game=...)``.

    The game is textarena's wrapper-free version (``"{game}-raw"``): the adapter sends each turn's text as the
    move, unchanged (textarena's default ``ActionFormattingWrapper`` would put brackets around free text, which
    turns prose into moves), and the conversation keeps the history (its default observation wrapper would
    repeat it every turn).

    Problems: one per reset seed (:class:`~llm_gym.envs.external.ExternalEpisodeEnv`: ``n_problems`` seeds from
    ``seed``, ``split="test"`` disjoint). The prompt is the game's first observation (its rules and, for board
    games, the board). The game's randomness is its own: the module-level ``random`` and ``numpy.random`` states
    are swapped for the env's while the game runs (textarena seeds ``random`` at reset; the adapter also seeds
    ``numpy.random``), so two envs in one process never share a stream and a seed replays the same game (the
    swap is per process, not per thread: run games in parallel in processes, as SB3's ``SubprocVecEnv`` does).

    Each turn: the game plays the move. The env message is the game's new observations after it (hints, the
    board; the echo of the move itself is left out), as a user message. The episode terminates when the game
    is over:

    * **win**: the game's reward is >= 1 (textarena's games give 1 for solving; partial credit is below 1);
    * **invalid move**: the first one ends the episode (the game's ``error_allowance`` is set to 0, so the game
      ends it by its own rules) with reward ``invalid_move_reward``, whatever the game's reward for it: many
      games grant partial credit on an invalid move (progress so far), which would pay a policy for breaking
      the rules, so it is never paid (it is reported as ``info["game_reward"]``);
    * **game over otherwise** (its turn limit, a lost game): the game's reward, partial credit included.

    ``max_turns`` (the env's own limit) defaults to the game's turn limit + 1 (textarena checks its limit
    before counting the current move), so the game ends its episodes by its own rules; a game without a limit
    gets :data:`DEFAULT_MAX_TURNS`. Truncation (``max_turns`` or the context budget) pays 0, not a win.

    Logged (info of every step): ``win`` and ``invalid_move`` (bools; True only on the final turn), and at the
    end of a game ``game_reward`` (the game's own reward, None if it gave none) and ``game_reason`` (its text).
    ``accuracy`` (1.0 for a win) makes ``rollout/accuracy`` the win rate and ``turns`` gives
    ``rollout/num_turns``; ``reward_components`` is ``{"game": reward}`` on the final turn.

    Args:
        model: As :class:`~llm_gym.envs.multiturn.MultiTurnEnv`.
        game: A single-player game id of the installed textarena (:func:`single_player_games`, e.g.
            ``"GuessTheNumber-v0"``, ``"TowerOfHanoi-v0"``, ``"Mastermind-v0"``; ``"Wordle-v0"`` and other word
            games download NLTK word lists at first use).
        game_kwargs: Keyword arguments of the game's constructor (e.g. ``{"max_number": 50}``), over its
            registered ones.
        max_turns: Most assistant turns per episode; None = the game's limit + 1 (see above).
        invalid_move_reward: Reward of an episode ended by an invalid move, a finite number (default -1.0,
            textarena's own penalty for an invalid move).
        n_problems: Number of reset seeds (problems), an integer >= 1.
        **kwargs: ExternalEpisodeEnv's, MultiTurnEnv's and SequenceEnv's arguments (``seed``, ``split``,
            ``max_new_tokens``, ``max_prompt_length``, ``max_message_tokens``, ``system_prompt``,
            ``prompt_template``, ...).

    Raises:
        ImportError: textarena is not installed (names the extra).
        ValueError: an unknown game (the message lists the single-player games), a game that is not
            single-player, a bad ``max_turns`` / ``invalid_move_reward``, or any ExternalEpisodeEnv error.
    """

    source = "textarena"

    def __init__(
        self,
        model: str | os.PathLike | LanguageModel | None = None,
        game: str = "GuessTheNumber-v0",
        game_kwargs: Mapping[str, Any] | None = None,
        max_turns: int | None = None,
        invalid_move_reward: float = -1.0,
        n_problems: int = 100,
        **kwargs: Any,
    ):
        owner = type(self).__name__
        ta = import_textarena(owner)
        games = single_player_games()
        if game not in games:
            raise ValueError(
                f"{owner}: unknown game {game!r}. The single-player games of textarena {ta.__version__} are: "
                f"{', '.join(games)}."
            )
        self.game = game
        self.invalid_move_reward = check_real("invalid_move_reward", invalid_move_reward, owner=owner)
        self._game = ta.make(f"{game}-raw", **dict(game_kwargs or {}))
        # The env's own `random` and `numpy.random` states, swapped in while the game runs (_own_random).
        self._random_states = (random.Random(0).getstate(), np.random.RandomState(0).get_state())
        if max_turns is None:
            self.start_episode(0)
            limit = getattr(self._game.state, "max_turns", None)
            max_turns = limit + 1 if isinstance(limit, int) and limit > 0 else DEFAULT_MAX_TURNS
        max_turns = check_int("max_turns", max_turns, minimum=1, owner=owner)
        super().__init__(model, n_problems=n_problems, max_turns=max_turns, **kwargs)
        self.task = game

    @contextmanager
    def _own_random(self, seed: int | None = None) -> Iterator[None]:
        """Run the game on the env's ``random`` / ``numpy.random`` states (``seed`` reseeds numpy's)."""
        outer = random.getstate(), np.random.get_state()
        random.setstate(self._random_states[0])
        np.random.set_state(self._random_states[1])
        if seed is not None:
            np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            self._random_states = random.getstate(), np.random.get_state()
            random.setstate(outer[0])
            np.random.set_state(outer[1])

    def _new_observations(self) -> str:
        """The game's observations since the last call, without the echo of the player's own move."""
        import textarena as ta

        _, messages = self._game.get_observation()
        texts = [text for _, text, kind in messages if kind != ta.ObservationType.PLAYER_ACTION]
        return "\n".join(t.strip() for t in texts if t.strip())

    def start_episode(self, seed: int) -> str:
        """Reset the game with ``seed`` (invalid moves end it) and return its first observation.

        Returns:
            The prompt text: the game's rules (and board).
        """
        with self._own_random(seed):
            self._game.reset(num_players=1, seed=seed)
        self._game.state.error_allowance = 0  # the first invalid move ends the game
        return self._new_observations()

    def respond(self, turn_text: str) -> TurnResult:
        """Play the turn's text as the move: the game's new observations, or (game over) its final reward.

        Args:
            turn_text: The turn's text, sent to the game unchanged.

        Returns:
            A :class:`~llm_gym.envs.multiturn.TurnResult` (see the class docstring for rewards and info).
        """
        with self._own_random():
            done, _ = self._game.step(turn_text)
        message = self._new_observations()
        state = self._game.state
        warned = getattr(state, "error_count", 0) > 0  # an invalid move the game forgave despite allowance 0
        if not done and not warned:
            return TurnResult(message, info={"win": False, "invalid_move": False})
        rewards, game_info = self._game.close()
        player = (game_info or {}).get(0, {})
        invalid = warned or bool(player.get("invalid_move", False))
        game_reward = None if not rewards or rewards.get(0) is None else float(rewards[0])
        win = not invalid and game_reward is not None and game_reward >= 1.0
        if invalid:
            reward = self.invalid_move_reward
        else:
            reward = 0.0 if game_reward is None else game_reward
        reason = player.get("reason") or (message if warned else "")
        return TurnResult(
            None,
            reward,
            {"game": reward},
            accuracy=float(win),
            info={"win": win, "invalid_move": invalid, "game_reward": game_reward, "game_reason": str(reason)},
        )
