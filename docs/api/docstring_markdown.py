"""Griffe extension for the API reference: reStructuredText bits of the docstrings as Markdown the site renders.

* Doctest examples. Many docstrings carry ``>>>`` examples in their free text or in an ``Example:`` block (which the Google
parser renders as an admonition of Markdown text), where Markdown would read ``>>>`` as nested block quotes
and ``[...]`` outputs as links. This extension wraps each such block, from its first ``>>>`` line to the next
blank or less-indented line, in a ``pycon`` code fence at the block's indentation. Blocks inside an
``Examples:`` section are left to the Google parser, which renders them as code already.
* Equations. ``:math:`x``` becomes ``$x$`` and a ``.. math::`` directive a ``$$`` block, which
  ``pymdownx.arithmatex`` and MathJax render.
* Sphinx cross-reference roles (``:func:`~agents.common.returns.gae```) become code (``gae``).
* Attributes documented with ``#:`` comments above them (``GROUP_SCALES``, ``preset``...) get those
  comments as their docstring, as Sphinx reads them.

Loaded by mkdocs.yml (``extensions:`` of the python handler). The source docstrings are not changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SECTION = re.compile(r"^(\w[\w ]*):\s*$")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_XREF_ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|exc|obj|const):`~?([^`]+)`")
_MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def fence_doctests(text: str) -> str:
    """Wrap every doctest block of ``text`` outside an ``Examples:`` section in a fenced ``pycon`` block.

    A block starts at a line whose text begins with ``>>>`` and ends before the next blank line, a line
    indented less than its first line, or the end. Lines inside an existing code fence are left alone.

    Args:
        text: A cleaned docstring (``inspect.cleandoc``: the common indentation removed).

    Returns:
        The text with each block between ```` ```pycon ```` and ```` ``` ```` lines (indented as the
        block); unchanged if it has none.

    Example:
        >>> fence_doctests("Add.\\n\\n>>> 1 + 1\\n2")
        'Add.\\n\\n```pycon\\n>>> 1 + 1\\n2\\n```'
    """
    out: list[str] = []
    section = ""
    block_indent: int | None = None  # indentation of the open block, None outside one
    in_fence = False
    for line in text.splitlines():
        if block_indent is not None and (not line.strip() or _indent(line) < block_indent):
            out.append(" " * block_indent + "```")
            block_indent = None
        if block_indent is None:
            header = _SECTION.match(line)
            if header:
                section = header.group(1).lower()
            if line.lstrip().startswith("```"):
                in_fence = not in_fence
            elif not in_fence and section != "examples" and line.lstrip().startswith(">>>"):
                block_indent = _indent(line)
                out.append(" " * block_indent + "```pycon")
        out.append(line)
    if block_indent is not None:
        out.append(" " * block_indent + "```")
    return "\n".join(out)


def math_blocks(text: str) -> str:
    """Turn each ``.. math::`` directive of ``text`` into a ``$$ ... $$`` block at the directive's indentation.

    The equation is the rest of the directive's line plus the following lines indented deeper than it.

    Args:
        text: A cleaned docstring.

    Returns:
        The text with every directive replaced; unchanged if it has none.

    Example:
        >>> math_blocks("Sum:\\n\\n.. math:: a + b\\n\\nDone.")
        'Sum:\\n\\n$$\\na + b\\n$$\\n\\nDone.'
    """
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        directive = _MATH_DIRECTIVE.match(lines[i])
        if directive is None:
            out.append(lines[i])
            i += 1
            continue
        indent, first = directive.group(1), directive.group(2).strip()
        body = [first] if first else []
        i += 1
        while i < len(lines) and (not lines[i].strip() and not body or _indent(lines[i]) > len(indent)):
            if lines[i].strip():
                body.append(lines[i].strip())
            i += 1
        out.extend([f"{indent}$$", *(indent + line for line in body), f"{indent}$$"])
    return "\n".join(out)


def markdown_docstring(text: str) -> str:
    """``text`` with its doctest blocks fenced, its equations in ``$`` / ``$$`` and its Sphinx roles as code.

    Args:
        text: A cleaned docstring.

    Returns:
        The Markdown the API pages render.

    Example:
        >>> markdown_docstring("Uses :func:`~agents.common.returns.gae` and :math:`x^2`.")
        'Uses `gae` and $x^2$.'
    """
    text = math_blocks(fence_doctests(text))
    text = _MATH_ROLE.sub(lambda m: "$" + " ".join(m.group(1).split()) + "$", text)
    return _XREF_ROLE.sub(lambda m: "`" + m.group(1).rsplit(".", 1)[-1] + "`", text)


def comment_docstring(lines: list[str], lineno: int) -> str | None:
    """The ``#:`` comment lines right above line ``lineno`` (1-based) of ``lines``, joined; None if none.

    Args:
        lines: A module's source lines.
        lineno: The 1-based line number of an attribute's assignment.

    Returns:
        The comments' text without the ``#:`` markers, one line each, or None.

    Example:
        >>> comment_docstring(["#: Valid modes.", "#: See the docs.", "MODES = ()"], 3)
        'Valid modes.\\nSee the docs.'
    """
    found: list[str] = []
    index = lineno - 2
    while index >= 0 and lines[index].strip().startswith("#:"):
        found.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    return "\n".join(found) if found else None


class DocstringMarkdown(griffe.Extension):
    """Rewrite every docstring griffe loads with :func:`markdown_docstring`; ``#:`` comments for attributes."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring in place before it is parsed (called once per object by griffe)."""
        if obj.docstring is None and obj.is_attribute and obj.lineno is not None:
            comments = comment_docstring(obj.module.lines, obj.lineno)
            if comments is not None:
                obj.docstring = griffe.Docstring(comments, lineno=obj.lineno, parent=obj,
                                                 parser=loader.docstring_parser,
                                                 parser_options=loader.docstring_options)
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
