"""Math with a calculator tool: :class:`ToolMathEnv` (``"LLMToolMath-v0"``) and its prompt template."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from llm_gym.envs.multiturn.base import MultiTurnEnv, TurnResult
from llm_gym.lm import LanguageModel
from llm_gym.validation import check_real

__all__ = ["TOOL_PROMPT_TEMPLATE", "ToolMathEnv"]

# "Do not compute it yourself" and "stop": SmolLM2-135M-Instruct called the tool in 5.2 % of 96 sampled
# episodes (temperature 1.0) with this wording, 1.0 % with a plain description of the syntax or a worked
# example in the prompt (docs/benchmarks.md, "GRPO on LLMToolMath-v0").
TOOL_PROMPT_TEMPLATE = (
    "{question}\nDo not compute it yourself. Write the expression inside <calc></calc> tags, for example "
    "<calc>12 * 34 + 5</calc>, and stop. You will receive the result. Then write the final answer as "
    "\\boxed{{result}}."
)


class ToolMathEnv(MultiTurnEnv):
    """Math with a calculator tool: ``<calc>EXPR</calc>`` calls it, a turn without a call is the final answer.

    The default task, ``"arithmetic_tool"`` (:func:`~llm_gym.tasks.arithmetic_tool.arithmetic_tool_problems`),
    asks for exact multi-digit results such as ``"What is 234 * 567 - 89?"``; any SequenceEnv task
    (``"arithmetic"``, ``"gsm8k"``, ``"gsm_symbolic"``, a ``.jsonl`` path or ``dataset=``) works too. It is a
    task of :func:`llm_gym.tasks.get_problems`, so a SequenceEnv built with ``task="arithmetic_tool"`` and the
    same ``split``, ``n_problems``, ``seed`` and ``difficulty`` gets the same problems (compare with and
    without the tool). The default ``prompt_template`` (:data:`TOOL_PROMPT_TEMPLATE`) explains the calculator
    syntax.

    A turn with tool calls (found by :func:`llm_gym.tools.run_tool_calls`): the env runs every call with
    the calculator, which never raises (a bad expression such as ``1/0`` or ``foo`` gets an ``"Error: ..."``
    result), and answers with one line per call as a ``tool_role`` message: ``"{expression} = {result}"``,
    or ``"{expression}: Error: ..."``. The step's reward is ``-tool_call_cost`` per call (component
    ``"tool_cost"``). Text after a call stays in the turn as sampled (a sampler may stop at ``</calc>``).
    Whatever the policy writes, the reply is valid text the tokenizer encodes as plain tokens: a call that
    cannot be read (malformed JSON, an integer over Python's 4,300-digit limit, a radix literal such as
    ``0x10``) gets an ``"Error: ..."`` result, a ``"\\ud800"`` JSON escape becomes U+FFFD, and special-token
    text echoed from the call (``"<|im_end|>"``) stays characters (:meth:`MultiTurnEnv.message_ids`).

    A turn without tool calls is final: it is scored with the env's reward like a SequenceEnv response
    (default: math-verify ``accuracy`` of its ``\\boxed{}`` answer, plus ``format_weight`` x ``format``, or
    ``reward_fn``), and the episode terminates. Truncation (``max_turns`` or the context budget) scores
    accuracy 0.

    Info (besides MultiTurnEnv's): ``tool_calls``, this turn's list of ``(expression, result)``.

    Args:
        model: As :class:`MultiTurnEnv`.
        task: The problems' task (default ``"arithmetic_tool"``).
        tool_call_cost: Reward subtracted per tool call, a finite number >= 0.
        tool_role: Chat role of the tool's reply (``"tool"``; ``"user"`` for a template without a tool role).
        prompt_template: ``str.format`` template with ``{question}``.
        max_turns: As MultiTurnEnv (default 4: up to 3 rounds of calls, then an answer).
        **kwargs: MultiTurnEnv's and SequenceEnv's arguments.

    Raises:
        ImportError: :mod:`llm_gym.tools` is missing.
        ValueError: a bad ``tool_call_cost`` or ``tool_role``, a template that rejects ``tool_role``, or any
            MultiTurnEnv constructor error.
    """

    def __init__(
        self,
        model: str | os.PathLike | LanguageModel | None = None,
        task: str = "arithmetic_tool",
        tool_call_cost: float = 0.0,
        tool_role: str = "tool",
        prompt_template: str = TOOL_PROMPT_TEMPLATE,
        max_turns: int = 4,
        **kwargs: Any,
    ):
        owner = type(self).__name__
        self.tool_call_cost = check_real("tool_call_cost", tool_call_cost, minimum=0, owner=owner)
        if not isinstance(tool_role, str) or not tool_role:
            raise ValueError(
                f"{owner}: tool_role must be a non-empty chat role such as 'tool' or 'user', got "
                f"{tool_role!r}."
            )
        self.tool_role = tool_role
        self.message_roles = (tool_role,)
        try:
            from llm_gym.tools import run_tool_calls
        except ImportError as exc:
            raise ImportError(
                f"{owner} needs llm_gym.tools (run_tool_calls, the calculator): {exc}. Install "
                f"llm-gym completely (the module ships with it)."
            ) from exc
        self._run_tool_calls: Callable[[str], list] = run_tool_calls
        super().__init__(model, max_turns=max_turns, task=task, prompt_template=prompt_template, **kwargs)

    def respond(self, turn_text: str) -> TurnResult:
        """Run the turn's calculator calls and send the results back; no call = final answer, scored.

        Args:
            turn_text: The turn's text.

        Returns:
            A :class:`TurnResult`: the tool's reply and ``-tool_call_cost`` per call, or (no call) a final
            turn the env scores with its reward (``score_answer=True``).
        """
        calls = [(call.expression, str(result)) for call, result in self._run_tool_calls(turn_text)]
        if not calls:  # the final answer: the env scores it with its reward (score_pending, batched)
            return TurnResult(None, info={"tool_calls": []}, score_answer=True)
        lines = [f"{expr}: {res}" if res.startswith("Error") else f"{expr} = {res}" for expr, res in calls]
        cost = 0.0 - self.tool_call_cost * len(calls)  # 0.0, not -0.0, without a cost
        return TurnResult(
            "\n".join(lines), cost, {"tool_cost": cost}, role=self.tool_role, info={"tool_calls": calls}
        )
