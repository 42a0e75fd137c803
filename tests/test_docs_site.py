"""The docs site works offline: its pages load nothing from outside the site, and the math renders.

The site is built once into a temporary folder (``mkdocs build``, about 4 s). Every page's HTML is checked for
resources fetched from an ``http(s)://`` or ``//`` origin (``<script src>``, ``<link href>`` of a stylesheet,
icon, preload..., ``<img>``/``<iframe>``/media sources, ``@import`` and ``url(...)`` in ``<style>`` and
``style=``), and so is every CSS file of the site. Plain navigation links (``<a href>``) are not loads. Then the
pages with math must load MathJax from the site itself (docs/hooks/mathjax.py copies it from the pinned
``django-static-mathjax`` package), with the fonts and TeX extensions it fetches at run time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
MATHJAX = "assets/mathjax/tex-mml-chtml.js"
#: ``<link rel=...>`` values that name another document instead of fetching a resource for the page.
NON_LOADING_LINK_RELS = {"canonical", "alternate", "author", "license", "prev", "next", "help", "me", "search"}
#: Attributes that make the browser fetch a URL, by tag ("*" = any tag).
LOADING_ATTRS = {"script": ("src",), "img": ("src", "srcset"), "iframe": ("src",), "embed": ("src",),
                 "source": ("src", "srcset"), "audio": ("src",), "video": ("src", "poster"), "track": ("src",),
                 "input": ("src",), "object": ("data",), "image": ("href", "xlink:href"), "use": ("href", "xlink:href")}
CSS_URL = re.compile(r"""@import\s+(?:url\(\s*)?["']?([^"')\s;]+)|url\(\s*["']?([^"')\s]+)""", re.IGNORECASE)


def is_external(url: str) -> bool:
    """Whether ``url`` points at another origin (``http:``, ``https:`` or protocol-relative ``//``)."""
    url = url.strip().lower()
    return url.startswith(("http:", "https:", "//"))


def css_external_urls(css: str) -> list[str]:
    """The outside URLs that CSS text fetches through ``@import`` or ``url(...)``."""
    return [u for m in CSS_URL.finditer(css) for u in m.groups() if u and is_external(u)]


class _Loads(HTMLParser):
    """Collects every URL an HTML page makes the browser fetch, and its ``<script src>`` values."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self.css: list[str] = []
        self.scripts: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): v or "" for k, v in attrs}
        if tag == "link" and "href" in values:
            rels = set(values.get("rel", "").lower().split())
            if not rels or not rels <= NON_LOADING_LINK_RELS:
                self.urls.append(values["href"])
        for name in LOADING_ATTRS.get(tag, ()):
            if name in values:
                # srcset: "url 1x, url 2x"
                self.urls += [part.split()[0] for part in values[name].split(",") if part.split()] \
                    if name == "srcset" else [values[name]]
        if tag == "script" and "src" in values:
            self.scripts.append(values["src"])
        if "style" in values:
            self.css.append(values["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.css.append(data)


def parse(html: str) -> _Loads:
    parser = _Loads()
    parser.feed(html)
    parser.close()
    return parser


def html_external_urls(html: str) -> list[str]:
    """The outside URLs that an HTML page fetches (scripts, stylesheets, icons, images, inline CSS...)."""
    page = parse(html)
    return [u for u in page.urls if is_external(u)] + [u for css in page.css for u in css_external_urls(css)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs site, built from the working tree into a temporary folder."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (make setup installs it)")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mkdocs build failed:\n{done.stdout}\n{done.stderr}"
    return out


# ---- the check itself can fail -----------------------------------------------------------------------------


def test_the_check_finds_outside_loads_in_html() -> None:
    html = """<html><head>
      <script src="https://unpkg.com/mathjax@3/es5/tex-mml-chtml.js"></script>
      <script src="../assets/javascripts/bundle.js"></script>
      <link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">
      <link rel="preconnect" href="//fonts.gstatic.com">
      <link rel="stylesheet" href="../assets/stylesheets/main.css">
      <link rel="canonical" href="https://example.org/page/">
      <style>@import url("https://fonts.example.com/a.css"); .x { background: url(../img/a.png) }</style>
    </head><body>
      <img src="http://example.com/a.png" srcset="img/b.png 1x, https://cdn.example.com/b@2x.png 2x">
      <div style="background-image: url('https://example.com/bg.png')"></div>
      <a href="https://squidfunk.github.io/mkdocs-material/">Material</a>
    </body></html>"""
    assert html_external_urls(html) == [
        "https://unpkg.com/mathjax@3/es5/tex-mml-chtml.js",
        "https://fonts.googleapis.com/css?family=Roboto",
        "//fonts.gstatic.com",
        "http://example.com/a.png",
        "https://cdn.example.com/b@2x.png",
        "https://fonts.example.com/a.css",
        "https://example.com/bg.png",
    ]
    local = '<script src="assets/mathjax/tex-mml-chtml.js"></script><a href="https://example.org">a link</a>'
    assert html_external_urls(local) == []


def test_the_check_finds_outside_loads_in_css() -> None:
    css = """@import "https://fonts.googleapis.com/css?family=Roboto";
    @import url(//cdn.example.com/x.css);
    .a { background: url("https://example.com/i.png") }
    .b { background: url("data:image/svg+xml;charset=utf-8,<svg/>") }
    @font-face { src: url(../fonts/f.woff2) format("woff2") }"""
    assert css_external_urls(css) == ["https://fonts.googleapis.com/css?family=Roboto", "//cdn.example.com/x.css",
                                      "https://example.com/i.png"]


# ---- the built site -----------------------------------------------------------------------------------------


def test_no_page_loads_anything_from_outside_the_site(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20
    found = {str(p.relative_to(site)): urls for p in pages if (urls := html_external_urls(p.read_text("utf-8")))}
    assert found == {}, f"pages that load outside URLs: {found}"


def test_no_stylesheet_of_the_site_imports_from_outside(site: Path) -> None:
    sheets = sorted(site.rglob("*.css"))
    assert sheets, "the theme's stylesheets are missing"
    found = {str(p.relative_to(site)): urls for p in sheets if (urls := css_external_urls(p.read_text("utf-8")))}
    assert found == {}, f"stylesheets that import outside URLs: {found}"


def test_math_pages_load_mathjax_from_the_site(site: Path) -> None:
    mathjax = site / MATHJAX
    assert mathjax.is_file() and mathjax.stat().st_size > 500_000, "MathJax's bundle is not in the site"
    # What it fetches at run time, relative to its own URL: CHTML fonts and the autoloaded TeX extensions.
    assert any((mathjax.parent / "output/chtml/fonts/woff-v2").glob("*.woff"))
    assert (mathjax.parent / "input/tex/extensions").is_dir()
    math_pages = [p for p in sorted(site.rglob("*.html")) if 'class="arithmatex"' in p.read_text("utf-8")]
    assert site / "algorithms/grpo/index.html" in math_pages
    for page in math_pages:
        url = page.relative_to(site).as_posix()
        scripts = parse(page.read_text("utf-8")).scripts
        targets = {(site / urlsplit(urljoin(url, src)).path).resolve() for src in scripts}
        assert mathjax.resolve() in targets, f"{page.relative_to(site)} does not load {MATHJAX}"
