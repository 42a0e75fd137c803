"""Every environment llm-gym registers, in one flat list (``import llm_gym`` runs it)."""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

_SEQUENCE = "llm_gym.envs.sequence:SequenceEnv"
_TOKEN = "llm_gym.envs.token:TokenEnv"

SEQUENCE_ENV_IDS = ("LLMMath-v0", "LLMGSM8K-v0")
TOKEN_ENV_IDS = ("LLMMathToken-v0", "LLMGSM8KToken-v0")
ENV_IDS = SEQUENCE_ENV_IDS + TOKEN_ENV_IDS

# Arithmetic curriculum, levels 1 (a + b, a, b <= 20) and 2 (a +/- b up to 100): a 135M model gets
# reward signal there. A fixed prompt length keeps the train and test splits' spaces equal.
_MATH_KWARGS = {"task": "arithmetic", "difficulty": (1, 2), "max_new_tokens": 64, "max_prompt_length": 128}
# The 100 GSM8K original test problems (test only), with room for worked solutions.
_GSM8K_KWARGS = {"task": "gsm8k", "split": "test", "max_new_tokens": 256, "max_prompt_length": 512}


def register_envs() -> None:
    """Register llm-gym's environments with Gymnasium (idempotent, per id)."""
    for env_id, entry_point, kwargs in (
        ("LLMMath-v0", _SEQUENCE, _MATH_KWARGS),
        ("LLMGSM8K-v0", _SEQUENCE, _GSM8K_KWARGS),
        # Token level: the same problems, prompts, reward and budgets, one token per step.
        ("LLMMathToken-v0", _TOKEN, _MATH_KWARGS),
        ("LLMGSM8KToken-v0", _TOKEN, _GSM8K_KWARGS),
    ):
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point, kwargs=dict(kwargs))
