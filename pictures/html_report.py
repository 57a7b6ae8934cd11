"""Self-contained HTML reports that MLflow's artifact viewer shows inline.

Contract:
- :func:`page` returns one complete HTML document: UTF-8, a small inline ``<style>``,
  no scripts and no external resources (no stylesheet, font or image links); every
  figure is embedded by :func:`figure` as a ``data:image/png;base64`` URI.
- Every text that reaches the page goes through :func:`html.escape` unless it is an
  :class:`Html` value (markup built by the helpers here), so run names, layer names
  and notes can hold ``<``, ``&`` or quotes safely.
- :func:`table` right-aligns a column whose cells are all numbers (or placeholders
  such as ``n/a`` and ``—``) with tabular digits.
- :func:`figure_png` renders a pyplot-free ``matplotlib.figure.Figure`` at
  :data:`FIGURE_DPI`: a 6.4-inch figure becomes about 700 px wide, its natural
  size on the page; wider figures shrink to the page width.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_DPI = 110
_NUMBER = r"[+\-−]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+\-]?\d+)?%?"
_NUMERIC = re.compile(rf"{_NUMBER}(?:\s*(?:±\s*)?{_NUMBER})*")
_PLACEHOLDERS = {"", "n/a", "nan", "—", "–", "-"}
_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       margin: 0; padding: 12px 16px 40px; max-width: 1000px; background: #fff; }
h1 { font-size: 1.5em; margin: 0.2em 0 0.6em; }
h2 { font-size: 1.22em; margin: 1.6em 0 0.5em; padding-bottom: 0.2em; border-bottom: 1px solid #d8dee4; }
h3 { font-size: 1.05em; margin: 1.3em 0 0.4em; }
p, ul { margin: 0.4em 0 0.8em; }
li { margin: 0.2em 0; }
code { font: 0.88em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f3f4f6;
       padding: 0.1em 0.3em; border-radius: 4px; }
.lead { font-size: 1.1em; background: #eef6ee; border-left: 4px solid #2e7d32; padding: 0.6em 0.9em; }
.muted { color: #59636e; }
.warning { font-size: 1.1em; background: #fff4e5; border-left: 4px solid #b26a00; padding: 0.6em 0.9em; }
.table { overflow-x: auto; margin: 0.5em 0 1.2em; }
table { border-collapse: collapse; font-size: 0.93em; }
th, td { border: 1px solid #d8dee4; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
thead th { background: #f6f8fa; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafbfc; }
th[scope=row] { background: #f6f8fa; font-weight: 600; }
th[scope=row], td:first-child { white-space: nowrap; }
td code { font-size: 0.8em; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.6em 0 1.2em; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figure img.pixels { image-rendering: pixelated; }
figcaption { color: #59636e; font-size: 0.9em; margin-top: 0.3em; }
"""
PICTURE_WIDTH_PX = 960
"""The page's width for pictures (the body's 1000 px less its padding)."""
MAX_PIXEL_ZOOM = 3


class Html(str):
    """Markup that is already safe to insert into a page (built by this module's helpers)."""


def text(value: object) -> Html:
    """``value`` as page text: escaped with :func:`html.escape` unless it already is :class:`Html`."""
    return value if isinstance(value, Html) else Html(html.escape(str(value)))


def heading(level: int, content: object) -> Html:
    """``<h1>`` … ``<h6>`` around escaped ``content``."""
    if not 1 <= level <= 6:
        raise ValueError(f"heading level must be 1 … 6, got {level}")
    return Html(f"<h{level}>{text(content)}</h{level}>")


def paragraph(content: object, css_class: str = "") -> Html:
    """A ``<p>`` (with ``class=css_class`` if given: ``lead`` for the key sentence, ``warning`` for
    a sentence that withholds a verdict, ``muted``)."""
    attrs = f' class="{html.escape(css_class)}"' if css_class else ""
    return Html(f"<p{attrs}>{text(content)}</p>")


def code(content: object) -> Html:
    """Inline ``<code>``, e.g. for run ids."""
    return Html(f"<code>{text(content)}</code>")


def lines(*parts: object) -> Html:
    """The escaped ``parts`` on separate lines (``<br>``), e.g. a run's name above its id in one cell."""
    return Html("<br>".join(text(part) for part in parts))


def bullets(items: Iterable[object]) -> Html:
    """A ``<ul>`` with one escaped ``<li>`` per item; empty markup when there are none."""
    entries = "".join(f"<li>{text(item)}</li>" for item in items)
    return Html(f"<ul>{entries}</ul>" if entries else "")


def _is_number(cell: object) -> bool:
    if isinstance(cell, bool):
        return False
    if isinstance(cell, (int, float)):
        return True
    return isinstance(cell, str) and not isinstance(cell, Html) and _NUMERIC.fullmatch(cell.strip()) is not None


def _numeric_columns(rows: Sequence[Sequence[object]], width: int) -> list[bool]:
    numeric = []
    for j in range(width):
        cells = [row[j] for row in rows if j < len(row)]
        filled = [c for c in cells if not (isinstance(c, str) and c.strip().lower() in _PLACEHOLDERS)]
        numeric.append(bool(filled) and all(_is_number(c) for c in filled))
    return numeric


def table(header: Sequence[object], rows: Sequence[Sequence[object]], *, row_headers: bool = False) -> Html:
    """A ``<table>`` (in a ``div.table`` that scrolls sideways when the table is wider than the page):
    ``header`` as ``<thead>``, one ``<tr>`` per row, cells escaped.

    Columns whose cells are all numbers (``0.912``, ``+0.02``, ``0.91 ± 0.01``, ``3``) or
    placeholders get ``class="num"`` (right-aligned). ``row_headers``: the first cell of
    every row is a ``<th scope="row">`` (the row label of a matrix).
    """
    numeric = _numeric_columns(rows, len(header))
    num = ' class="num"'
    head = "".join(f'<th{num if numeric[j] else ""} scope="col">{text(h)}</th>' for j, h in enumerate(header))
    body = []
    for row in rows:
        cells = []
        for j, cell in enumerate(row):
            if row_headers and j == 0:
                cells.append(f'<th scope="row">{text(cell)}</th>')
            else:
                cells.append(f"<td{num if j < len(numeric) and numeric[j] else ''}>{text(cell)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return Html(f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
                "</table></div>")


def figure_png(figure: Figure, dpi: int = FIGURE_DPI) -> bytes:
    """``figure`` rendered as PNG bytes (the same bytes go to the ``.png`` artifact and the page)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels of PNG bytes; ValueError if ``png`` is no PNG."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(png)) as image:
            if image.format == "PNG":
                return image.size
    except (UnidentifiedImageError, OSError):
        pass
    raise ValueError("not a PNG image")


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,…`` of ``png``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(png: bytes, alt: str, caption: str = "", *, pixels: bool = False) -> Html:
    """A ``<figure>`` embedding ``png`` as a data URI at its natural size (at most the page width).

    ``pixels``: a picture drawn as tiles of map cells (the training pictures, a few hundred pixels
    wide for MLflow's thumbnails) is shown at the largest whole-number zoom, up to
    :data:`MAX_PIXEL_ZOOM`, that fits :data:`PICTURE_WIDTH_PX`, each pixel kept square and sharp."""
    width, height = png_size(png)
    zoom = max(1, min(MAX_PIXEL_ZOOM, PICTURE_WIDTH_PX // width)) if pixels else 1
    css = ' class="pixels"' if zoom > 1 else ""
    img = (f'<img src="{data_uri(png)}" alt="{html.escape(alt)}" width="{width * zoom}" height="{height * zoom}"'
           f"{css}>")
    cap = f"<figcaption>{text(caption)}</figcaption>" if caption else ""
    return Html(f"<figure>{img}{cap}</figure>")


def page(title: str, body: Iterable[str]) -> str:
    """A complete HTML document titled ``title`` (escaped) whose body is the given markup, in order."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{text(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(part for part in body if part) + "\n</body>\n</html>\n")
