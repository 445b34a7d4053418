"""The app's web server: FastAPI behind ``security.Guard``; the page is the package's static files.

The JSON API under ``/api/``: ``GET state``; ``POST clicks`` ``{image, row, col, class}`` (answered after the
click is written); ``PATCH clicks/{id}`` ``{class}``; ``DELETE clicks/{id}``; ``POST classes`` ``{name, color}``;
``PUT view``; per image (``?image=ID``, default the first): ``GET raster``, ``tiles/{image,map,certainty}/z/x/y.png``,
``POST suggestions`` (new ones, kept until answered or dismissed), ``DELETE suggestions`` (``&row=&col=``: one),
``export/map.zip``. Refusals are 4xx JSON ``{"detail": reason}``, failures 500 JSON ``{"detail": what went wrong}``
(the traceback goes to the server's log); nothing a request names reaches the file system beyond the project's
files and the static folder (``StaticFiles`` resolves paths inside it; image ids are looked up in the project,
never used as paths).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from pointseg.app.project import Project, ProjectError
from pointseg.app.security import Guard
from pointseg.app.session import Session, safe_name
from pointseg.app.tiles import ImageTiles, certainty_lut, class_lut, lut_tile
from pointseg.data.points import save_points
from pointseg.io import error_message

STATIC = Path(__file__).parent / "static"


async def body(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise ProjectError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise ProjectError("the body is a JSON object")
    return data


def create_app(project: Project, token: str, host: str = "127.0.0.1", port: int = 8765,
               session: Session | None = None) -> Guard:
    """The ASGI app of ``project``, answering only requests with ``token`` on ``host:port``; ``session``: the
    model in the loop (``None``: clicks only)."""
    api = FastAPI(title="pointseg app", docs_url=None, redoc_url=None, openapi_url=None)
    imagery: dict[str, ImageTiles] = {}
    imagery_lock = threading.Lock()

    def model() -> Session:
        if session is None:
            raise ProjectError("this project has no model")
        return session

    def tiles(image: str | None) -> ImageTiles:
        """The imagery of ``image`` (opened on first use; the first views read the image, and overviews of a
        large one are built into the project in the background)."""
        ref = model().ref(image)
        with imagery_lock:
            if ref.id not in imagery:
                vrt = project.folder / "overviews" / f"{safe_name(ref.id)}.vrt"
                imagery[ref.id] = ImageTiles(ref.image, vrt)
                threading.Thread(target=imagery[ref.id].build_overviews_later, daemon=True).start()
            return imagery[ref.id]

    if session is not None:
        tiles(None)

    @api.exception_handler(ProjectError)
    async def refused(_: Request, error: ProjectError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    @api.exception_handler(Exception)
    async def failed(_: Request, error: Exception) -> JSONResponse:
        """Any other failure as its one-line message (the server's log keeps the traceback)."""
        return JSONResponse({"detail": error_message(error)}, status_code=500)

    @api.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": "invalid request: " + "; ".join(str(e.get("msg")) for e in error.errors())},
                            status_code=422)

    @api.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    @api.get("/api/state")
    async def state() -> dict[str, Any]:
        return project.state()

    @api.post("/api/clicks", status_code=201)
    async def add_click(request: Request) -> dict[str, Any]:
        data = await body(request)
        return project.add_click(data.get("image"), data.get("row"), data.get("col"), data.get("class")).to_dict()

    @api.patch("/api/clicks/{click_id}")
    async def reclassify(click_id: int, request: Request) -> dict[str, Any]:
        return project.set_class(click_id, (await body(request)).get("class")).to_dict()

    @api.delete("/api/clicks/{click_id}", status_code=204)
    async def delete(click_id: int) -> None:
        project.delete_click(click_id)

    @api.post("/api/classes", status_code=201)
    async def add_class(request: Request) -> dict[str, str]:
        data = await body(request)
        return project.add_class(data.get("name"), data.get("color"))

    @api.put("/api/view", status_code=204)
    async def view(request: Request) -> None:
        project.set_view(await body(request))

    @api.get("/api/raster")
    def raster(image: str | None = None) -> dict[str, Any]:
        shown = tiles(image)
        return {"image": model().ref(image).id, "name": shown.raster.name, "height": shown.size[0],
                "width": shown.size[1], "levels": shown.levels, "crs": shown.crs, "transform": shown.transform,
                "tile": 256}

    @api.get("/api/tiles/image/{z}/{x}/{y}.png")
    def image_tile(z: int, x: int, y: int, image: str | None = None) -> Response:
        shown = tiles(image)
        try:
            return Response(shown.tile(z, x, y), media_type="image/png")
        except ValueError as e:
            return JSONResponse({"detail": str(e)}, status_code=404)

    @api.get("/api/tiles/{layer}/{z}/{x}/{y}.png")
    def layer_tile(layer: str, z: int, x: int, y: int, image: str | None = None) -> Response:
        ref, shown = model().ref(image), tiles(image)
        layers = {"map": (model().classes_of, class_lut([c["color"] for c in project.info["classes"]])),
                  "certainty": (model().certainty_of, certainty_lut())}
        if layer not in layers:
            return JSONResponse({"detail": f"no layer {layer[:40]!r}"}, status_code=404)
        values_of, lut = layers[layer]
        try:
            return Response(lut_tile(lambda window: values_of(ref.id, window), lut, z, x, y, shown.size),
                            media_type="image/png", headers={"cache-control": "no-store"})
        except ValueError as e:
            return JSONResponse({"detail": str(e)}, status_code=404)

    @api.post("/api/suggestions")
    def suggestions(k: int = 10, image: str | None = None) -> list[dict[str, Any]]:
        return model().suggest(image, k)

    @api.delete("/api/suggestions")
    def dismiss(image: str | None = None, row: int | None = None, col: int | None = None) -> dict[str, int]:
        return {"dismissed": project.dismiss_suggestion(model().ref(image).id, row, col)}

    @api.post("/api/update")
    def update() -> dict[str, Any]:
        return model().update()

    @api.post("/api/train", status_code=202)
    def train_full() -> dict[str, Any]:
        return model().train_full()

    @api.get("/api/train")
    def training() -> dict[str, Any]:
        return model().training_status()

    @api.post("/api/train/cancel")
    def cancel() -> dict[str, Any]:
        return model().cancel_training()

    @api.get("/api/train/events")
    async def training_events() -> StreamingResponse:
        """Server-sent events: the full recipe's progress every second until it ends."""
        async def events() -> AsyncIterator[str]:
            while True:
                status = model().training_status()
                yield f"data: {json.dumps(status)}\n\n"
                if status["state"] != "running":
                    return
                await asyncio.sleep(1)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-store"})

    @api.get("/api/accuracy")
    def accuracy() -> dict[str, Any]:
        return model().accuracy()

    @api.get("/api/export/{name}")
    def export(name: str, image: str | None = None) -> FileResponse:
        """``map.zip`` (the map of ``image`` with its class names and QGIS style; ``map.tif`` alone),
        ``clicks.gpkg``, ``points.json``, ``run.zip`` (what ``predict --run`` needs of the map's run) or
        ``model.onnx``; written into the project's ``exports/`` and sent."""
        current = model()
        folder = project.folder / "exports"
        makers = {"map.zip": lambda p: current.export_map_zip(p, image),
                  "map.tif": lambda p: current.export_map(p, image), "clicks.gpkg": current.export_clicks,
                  "points.json": lambda p: save_points(p, current.points()), "run.zip": current.export_run,
                  "model.onnx": current.export_onnx}
        if name not in makers:
            raise ProjectError(f"export one of {sorted(makers)}")
        path = makers[name](folder / name)
        return FileResponse(path, filename=name)

    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    return Guard(api, token, host, port)
