"""Text an env sends back to the model: valid Unicode, and special-token text kept as plain text.

A multi-turn env answers the policy with text built partly from the policy's own words (a tool call's
expression, an external game's echo). Two things in such text would break the token-in/token-out contract:

- a lone surrogate (``"\\ud800"``, which a JSON escape produces): not encodable as UTF-8, so a Hugging Face
  tokenizer raises inside ``env.step``. :func:`valid_text` replaces it with U+FFFD (a surrogate pair
  written as two escapes becomes its character);
- special-token text (``"<|im_end|>"``, ``"<eos>"``, whatever the tokenizer's special tokens are): a
  tokenizer turns it into the special token's id, so the policy could end a turn or fake a role in the env's
  message. :func:`encode_message` encodes the message part with ``split_special_tokens=True`` (plain text),
  the chat template around it as usual.

>>> valid_text("2 \\ud800+ 3") == "2 \\ufffd+ 3", valid_text("\\ud83d\\ude00") == "\\U0001f600"
(True, True)
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MESSAGE_PLACEHOLDER", "encode_message", "has_special_text", "special_token_texts", "valid_text"]

_SURROGATE = re.compile("[\ud800-\udfff]")
#: Stands in for the message when the chat template is rendered, to find where the message goes.
MESSAGE_PLACEHOLDER = "LLMGYMENVMESSAGEPLACEHOLDER"


def valid_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so it encodes as UTF-8 (same object if none).

    Args:
        text: Any string.

    Returns:
        ``text``, or a copy where a surrogate pair becomes its character and a lone surrogate ``"\\ufffd"``.
    """
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def special_token_texts(tokenizer: Any) -> list[str]:
    """The text of every special token of a Hugging Face tokenizer (``all_special_tokens`` and special added tokens)."""
    texts = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            texts.add(str(token.content))
    return sorted(t for t in texts if t)


def has_special_text(text: str, tokenizer: Any) -> bool:
    """True when ``text`` contains the text of one of ``tokenizer``'s special tokens."""
    return any(token in text for token in special_token_texts(tokenizer))


def encode_message(tokenizer: Any, rendered: str, message: str, render: Any) -> list[int]:
    """Token ids of ``rendered`` (a chat-template rendering around ``message``), ``message`` as plain text.

    When ``message`` holds no special-token text this is ``tokenizer(rendered)`` as it is. Otherwise
    ``render(MESSAGE_PLACEHOLDER)`` locates the message in the template's text: the text before and after it
    is encoded as usual (the template's own special tokens stay special) and the message with
    ``split_special_tokens=True``. If the template does not show the placeholder exactly once (it rewrites
    the content), the special-token texts in the message are broken up with a zero-width space instead.

    Args:
        tokenizer: A Hugging Face tokenizer.
        rendered: The full text to encode, ``render(message)``.
        message: The env's message (valid text).
        render: ``render(content) -> text``, the same rendering with another content.

    Returns:
        The ids, no special tokens added.
    """
    if not has_special_text(message, tokenizer):
        return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    template = render(MESSAGE_PLACEHOLDER)
    if template.count(MESSAGE_PLACEHOLDER) != 1:
        escaped = message
        for token in special_token_texts(tokenizer):
            escaped = escaped.replace(token, token[:1] + "\u200b" + token[1:])
        return list(tokenizer(render(escaped), add_special_tokens=False)["input_ids"])
    before, after = template.split(MESSAGE_PLACEHOLDER)
    ids = tokenizer(before, add_special_tokens=False)["input_ids"] if before else []
    ids = [*ids, *_plain_ids(tokenizer, message)]
    return ids + (tokenizer(after, add_special_tokens=False)["input_ids"] if after else [])


def _plain_ids(tokenizer: Any, text: str) -> list[int]:
    """``text``'s ids with special-token text encoded as plain text (``split_special_tokens=True``).

    A fast tokenizer keeps that mode on its backend after the call; it is put back as it was.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    mode = getattr(backend, "encode_special_tokens", None)
    try:
        return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    finally:
        if mode is not None:
            backend.encode_special_tokens = mode
