"""MkDocs hook: serve MathJax from the installed ``django-static-mathjax`` package, not from a CDN.

The math of docs/algorithms/ is rendered by MathJax 3 (``pymdownx.arithmatex`` emits ``\\( \\)`` and ``\\[ \\]``).
The pinned pip package ``django-static-mathjax`` (the ``docs`` extra of pyproject.toml, installed by
``make setup``) ships MathJax's ``es5/`` build inside the Python package ``mathjax``; this hook adds that build
to the site under ``assets/mathjax/``, so the pages load ``assets/mathjax/tex-mml-chtml.js`` (mkdocs.yml's
``extra_javascript``) and render offline. Copied: the ``tex-mml-chtml.js`` bundle and the folders it loads
from at run time (fonts, TeX extensions, menu, accessibility, speech rules); the other top-level bundles are
left out. ``tests/test_docs_site.py`` checks that the built site loads no outside URL.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

#: Where MathJax goes in the site; mkdocs.yml's extra_javascript names DEST/BUNDLE.
DEST = "assets/mathjax"
BUNDLE = "tex-mml-chtml.js"


def es5_dir() -> Path:
    """The ``es5/`` folder of MathJax in the installed ``django-static-mathjax`` package."""
    spec = importlib.util.find_spec("mathjax")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        es5 = Path(location) / "static" / "mathjax" / "es5"
        if (es5 / BUNDLE).is_file():
            return es5
    raise PluginError("MathJax not found: install the docs extra (`make setup`, or "
                      "`pip install -e '.[docs]'`, which pins django-static-mathjax)")


def on_files(files: Files, config) -> Files:
    """Add MathJax's bundle and the folders it loads from to the site's files."""
    src = es5_dir()
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_dir() or (len(rel.parts) == 1 and rel.name != BUNDLE):
            continue
        files.append(File.generated(config, f"{DEST}/{rel.as_posix()}", abs_src_path=str(path)))
    return files
