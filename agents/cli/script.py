"""How ``scripts/train.py`` and ``scripts/evaluate.py`` run the ``llm-gym`` commands' code.

A script is two lines: ``exec(script_code("agents.cli.train"))``. It runs the package module's source in the
script's own namespace, so ``python scripts/train.py ...`` (and ``torchrun scripts/train.py``) is
``llm-gym train ...``, line for line, and a script imported by path (the tests' ``load_script``, the docs
harness) has every function of the module as its own attribute: replacing one on the script
(``monkeypatch.setattr(script, "make_envs", ...)``) changes what the script's ``main`` calls, as it did when the
code lived in the script.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import CodeType
from typing import Any

__all__ = ["script_code", "write_json"]


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` (parent folders made) and print ``wrote <path>``.

    Raises:
        TypeError: ``obj`` is not JSON-serialisable.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(obj, indent=2) + "\n")
    print(f"wrote {out}")
    return out


def script_code(module: str) -> CodeType:
    """The compiled source of ``module`` (e.g. ``"agents.cli.train"``), for ``exec`` in a script's namespace.

    Tracebacks name the module's file and lines.

    Raises:
        ModuleNotFoundError: no such module.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no module {module!r}: is llm-gym installed (pip install -e .)?")
    path = Path(spec.origin)
    return compile(path.read_text(encoding="utf-8"), str(path), "exec", dont_inherit=True)
