"""What a user sees in a real browser: MLflow's image cards and step sliders, TensorBoard's images,
and the compare report shown among a run's artifacts.

Two short runs are trained on the built-in synthetic data, then ``mlflow ui`` and ``tensorboard``
are started as ``convscope ui`` starts them, on free 127.0.0.1 ports. Pages are opened at 1600×1000
in fresh browser contexts, i.e. at MLflow's default layout. Screenshots go to
``$CONVSCOPE_SCREENSHOT_DIR`` when set (``CONVSCOPE_SCREENSHOT_DIR=docs/screenshots`` refreshes
the README's), else to a pytest temporary folder; the folder is printed and recorded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from browser import (
    UiServers,
    assert_image_fully_visible,
    chromium,
    frame_images,
    get_json,
    image_card,
    new_page,
    open_artifact,
    open_model_metrics,
    save_screenshot,
    step_slider_forward,
    tensorboard_drawn_images,
    tensorboard_image_tags,
    ui_servers,
)
from e2e_helpers import convscope
from convscope.tracking.stores import resolve_stores

pytestmark = pytest.mark.slow

EPOCHS = 2
DEPTH = 5  # the seed network: conv4 (3x3) and conv5 (1x1) are drawn as channel strengths
LAYERS = [f"conv{k}" for k in range(1, DEPTH + 1)]
TRAIN = ["--preset", "seed", "--epochs", str(EPOCHS), "--data", "synthetic",
         "--synthetic-size", "1200", "--batch-size", "64", "--analysis-size", "64", "--seed", "1", "--quiet"]
MIN_IMAGE_WIDTH = 180  # px: below this a feature-map tile is too small to read
EXPERIMENT = "convscope"


@dataclass(frozen=True)
class Trained:
    runs_dir: Path
    client: MlflowClient
    experiment_id: str
    run_ids: dict[str, str]  # run name -> MLflow run id


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: ``$CONVSCOPE_SCREENSHOT_DIR`` or a temporary folder."""
    chosen = os.environ.get("CONVSCOPE_SCREENSHOT_DIR")
    folder = Path(chosen).resolve() if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {folder}")
    return folder


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def trained(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Run ``a`` and run ``b`` (different dropout), and run ``photos`` on a folder of photos under a long
    path (its name is a param shown on every image card), trained side by side into one runs folder."""
    root = tmp_path_factory.mktemp("browser")
    runs = root / "runs"
    photos = _photo_folder(root / "my photos" / "2026" / "holidays" / "cats and dogs" / "PetImages-sample")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    variants = {"a": [], "b": ["--dropout", "0.2"], "photos": ["--data", str(photos)]}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "convscope", "train", "--runs-dir", str(runs), "--run-name", name, *TRAIN, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        for name, extra in variants.items()
    }
    for name, proc in procs.items():
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"training {name} failed:\n{output}"
    client = MlflowClient(resolve_stores(runs).mlflow_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    run_ids = {r.info.run_name: r.info.run_id for r in client.search_runs([experiment.experiment_id])}
    assert set(run_ids) == set(variants), run_ids
    return Trained(runs, client, experiment.experiment_id, run_ids)


def _photo_folder(root: Path) -> Path:
    """Two class folders of small PNG photos (bright left half: Cat, right half: Dog)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(("Cat", "Dog")):
        (root / name).mkdir(parents=True)
        for i in range(40):
            pixels = rng.integers(0, 100, (72, 80, 3), dtype=np.uint8)
            pixels[:, k * 40:(k + 1) * 40] += 120
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def servers(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServers]:
    with ui_servers(trained.runs_dir, tmp_path_factory.mktemp("ui-logs")) as urls:
        yield urls


def _note(screenshots: Path, record_property: Any) -> str:
    record_property("screenshots", str(screenshots))
    return f" (screenshots in {screenshots})"


def _card_html(key: str, text_lines: int) -> str:
    """A card shaped like MLflow's: fixed height, clipping, a scroll area, a text block above the image."""
    pixel = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
             "AAAABJRU5ErkJggg==")  # one pixel
    return (f"<div data-testid='experiment-view-compare-runs-card' style='height:360px;width:300px;overflow:hidden'>"
            f"<h4 title='{key}'>{key}</h4><div style='height:250px;overflow:auto'><label>r</label>"
            f"<div style='height:{16 * text_lines}px'>params</div><img src='{pixel}' style='width:256px;height:128px'>"
            "</div></div>")


def test_visibility_check_tells_a_whole_image_from_a_clipped_one(browser: Any) -> None:
    """The measurement behind the card assertions, on a static page: a short text block leaves the
    image whole, a tall one pushes it under the card's clipping scroll area."""
    page = new_page(browser)
    page.set_content(_card_html("whole", 1) + _card_html("clipped", 10))
    whole = page.locator("[data-testid=experiment-view-compare-runs-card]").nth(0)
    clipped = page.locator("[data-testid=experiment-view-compare-runs-card]").nth(1)
    assert assert_image_fully_visible(whole, "whole", MIN_IMAGE_WIDTH).img["width"] == 256
    with pytest.raises(AssertionError, match="not fully visible"):
        assert_image_fully_visible(clipped, "clipped", MIN_IMAGE_WIDTH)


def test_run_logged_one_feature_map_image_per_layer_and_step(trained: Trained) -> None:
    """The premise of the browser checks: every conv layer has an image at steps 0..EPOCHS."""
    names = [Path(a.path).name for a in trained.client.list_artifacts(trained.run_ids["a"], "images")]
    for layer in LAYERS:
        steps = sorted(int(n.split("+")[2]) for n in names
                       if n.startswith(f"feature_maps~{layer}+step+") and n.endswith(".png"))
        assert steps == list(range(EPOCHS + 1)), (layer, steps)


def test_feature_map_cards_show_the_whole_image(
    browser: Any, trained: Trained, servers: UiServers, screenshots: Path, record_property: Any
) -> None:
    """At the default layout every ``feature_maps/convK`` card shows its whole image, at least
    MIN_IMAGE_WIDTH px wide: inside the card, cut off by no clipping ancestor, covered by nothing."""
    note = _note(screenshots, record_property)
    failures = _clipped_cards(browser, trained, servers, "photos", screenshots, "photos_")  # a real folder's path
    page = new_page(browser)
    open_model_metrics(page, servers.mlflow, trained.experiment_id, trained.run_ids["a"])
    cards = {}
    for layer in LAYERS:
        key = f"feature_maps/{layer}"
        cards[key] = card = image_card(page, key)
        save_screenshot(card, screenshots / f"mlflow_card_feature_maps_{layer}.png")
    image_card(page, "feature_maps/conv1")
    save_screenshot(page, screenshots / "mlflow_model_metrics.png")
    card = image_card(page, "feature_maps/conv1")
    card.locator("[data-component-id=fullscreen_button_chartcard]").click()
    page.get_by_role("dialog").locator("img").first.wait_for()
    page.wait_for_timeout(500)
    save_screenshot(page, screenshots / "mlflow_card_feature_maps_conv1_fullscreen.png")
    page.keyboard.press("Escape")
    for key in cards:  # every layer is measured before failing, so the message shows them all
        try:
            assert_image_fully_visible(image_card(page, key), key, MIN_IMAGE_WIDTH)
        except AssertionError as error:
            failures.append(str(error).splitlines()[0])
    assert not failures, "at MLflow's default card size:\n" + "\n".join(failures) + note


def _clipped_cards(browser: Any, trained: Trained, servers: UiServers, run: str, screenshots: Path,
                   prefix: str) -> list[str]:
    """The feature-map cards of ``run`` whose image is not whole, one line each (screenshots saved)."""
    page = new_page(browser)
    open_model_metrics(page, servers.mlflow, trained.experiment_id, trained.run_ids[run])
    failures = []
    for layer in LAYERS:
        key = f"feature_maps/{layer}"
        card = image_card(page, key)
        save_screenshot(card, screenshots / f"mlflow_{prefix}card_feature_maps_{layer}.png")
        try:
            assert_image_fully_visible(card, f"{run}: {key}", MIN_IMAGE_WIDTH)
        except AssertionError as error:
            failures.append(str(error).splitlines()[0])
    return failures


def test_step_slider_changes_the_feature_map(
    browser: Any, trained: Trained, servers: UiServers, screenshots: Path, record_property: Any
) -> None:
    """Moving a card's step slider shows that step's image: another file with other pixels."""
    note = _note(screenshots, record_property)
    page = new_page(browser)
    open_model_metrics(page, servers.mlflow, trained.experiment_id, trained.run_ids["a"])
    for layer in LAYERS:
        key = f"feature_maps/{layer}"
        before, after = step_slider_forward(page, image_card(page, key))
        assert (before.step, before.max_step) == (0, EPOCHS), (key, before)
        assert before.src_step == 0, (key, before.src)
        assert after.step == 1 and after.src_step == 1, f"{key}: slider moved to {after.step}, shows {after.src}{note}"
        assert after.pixels != before.pixels, f"{key}: step 1 draws the same pixels as step 0{note}"


def test_tensorboard_serves_every_feature_map_step(
    browser: Any, trained: Trained, servers: UiServers, screenshots: Path, record_property: Any
) -> None:
    """TensorBoard's image plugin lists every ``feature_maps/convK`` of the run with steps 0..EPOCHS."""
    note = _note(screenshots, record_property)
    run = f"{EXPERIMENT}/a"
    expected = {f"feature_maps/{layer}" for layer in LAYERS}
    tags = tensorboard_image_tags(servers.tensorboard, run, expected)
    assert expected <= tags, f"TensorBoard lists {sorted(tags)} for {run}{note}"
    for tag in sorted(expected):
        entries = get_json(servers.tensorboard, "/data/plugin/images/images", run=run, tag=tag, sample="0")
        assert sorted(e["step"] for e in entries) == list(range(EPOCHS + 1)), (tag, entries)
    page = new_page(browser)
    page.goto(servers.tensorboard + "/#images&tagFilter=feature_maps")
    drawn = tensorboard_drawn_images(page, expected_count=len(expected), wanted={(run, tag) for tag in expected})
    save_screenshot(page, screenshots / "tensorboard_images.png")
    shown = {tag for shown_run, tag in drawn if shown_run == run}
    assert expected <= shown, f"TensorBoard's Images tab draws {sorted(drawn)}{note}"


@pytest.fixture(scope="module")
def report_run(trained: Trained) -> str:
    """``convscope compare a b``; the id of the report run it made."""
    done = convscope("compare", trained.run_ids["a"], trained.run_ids["b"], "--runs-dir", str(trained.runs_dir),
                     "--folds", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    found = trained.client.search_runs([trained.experiment_id], "tags.`convscope.kind` = 'compare'")
    assert len(found) == 1, [r.info.run_name for r in found]
    return found[0].info.run_id


def test_compare_report_shows_its_figures_in_mlflow(
    browser: Any, trained: Trained, servers: UiServers, report_run: str, screenshots: Path, record_property: Any
) -> None:
    """Clicking ``report/report.html`` among the report run's artifacts shows the report with every
    figure decoded: at least one, and no fewer than the PNGs logged beside it."""
    note = _note(screenshots, record_property)
    names = [Path(a.path).name for a in trained.client.list_artifacts(report_run, "report")]
    assert "report.html" in names, f"report run has no report/report.html, only {names}{note}"
    page = new_page(browser)
    frame = open_artifact(page, servers.mlflow, trained.experiment_id, report_run, "report/report.html")
    save_screenshot(page, screenshots / "mlflow_compare_report.png")
    images = frame_images(frame)
    broken = [i for i in images if i["naturalWidth"] == 0 or i["width"] == 0]
    assert not broken, f"report figures that do not show: {broken}{note}"
    pngs = [n for n in names if n.endswith(".png")]
    assert len(images) >= max(1, len(pngs)), f"{len(images)} figures shown, {len(pngs)} PNGs logged: {pngs}{note}"


def test_explain_report_shows_inline_in_the_explained_run(
    browser: Any, trained: Trained, servers: UiServers, screenshots: Path, record_property: Any
) -> None:
    """``convscope explain a`` puts ``explain/report.html`` into run ``a``; MLflow shows it inline with
    its evidence table and every picture decoded."""
    note = _note(screenshots, record_property)
    run_id = trained.run_ids["a"]
    done = convscope("explain", run_id, "--runs-dir", str(trained.runs_dir), "--folds", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    page = new_page(browser)
    frame = open_artifact(page, servers.mlflow, trained.experiment_id, run_id, "explain/report.html")
    save_screenshot(page, screenshots / "mlflow_explain_report.png")
    headers = frame.locator("th").all_inner_texts()
    assert "probe gain ± SE" in [h.replace("\n", " ") for h in headers], f"evidence table headers: {headers}{note}"
    images = frame_images(frame)
    assert len(images) >= 2 and all(i["naturalWidth"] > 0 and i["width"] > 0 for i in images), f"{images}{note}"
    assert trained.client.get_run(run_id).info.status == "FINISHED"  # the report did not reopen the run


def test_runs_table_tells_unfinished_runs_apart(
    browser: Any, trained: Trained, servers: UiServers, screenshots: Path, record_property: Any
) -> None:
    """MLflow's runs table shows a green tick for pruned runs and one red icon for failed and killed
    runs alike, so the run's name says how it ended — in full, not cut off by the name column."""
    from convscope.tracking.base import RunStatus
    from convscope.tracking.mlflow_sink import MlflowTracker

    note = _note(screenshots, record_property)
    uri = resolve_stores(trained.runs_dir).mlflow_uri
    expected = {}
    for number, status in enumerate(RunStatus, start=1):
        MlflowTracker(uri, EXPERIMENT, f"trial-{number:04d}").close(status)
        expected[f"trial-{number:04d}"] = f"trial-{number:04d}" + ("" if status is RunStatus.FINISHED
                                                                  else f" ({status.value})")
    page = new_page(browser)
    page.goto(f"{servers.mlflow}/#/experiments/{trained.experiment_id}/runs?workflowType=machine_learning")
    page.get_by_role("row").filter(has_text="trial-0001").first.wait_for()
    page.wait_for_timeout(500)
    save_screenshot(page, screenshots / "mlflow_runs_table.png")
    for base, name in expected.items():
        link = page.get_by_role("row").filter(has_text=base).first.locator("[col-id='attributes.`Run Name`'] a")
        text, full, shown = link.evaluate("a => [a.textContent.trim(), a.scrollWidth, a.clientWidth]")
        assert text == name, f"runs table shows {text!r} for {name!r}{note}"
        assert full <= shown + 1, f"runs table cuts off {name!r} ({full} px of text in {shown} px){note}"


def test_compare_side_by_side_cards_show_the_whole_picture(
    browser: Any, trained: Trained, servers: UiServers, report_run: str, screenshots: Path, record_property: Any
) -> None:
    """The report run of ``convscope compare a b`` has one ``side_by_side/…`` image card per conv layer
    and one for the saliency; each shows its whole picture, both runs' halves included."""
    note = _note(screenshots, record_property)
    page = new_page(browser)
    open_model_metrics(page, servers.mlflow, trained.experiment_id, report_run)
    failures = []
    for key in [f"side_by_side/feature_maps/{layer}" for layer in LAYERS] + ["side_by_side/saliency"]:
        card = image_card(page, key)
        save_screenshot(card, screenshots / f"mlflow_card_{key.replace('/', '_')}.png")
        try:
            assert_image_fully_visible(card, key, MIN_IMAGE_WIDTH)
        except AssertionError as error:
            failures.append(str(error).splitlines()[0])
    save_screenshot(page, screenshots / "mlflow_side_by_side.png")
    assert not failures, "side-by-side cards:\n" + "\n".join(failures) + note
