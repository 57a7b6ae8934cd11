"""The shared HTML-report helpers: escaping, tables, embedded figures, the page."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from matplotlib.figure import Figure

from html_check import embedded_pngs, parse
from convscope.pictures import html_report


def small_figure(width_inches: float = 6.4) -> Figure:
    figure = Figure(figsize=(width_inches, 3.0))
    figure.add_subplot().plot([0, 1, 2], [1, 0, 1])
    return figure


def test_text_is_escaped_and_markup_is_not_escaped_twice() -> None:
    hostile = '<script>alert("x")</script> & \'q\''
    assert html_report.text(hostile) == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;q&#x27;"
    assert html_report.text(html_report.code("a<b")) == "<code>a&lt;b</code>"
    assert html_report.heading(2, "x & y") == "<h2>x &amp; y</h2>"
    assert html_report.bullets(["<i>", "ok"]) == "<ul><li>&lt;i&gt;</li><li>ok</li></ul>"
    assert html_report.bullets([]) == ""
    with pytest.raises(ValueError, match="heading level"):
        html_report.heading(7, "x")


def test_table_right_aligns_numeric_columns_only() -> None:
    markup = html_report.table(
        ["layer", "accuracy", "gain", "folds", "accuracies", "widths", "note"],
        [["conv1", "0.912", "+0.020", 5, "0.9000 0.9100", "16,32", "best"],
         ["<conv2>", "n/a", "−0.010", 5, "0.9 ± 0.1", "16", ""]],
        row_headers=True,
    )
    parsed = parse(markup)
    header = [attrs.get("class", "") for name, attrs in parsed.tags if name == "th" and attrs.get("scope") == "col"]
    assert header == ["", "num", "num", "num", "num", "", ""]
    cells = [attrs.get("class", "") for name, attrs in parsed.tags if name == "td"]
    assert cells == ["num", "num", "num", "num", "", ""] * 2
    assert parsed.count("tr") == 3 and '<th scope="row">&lt;conv2&gt;</th>' in markup
    assert "<conv2>" not in markup


def test_figure_embeds_the_png_at_its_natural_size() -> None:
    png = html_report.figure_png(small_figure())
    width, height = html_report.png_size(png)
    assert width == round(6.4 * html_report.FIGURE_DPI) and height == round(3.0 * html_report.FIGURE_DPI)
    assert 650 <= width <= 750  # reads well at about 700 px
    markup = html_report.figure(png, 'alt "quoted"', "caption <b>")
    (img,) = [attrs for name, attrs in parse(markup).tags if name == "img"]
    assert img["width"] == str(width) and img["height"] == str(height) and img["alt"] == 'alt "quoted"'
    assert "caption &lt;b&gt;" in markup
    with pytest.raises(ValueError, match="not a PNG"):
        html_report.png_size(b"GIF89a" + bytes(30))


@pytest.mark.parametrize("width, zoom", [(300, 3), (400, 2), (700, 1), (1200, 1)])
def test_a_picture_of_map_cells_is_zoomed_to_fill_the_page_and_kept_sharp(width: int, zoom: int) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (width, 50)).save(buffer, format="PNG")
    markup = html_report.figure(buffer.getvalue(), "feature_maps/conv1", pixels=True)
    (img,) = [attrs for name, attrs in parse(markup).tags if name == "img"]
    assert (img["width"], img["height"]) == (str(width * zoom), str(50 * zoom))
    assert (img.get("class") == "pixels") == (zoom > 1)  # image-rendering: pixelated, no blur between cells
    assert "image-rendering: pixelated" in html_report.page("t", [markup])


def test_page_is_self_contained_and_holds_every_part() -> None:
    pngs = [html_report.figure_png(small_figure(w)) for w in (6.4, 3.0)]
    document = html_report.page("a < b", [html_report.heading(1, "report"), html_report.figure(pngs[0], "one"),
                                          html_report.table(["x"], [["1"]]), html_report.figure(pngs[1], "two"), ""])
    assert embedded_pngs(document) == pngs
    parsed = parse(document)
    assert parsed.count("table") == 1 and parsed.count("h1") == 1 and parsed.count("style") == 1
    assert "<title>a &lt; b</title>" in document and '<meta charset="utf-8">' in document
    assert "http://" not in document and "https://" not in document


def test_the_self_contained_check_catches_external_resources() -> None:
    for bad in ('<img src="figure.png">', '<link rel="stylesheet" href="x.css">', "<script>1</script>",
                '<img src="data:image/png;base64,AAAA" onerror="x()">', '<a href="https://example.org">x</a>'):
        with pytest.raises(AssertionError):
            embedded_pngs(html_report.page("t", [bad]))
