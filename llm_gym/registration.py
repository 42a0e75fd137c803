"""Every environment llm-gym registers, in one flat list (``import llm_gym`` runs it)."""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

_SEQUENCE = "llm_gym.envs.sequence:SequenceEnv"

ENV_IDS = ("LLMMath-v0", "LLMGSM8K-v0")


def register_envs() -> None:
    """Register llm-gym's environments with Gymnasium (idempotent)."""
    if "LLMMath-v0" in registry:
        return
    # Arithmetic curriculum, levels 1 (a + b, a, b <= 20) and 2 (a +/- b up to 100): a 135M model gets
    # reward signal there. A fixed prompt length keeps the train and test splits' spaces equal.
    register(id="LLMMath-v0", entry_point=_SEQUENCE,
             kwargs={"task": "arithmetic", "difficulty": (1, 2), "max_new_tokens": 64, "max_prompt_length": 128})
    # The 100 GSM8K original test problems (test only), with room for worked solutions.
    register(id="LLMGSM8K-v0", entry_point=_SEQUENCE,
             kwargs={"task": "gsm8k", "split": "test", "max_new_tokens": 256, "max_prompt_length": 512})
