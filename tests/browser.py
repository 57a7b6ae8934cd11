"""A real browser on the real UIs: what a user of MLflow's and TensorBoard's pages actually sees.

Chromium comes from the system (``apt-get install -y chromium``) and is driven by the
``playwright`` pip package; Playwright's own browser download is never used. Missing
either skips with the command that installs it. The browser resolves no host but
127.0.0.1, so a page can never reach the network.

What is relied on in MLflow 3's UI (checked on 3.17): a run's "Model metrics" tab groups
charts in sections (``data-testid=experiment-view-compare-runs-section-header``, rendered
only near the viewport); an image card is ``data-testid=experiment-view-compare-runs-card``
holding ``h4[title=<image key>]``, one ``img`` (the ``+compressed.webp`` thumbnail, longest
side 256 px) and a step slider ``[role=slider]`` (arrow keys move it one logged step;
``aria-valuenow`` is the step). HTML artifacts are shown in a sandboxed ``iframe`` with a
``blob:`` URL; every entry of the artifact tree is ``data-testid=artifact-tree-node``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from convscope.servers.servers import (
    free_port,
    mlflow_server_command,
    start_process_group,
    stop_process_group,
    tensorboard_command,
    wait_for_http,
)
from convscope.tracking.stores import resolve_stores

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no page reaches the network
]
VIEWPORT = {"width": 1600, "height": 1000}
CARD = "[data-testid=experiment-view-compare-runs-card]"
SECTION_HEADER = "experiment-view-compare-runs-section-header"


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless system Chromium under Playwright, closed on exit.

    Skips the calling test when ``/usr/bin/chromium`` or the ``playwright`` package is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Chromium at {CHROMIUM}: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need the playwright package: pip install playwright")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass(frozen=True)
class UiServers:
    mlflow: str  # http://127.0.0.1:PORT
    tensorboard: str


@contextlib.contextmanager
def ui_servers(runs_dir: Path, log_dir: Path) -> Iterator[UiServers]:
    """``mlflow ui`` and ``tensorboard`` on ``runs_dir``, started as ``convscope ui`` starts them
    (same command builders, each its own process group) on free 127.0.0.1 ports; both whole
    process groups are stopped on exit, also when starting or the test fails."""
    stores = resolve_stores(runs_dir)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    mlflow_port, tensorboard_port = free_port(), free_port()
    stores.tensorboard_root.mkdir(parents=True, exist_ok=True)
    processes = []
    try:
        commands = [
            (mlflow_server_command(stores.mlflow_uri, "127.0.0.1", mlflow_port, ui_only=True), "mlflow-ui.log"),
            (tensorboard_command(stores.tensorboard_root, "127.0.0.1", tensorboard_port), "tensorboard.log"),
        ]
        for cmd, log in commands:
            processes.append((start_process_group(cmd, log_dir / log, env=env), log_dir / log))
        urls = UiServers(f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{tensorboard_port}")
        for (proc, log), health in zip(processes, (urls.mlflow + "/health", urls.tensorboard + "/data/environment")):
            wait_for_http(health, timeout=120, proc=proc, log_path=log)
        yield urls
    finally:
        for proc, _ in processes:
            stop_process_group(proc)


def save_screenshot(target: Any, path: Path) -> Path:
    """Screenshot a page or a locator into ``path`` as a 256-colour PNG (a few times smaller than
    Playwright's, still sharp for text and pictures: these are committed as the README's)."""
    import io

    from PIL import Image

    Image.open(io.BytesIO(target.screenshot())).convert("RGB").quantize(256).save(path, optimize=True)
    return path


def new_page(browser: Any) -> Any:
    """A page in a fresh browser context (empty localStorage: MLflow's default layout) at 1600×1000."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    return context.new_page()


def run_url(base: str, experiment_id: str, run_id: str, tab: str = "") -> str:
    """A run's page in MLflow's model-training view; ``tab`` e.g. ``model-metrics`` or ``artifacts``."""
    suffix = f"/{tab}" if tab else ""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}{suffix}?workflowType=machine_learning"


def open_model_metrics(page: Any, base: str, experiment_id: str, run_id: str) -> None:
    """Open a run's "Model metrics" tab and wait until its chart sections are drawn."""
    page.goto(run_url(base, experiment_id, run_id, "model-metrics"))
    page.get_by_test_id(SECTION_HEADER).first.wait_for()


_SETTLED = """(img, ms) => new Promise(r => { const t = Date.now(); (function poll() {
  if (img.complete || Date.now() - t > ms) return r(img.naturalWidth > 0); setTimeout(poll, 50); })(); })"""


def image_card(page: Any, key: str, attempts: int = 40) -> Any:
    """The image card titled ``key`` on the open "Model metrics" tab, centred in the viewport with
    its image loaded. Sections are rendered lazily, so the chart area is scrolled until it appears.

    Raises:
        AssertionError: no such card after scrolling through every section.
    """
    card = page.locator(CARD).filter(has=page.locator(f"h4[title='{key}']"))
    scroll = (
        "(h, by) => { for (let el = h; el; el = el.parentElement) { const s = getComputedStyle(el).overflowY;"
        " if ((s === 'auto' || s === 'scroll') && el.scrollHeight > el.clientHeight) {"
        " if (by === null) el.scrollTop = 0; else el.scrollBy(0, by); return; } } }"
    )
    if not card.count():
        page.get_by_test_id(SECTION_HEADER).first.evaluate(scroll, None)  # sections off screen are not drawn
        page.wait_for_timeout(250)  # the sections at the top are drawn again before looking
    for _ in range(attempts):
        if card.count():
            break
        page.get_by_test_id(SECTION_HEADER).first.evaluate(scroll, 500)
        page.wait_for_timeout(250)
    assert card.count() == 1, f"no single image card {key!r} on {page.url}"
    card.evaluate("c => c.scrollIntoView({block: 'center'})")
    card.locator("img").first.wait_for(state="attached")
    card.evaluate_handle("c => c.querySelector('img')").evaluate(_SETTLED, 15_000)
    page.mouse.move(0, 0)  # no hover effects over the card
    return card


_MEASURE = """card => {
  const img = card.querySelector('img');
  const box = r => ({left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height});
  const ir = img.getBoundingClientRect();
  let clip = {left: 0, top: 0, right: innerWidth, bottom: innerHeight};
  const clippers = [];
  for (let el = img.parentElement; el; el = el.parentElement) {
    const s = getComputedStyle(el);
    if (s.overflowX !== 'visible' || s.overflowY !== 'visible') {
      const r = el.getBoundingClientRect();
      clip = {left: Math.max(clip.left, r.left), top: Math.max(clip.top, r.top),
              right: Math.min(clip.right, r.right), bottom: Math.min(clip.bottom, r.bottom)};
      clippers.push(`${el.tagName.toLowerCase()}.${[...el.classList].join('.')} overflow=${s.overflow} ` +
                    `top=${Math.round(r.top)} bottom=${Math.round(r.bottom)}`);
    }
  }
  const inset = 2, wrapper = img.parentElement;
  const points = [[ir.left + inset, ir.top + inset], [ir.right - inset, ir.top + inset],
                  [ir.left + inset, ir.bottom - inset], [ir.right - inset, ir.bottom - inset],
                  [(ir.left + ir.right) / 2, (ir.top + ir.bottom) / 2]];
  const hits = points.map(([x, y]) => {
    const e = document.elementFromPoint(x, y); return !!e && (e === img || wrapper.contains(e)); });
  const text = card.querySelector('label')?.parentElement?.nextElementSibling;
  return {img: box(ir), card: box(card.getBoundingClientRect()), clip, clippers, hits,
          natural: [img.naturalWidth, img.naturalHeight], src: img.getAttribute('src'),
          paramsHeight: text ? text.getBoundingClientRect().height : 0};
}"""


@dataclass(frozen=True)
class ImageView:
    """Where a card's image is drawn, in viewport pixels."""

    img: dict[str, float]  # the <img> element's bounding rectangle
    card: dict[str, float]  # the card's
    clip: dict[str, float]  # the viewport intersected with every overflow-clipping ancestor of the <img>
    clippers: list[str]  # those ancestors, outermost last
    hits: list[bool]  # elementFromPoint at the four inset corners and the centre finds the image
    natural: list[int]  # the displayed file's pixel size (MLflow's thumbnail)
    src: str
    params_height: float  # the run's parameter list above the image (0 when not shown)

    @property
    def visible_fraction(self) -> float:
        """Share of the image's area that is on screen, not cut off by a clipping ancestor."""
        width = max(0.0, min(self.img["right"], self.clip["right"]) - max(self.img["left"], self.clip["left"]))
        height = max(0.0, min(self.img["bottom"], self.clip["bottom"]) - max(self.img["top"], self.clip["top"]))
        return width * height / max(1.0, self.img["width"] * self.img["height"])

    @property
    def inside_card(self) -> bool:
        """The image's rectangle lies within the card's (half a pixel of rounding allowed)."""
        return all((self.img[s] >= self.card[s] - 0.5) if s in ("left", "top") else (self.img[s] <= self.card[s] + 0.5)
                   for s in ("left", "top", "right", "bottom"))

    @property
    def fully_visible(self) -> bool:
        """Decoded, inside the card, wholly inside every clipping ancestor, and on top of the page."""
        return self.natural[0] > 0 and self.inside_card and self.visible_fraction >= 0.999 and all(self.hits)

    def describe(self) -> str:
        r = {k: round(v) for k, v in self.img.items()}
        return (f"img {r['width']}x{r['height']} at top={r['top']} bottom={r['bottom']} (file {self.natural[0]}x"
                f"{self.natural[1]}), card top={round(self.card['top'])} bottom={round(self.card['bottom'])}, "
                f"visible {self.visible_fraction:.0%}, corner/centre hits {self.hits}, parameter list "
                f"{round(self.params_height)} px tall; clipped by: {'; '.join(self.clippers) or 'nothing'}")


def image_view(card: Any) -> ImageView:
    """Measure the card's image as drawn now (the card should be inside the viewport)."""
    m = card.evaluate(_MEASURE)
    return ImageView(m["img"], m["card"], m["clip"], m["clippers"], m["hits"], m["natural"], m["src"],
                     m["paramsHeight"])


def assert_image_fully_visible(card: Any, key: str, min_width: float, note: str = "") -> ImageView:
    """The card's image lies inside the card, is clipped by no ancestor, is on top at its corners,
    and is drawn at least ``min_width`` px wide. Returns the measurement."""
    view = image_view(card)
    assert view.fully_visible, f"{key}: image not fully visible in its card: {view.describe()}{note}"
    width = view.img["width"]
    assert width >= min_width, f"{key}: image drawn {width:.0f} px wide, less than {min_width}{note}"
    return view


_DRAWN = """img => { const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data;
  let h = 2166136261; for (let i = 0; i < d.length; i += 7) { h ^= d[i]; h = Math.imul(h, 16777619) >>> 0; }
  return `${c.width}x${c.height}:${h}`; }"""


@dataclass(frozen=True)
class SliderState:
    step: int  # aria-valuenow of the card's slider
    max_step: int
    src: str  # the displayed file
    pixels: str  # size and a hash of the decoded pixels

    @property
    def src_step(self) -> int | None:
        """The step encoded in the displayed file's name (``…+step+N+…``), if any."""
        name = urllib.parse.unquote(self.src.split("path=", 1)[-1])
        parts = name.split("+")
        return int(parts[parts.index("step") + 1]) if "step" in parts else None


def slider_state(card: Any) -> SliderState:
    slider = card.get_by_role("slider")
    img = card.locator("img").first
    return SliderState(int(slider.get_attribute("aria-valuenow")), int(slider.get_attribute("aria-valuemax")),
                       img.get_attribute("src"), img.evaluate(_DRAWN))


_SWAPPED = """(card, [old, ms]) => new Promise(r => { const t = Date.now(); (function poll() {
  const img = card.querySelector('img');
  if (img && img.getAttribute('src') !== old && img.complete && img.naturalWidth > 0) return r(true);
  if (Date.now() - t > ms) return r(false); setTimeout(poll, 50); })(); })"""


def step_slider_forward(page: Any, card: Any, timeout_ms: float = 15_000) -> tuple[SliderState, SliderState]:
    """Move the card's step slider one logged step right (keyboard, as a user can) and wait until
    the new image is loaded. Returns the state before and after."""
    before = slider_state(card)
    card.get_by_role("slider").focus()
    page.keyboard.press("ArrowRight")
    card.evaluate(_SWAPPED, [before.src, timeout_ms])
    return before, slider_state(card)


def open_artifact(page: Any, base: str, experiment_id: str, run_id: str, path: str) -> Any:
    """Open a run's Artifacts tab and click through the tree to ``path`` (``report/report.html``).
    Returns the frame MLflow shows an HTML artifact in (a sandboxed iframe), once its images settled.

    Raises:
        AssertionError: a path component is not in the tree, or no HTML view appeared.
    """
    page.goto(run_url(base, experiment_id, run_id, "artifacts"))
    parts = path.split("/")
    for depth, name in enumerate(parts):
        entry = page.get_by_test_id("artifact-tree-node").get_by_text(name, exact=True)
        try:
            entry.first.wait_for(timeout=20_000)
        except Exception as error:  # playwright's TimeoutError
            raise AssertionError(f"artifact {'/'.join(parts[:depth + 1])!r} not in the tree of run {run_id}") from error
        entry.first.click()
    frame_element = page.locator("iframe[src^='blob:']").first
    try:
        frame_element.wait_for(timeout=20_000)
    except Exception as error:
        raise AssertionError(f"MLflow shows no HTML view for {path}") from error
    frame = frame_element.element_handle().content_frame()
    assert frame is not None, f"the HTML view of {path} has no frame"
    frame.wait_for_load_state("load")
    frame.evaluate("() => Promise.all([...document.images].map(i =>"
                   " i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })))")
    return frame


def frame_images(frame: Any) -> list[dict[str, Any]]:
    """Every ``<img>`` of a frame: alt, natural and drawn size, and whether its source is a data: URI."""
    return frame.evaluate("() => [...document.images].map(i => ({alt: i.alt, naturalWidth: i.naturalWidth,"
                          " naturalHeight: i.naturalHeight, width: i.getBoundingClientRect().width,"
                          " dataUri: (i.getAttribute('src') || '').startsWith('data:')}))")


def get_json(base: str, path: str, **query: str) -> Any:
    """GET ``base + path`` with ``query`` and decode the JSON answer."""
    url = base + path + ("?" + urllib.parse.urlencode(query) if query else "")
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def tensorboard_image_tags(base: str, run: str, expected: set[str], timeout: float = 60) -> set[str]:
    """The image tags TensorBoard lists for ``run``, polled (it rescans every few seconds) until they
    include ``expected`` or ``timeout`` passes; returns what it lists last."""
    deadline = time.monotonic() + timeout
    while True:
        tags = set(get_json(base, "/data/plugin/images/tags").get(run, {}))
        if expected <= tags or time.monotonic() > deadline:
            return tags
        time.sleep(1)


def tensorboard_drawn_images(page: Any, expected_count: int, timeout_s: float = 60,
                             wanted: set[tuple[str, str]] | None = None) -> set[tuple[str, str]]:
    """(run, tag) of every image TensorBoard's open Images tab has drawn, read from the images'
    blob keys; polled (scrolling down and paging on, since the tab draws cards as they come into
    view, 12 a page) until at
    least ``expected_count`` are drawn and every ``wanted`` one was, or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    drawn: set[tuple[str, str]] = set()
    still = 0  # polls in a row that drew nothing new
    while True:
        sources = page.locator("img[src*='individualImage']").evaluate_all(
            "els => els.filter(e => e.complete && e.naturalWidth > 0).map(e => e.getAttribute('src'))")
        before = len(drawn)
        for src in sources:
            key = urllib.parse.parse_qs(urllib.parse.urlsplit(src).query)["blob_key"][0]
            decoded = json.loads(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)))
            drawn.add((decoded[1], decoded[2]))  # a JSON list: [experiment, run, tag, …]
        if (len(drawn) >= expected_count and (wanted or set()) <= drawn) or time.monotonic() > deadline:
            return drawn
        still = still + 1 if len(drawn) == before else 0
        page.mouse.wheel(0, 400)
        next_page = page.get_by_text("Next page", exact=False)
        if wanted and still >= 4 and next_page.count() and next_page.first.is_enabled():  # 12 cards a page
            next_page.first.click()
            still = 0
        page.wait_for_timeout(500)
