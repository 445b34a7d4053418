"""The app's page in a real browser: headless Chromium (Debian's package) driven by Playwright. Click three points
of each of two classes, update the map, see both classes in the legend and their colours in the map tiles, reload
and find the clicks, delete one. Screenshots go to the test's folder."""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from pointseg.app.project import Project
from pointseg.app.server import create_app
from pointseg.app.session import Session

TOKEN = "browser-test-token"
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
                             [{"name": "<b>red</b> fields", "color": "#d62728"}, {"name": "green", "color": "#2ca02c"}],
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
        page.goto(f"{url}/?token={TOKEN}")
        page.wait_for_function("typeof app !== 'undefined' && app.state !== null")
        assert page.locator("#palette li .name").all_text_contents() == ["<b>red</b> fields", "green"]  # text

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
        assert page.locator("#palette li .count").all_text_contents() == [" (3)", " (3)"]
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
    assert sorted(fields[0]) == sorted(["<b>red</b> fields"] * 2 + ["green"] * 3)
    with rasterio.open(map_tif) as ds:
        classes = ds.read(1)
        assert ds.crs.to_epsg() == 32633 and classes[128, 40] == 0 and classes[128, 215] == 1
