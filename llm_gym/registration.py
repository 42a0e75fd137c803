"""Every environment llm-gym registers, in one flat list (``import llm_gym`` runs it)."""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

_SEQUENCE = "llm_gym.envs.sequence:SequenceEnv"
_TOKEN = "llm_gym.envs.token:TokenEnv"
_TOOL_MATH = "llm_gym.envs.multiturn:ToolMathEnv"
_GUESS_NUMBER = "llm_gym.envs.multiturn:GuessNumberEnv"
_TEXTARENA = "llm_gym.envs.textarena:TextArenaEnv"
_OPENENV = "llm_gym.envs.openenv:OpenEnvEnv"
_REASONING_GYM = "llm_gym.envs.reasoning_gym:ReasoningGymEnv"
_REASONING_GYM_TOKEN = "llm_gym.envs.reasoning_gym:ReasoningGymTokenEnv"

SEQUENCE_ENV_IDS = ("LLMMath-v0", "LLMGSM8K-v0")
TOKEN_ENV_IDS = ("LLMMathToken-v0", "LLMGSM8KToken-v0")
ENV_IDS = SEQUENCE_ENV_IDS + TOKEN_ENV_IDS  # single-turn envs (one response per episode)
# Multi-turn envs (one step = one assistant turn, observation with an assistant_mask): not in ENV_IDS, whose
# envs share the single-turn spaces and info.
MULTITURN_ENV_IDS = ("LLMToolMath-v0", "LLMGuessNumber-v0")
# reasoning-gym's procedural tasks (task=...): single-turn, sequence and token level.
REASONING_GYM_ENV_IDS = ("LLMReasoningGym-v0", "LLMReasoningGymToken-v0")
# Adapters over optional third-party packages (the `tasks` extra: pip install -e ".[tasks]"); registered
# always, their packages imported only by gym.make. TextArena and OpenEnv are multi-turn, one step = one
# assistant turn; LLMOpenEnv-v0 needs base_url= (an OpenEnv server) or env= (an OpenEnv Environment class).
EXTRA_ENV_IDS = ("LLMTextArena-v0", "LLMOpenEnv-v0", *REASONING_GYM_ENV_IDS)

# Arithmetic curriculum, levels 1 (a + b, a, b <= 20) and 2 (a +/- b up to 100): a 135M model gets
# reward signal there. A fixed prompt length keeps the train and test splits' spaces equal.
_MATH_KWARGS = {"task": "arithmetic", "difficulty": (1, 2), "max_new_tokens": 64, "max_prompt_length": 128}
# The 100 GSM8K original test problems (test only), with room for worked solutions.
_GSM8K_KWARGS = {"task": "gsm8k", "split": "test", "max_new_tokens": 256, "max_prompt_length": 512}

# Multi-digit arithmetic with a calculator (<calc>EXPR</calc>): up to 3 rounds of calls, then the answer.
_TOOL_MATH_KWARGS = {"task": "arithmetic_tool", "difficulty": (1, 2), "max_new_tokens": 64,
                     "max_prompt_length": 256, "max_turns": 4}
# Guess a number in 1..100 with higher/lower feedback: 7 turns are enough for binary search.
_GUESS_NUMBER_KWARGS = {"low": 1, "high": 100, "max_turns": 7, "max_new_tokens": 16, "max_prompt_length": 128,
                        "max_message_tokens": 24}

# A TextArena single-player game (game=...; llm_gym.envs.textarena.single_player_games()); guesses in 1..20.
_TEXTARENA_KWARGS = {"game": "GuessTheNumber-v0", "max_new_tokens": 32, "max_message_tokens": 48}
# Any OpenEnv environment: base_url="http://127.0.0.1:8000" or env=MyEnvironment.
_OPENENV_KWARGS = {"max_new_tokens": 64, "max_message_tokens": 64, "max_turns": 8}
# A reasoning-gym dataset (task=..., its config keywords; size problems made on demand), answers in <answer> tags.
_REASONING_GYM_KWARGS = {"task": "leg_counting", "max_new_tokens": 128}


def register_envs() -> None:
    """Register llm-gym's environments with Gymnasium (idempotent, per id)."""
    for env_id, entry_point, kwargs in (
        ("LLMMath-v0", _SEQUENCE, _MATH_KWARGS),
        ("LLMGSM8K-v0", _SEQUENCE, _GSM8K_KWARGS),
        # Token level: the same problems, prompts, reward and budgets, one token per step.
        ("LLMMathToken-v0", _TOKEN, _MATH_KWARGS),
        ("LLMGSM8KToken-v0", _TOKEN, _GSM8K_KWARGS),
        # Multi-turn: one step = one assistant turn; the env answers (tool results, feedback).
        ("LLMToolMath-v0", _TOOL_MATH, _TOOL_MATH_KWARGS),
        ("LLMGuessNumber-v0", _GUESS_NUMBER, _GUESS_NUMBER_KWARGS),
        # Third-party tasks (the `tasks` extra).
        ("LLMTextArena-v0", _TEXTARENA, _TEXTARENA_KWARGS),
        ("LLMOpenEnv-v0", _OPENENV, _OPENENV_KWARGS),
        ("LLMReasoningGym-v0", _REASONING_GYM, _REASONING_GYM_KWARGS),
        ("LLMReasoningGymToken-v0", _REASONING_GYM_TOKEN, _REASONING_GYM_KWARGS),
    ):
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point, kwargs=dict(kwargs))
