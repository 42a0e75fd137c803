"""``python scripts/evaluate.py ...`` is ``llm-gym eval ...``: the code is agents/cli/evaluate.py (``--help``).

This file runs that module's source in its own namespace (:mod:`agents.cli.script`), so, imported by path, it
exposes every function of the module.
"""

from agents.cli.script import script_code

exec(script_code("agents.cli.evaluate"))
