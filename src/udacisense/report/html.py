"""``report.html``: the Markdown report as one self-contained page (figures embedded, no network)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import markdown

from udacisense.io import atomic_write

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1180px; margin: 2rem auto; padding: 0 1.2rem; color: #111827; }
h1 { border-bottom: 3px solid #2563eb; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #e5e7eb; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: 13px; }
th, td { border: 1px solid #e5e7eb; padding: .3rem .55rem; }
th { background: #f3f4f6; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f3f4f6; padding: 0 .25rem; border-radius: 3px; font-size: 12.5px; }
pre { background: #f3f4f6; padding: .7rem; overflow-x: auto; }
img { max-width: 100%; display: block; margin: .8rem 0; }
"""

# Marks the page once every figure has decoded, so a headless browser (and a test) can tell it rendered.
CHECK_SCRIPT = """
window.addEventListener("error", () => { document.body.dataset.errors = Number(document.body.dataset.errors || 0) + 1; }, true);
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.figures = images.length;
  document.body.dataset.figuresRendered = images.filter((image) => image.complete && image.naturalWidth > 0).length;
});
"""


def write_html(markdown_text: str, base: Path, path: Path, title: str) -> Path:
    """Render ``markdown_text`` to ``path``, embedding every local image it references (relative to ``base``)."""
    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"])

    def embed(match: re.Match) -> str:
        source = base / html.unescape(match.group(1))
        data = base64.b64encode(source.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^":]+\.png)"', embed, body)
    page = (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}</title>\n"
            f"<style>{STYLE}</style>\n<script>{CHECK_SCRIPT}</script>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
    return atomic_write(path, lambda handle: handle.write(page.encode()))
