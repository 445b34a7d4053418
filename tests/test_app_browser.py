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


@pytest.fixture
def server(tmp_path):
    import uvicorn

    raster = write_scene(tmp_path / "scene.tif")
    project = Project.create(tmp_path / "project", {"scene": {"height": 256, "width": 256}},
                             [{"name": XSS, "color": "#d62728"}, {"name": "green", "color": "#2ca02c"}],
                             {"rasters": [str(raster)]},
                             {"model": {"encoder_weights": None}, "data": {"cache_dir": str(tmp_path / "cache")},
                              "train": {"amp": False}, "fast": {"folds": 0}})
    port = free_port()
    app = create_app(project, TOKEN, "127.0.0.1", port, Session(project, project.info["settings"]))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", project
    server.should_exit = True
    thread.join(timeout=10)


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

        def click_pixel(row: int, col: int) -> None:
            x, y = page.evaluate(ON_SCREEN, [row, col])
            box = page.locator("#map").bounding_box()
            page.mouse.click(box["x"] + x, box["y"] + y)

        page.keyboard.press("1")
        for row, col in ((40, 30), (128, 60), (200, 90)):
            click_pixel(row, col)
        page.keyboard.press("2")
        for row, col in ((40, 170), (128, 200), (220, 230)):
            click_pixel(row, col)
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
        x, y = page.evaluate(ON_SCREEN, [first.row, first.col])
        box = page.locator("#map").bounding_box()
        page.mouse.click(box["x"] + x, box["y"] + y)
        page.get_by_text("Delete").click()
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


def start_app(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """``pointseg app ARGS`` as the analyst runs it; the process and the URL it prints."""
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "pointseg", "app", *args], stdout=out,
                                   stderr=subprocess.STDOUT, text=True)
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
            page.wait_for_function("document.getElementById('status').textContent.includes('click accuracy')",
                                   timeout=60000)
            page.wait_for_timeout(800)
            screenshot(page, tmp_path, "app-landsat.jpg")
            tile = np.asarray(Image.open(io.BytesIO(page.request.get(
                f"{url.split('/?')[0]}/api/tiles/map/0/0/0.png").body())).convert("RGBA"))
            colours = {tuple(c) for c in tile[tile[..., 3] > 0][:, :3].tolist()}
            assert len(colours & {(20, 40, 120), (60, 200, 220), (120, 140, 60), (240, 240, 240)}) >= 3
            page.keyboard.press("3")  # a correction: land where the map may say otherwise, then a new map
            box = page.locator("#map").bounding_box()
            x, y = page.evaluate(ON_SCREEN, [300, 300])
            page.mouse.click(box["x"] + x, box["y"] + y)
            page.wait_for_function("app.state.clicks.length === 41")
            page.click("#update")
            page.wait_for_function("app.round === 2", timeout=120000)
            page.mouse.wheel(0, -300)  # zoom in: the view is kept for the next visit
            page.wait_for_timeout(1200)
            view = page.evaluate("[app.map.getZoom(), app.map.getCenter().lat, app.map.getCenter().lng]")
            with page.expect_download() as download:
                page.get_by_text("map (GeoTIFF)").click()
            download.value.save_as(tmp_path / "map.tif")
            browser.close()
        process.send_signal(signal.SIGKILL)  # nothing acknowledged is lost
        process.wait(timeout=10)
        with rasterio.open(tmp_path / "map.tif") as ds, rasterio.open(landsat / "RGB.byte.tif") as scene:
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
            box = page.locator("#map").bounding_box()
            x, y = page.evaluate(ON_SCREEN, [20, 30])
            page.mouse.click(box["x"] + x, box["y"] + y)
            page.wait_for_function("app.state.clicks.length === 1")
            assert page.evaluate("app.state.clicks[0].image") == "Rural/2"
            page.fill("#auto", "2")  # the map is updated after every 2 clicks
            page.evaluate("document.activeElement.blur()")  # keys go to the map again, not to the field
            page.keyboard.press("3")
            x, y = page.evaluate(ON_SCREEN, [50, 50])
            page.mouse.click(box["x"] + x, box["y"] + y)
            page.wait_for_function("app.round === 1", timeout=60000)
            assert "Rural%2F2" in page.get_attribute("#export-map", "href")
            browser.close()
    finally:
        process.kill()
        process.wait(timeout=10)
