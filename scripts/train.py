"""``python scripts/train.py ...`` is ``llm-gym train ...``: the code is agents/cli/train.py (``--help``).

This file runs that module's source in its own namespace (:mod:`agents.cli.script`), so it works under
``torchrun`` / ``accelerate launch`` and, imported by path, exposes every function of the module.
"""

from agents.cli.script import script_code

exec(script_code("agents.cli.train"))
