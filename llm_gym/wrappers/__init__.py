"""Gymnasium wrappers that reshape llm-gym rewards; they work on sequence and token envs alike."""

from llm_gym.wrappers.reward import OverlongPenalty

__all__ = ["OverlongPenalty"]
