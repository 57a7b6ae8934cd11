"""Reading an HTML report back in tests: its elements, and the self-contained check."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html.parser import HTMLParser

PNG_URI = "data:image/png;base64,"
_URL_ATTRIBUTES = {"src", "href", "srcset", "poster", "data", "action", "background"}


@dataclass
class Parsed:
    """Start tags in document order as (tag, attributes) and the text outside tags, unescaped."""

    tags: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)

    def count(self, tag: str) -> int:
        return sum(1 for name, _ in self.tags if name == tag)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parsed = Parsed()
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.parsed.tags.append((tag, {key: value or "" for key, value in attrs}))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        (self.parsed.styles if self._in_style else self.parsed.text).append(data)


def parse(document: str) -> Parsed:
    collector = _Collector()
    collector.feed(document)
    collector.close()
    return collector.parsed


def embedded_pngs(document: str) -> list[bytes]:
    """Assert ``document`` loads nothing from outside (no scripts, links, frames or URL attributes
    other than ``<img src="data:image/png;base64,…">``, no ``url(`` in CSS) and return every
    embedded image's PNG bytes, in document order."""
    parsed = parse(document)
    assert document.lstrip().lower().startswith("<!doctype html>")
    assert {"script", "link", "iframe", "object", "embed", "base"}.isdisjoint(name for name, _ in parsed.tags)
    images = []
    for name, attrs in parsed.tags:
        used = _URL_ATTRIBUTES & set(attrs)
        if name == "img":
            assert used == {"src"} and attrs["src"].startswith(PNG_URI), attrs
            images.append(base64.b64decode(attrs["src"][len(PNG_URI):], validate=True))
        else:
            assert not used, (name, attrs)
        assert not any(key.startswith("on") for key in attrs) and "url(" not in attrs.get("style", ""), attrs
    assert all("url(" not in css and "@import" not in css for css in parsed.styles)
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in images)
    return images
