"""An app project: one folder that holds everything of an analyst's session.

``project.json``: what is mapped (rasters, or a tile folder and split), the class palette (names and colours), the
view and the settings; ``clicks.json``: the clicks (id, image, row, column, class); ``suggestions.json``: the
suggested clicks not answered or dismissed yet; ``rounds/`` the fast runs.
Every change is written atomically before it is acknowledged (``io.write_json``: a temporary file renamed into
place), under a lock, so a killed server loses no acknowledged click and two tabs on one project do not overwrite
each other's clicks: each change is applied to the state on disk, not to a copy a page holds.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pointseg.data.classes import default_colors
from pointseg.io import write_json

PROJECT, CLICKS, SUGGESTIONS = "project.json", "clicks.json", "suggestions.json"
MAX_NAME = 64  # characters of a class name
HEX = set("0123456789abcdefABCDEF")


def lower_priority(nice: int = 10) -> None:
    """Lower the calling thread's priority (the app's background work: overviews, scores; Linux gives each thread
    its own nice value, elsewhere nothing changes)."""
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


class ProjectError(ValueError):
    """A request the project refuses (a 4xx answer with this message)."""


def check_colour(colour: object) -> str:
    if not (isinstance(colour, str) and len(colour) == 7 and colour[0] == "#" and set(colour[1:]) <= HEX):
        raise ProjectError(f"colour {colour!r}: give #rrggbb")
    return colour.lower()


def hex_colour(rgb: tuple[int, int, int] | tuple[int, ...]) -> str:
    """``(r, g, b)`` as ``#rrggbb``."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def rgb(colour: str) -> tuple[int, int, int]:
    """``#rrggbb`` as ``(r, g, b)``."""
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise ProjectError(f"a class name is 1 to {MAX_NAME} characters")
    return name.strip()


@dataclass
class Click:
    id: int
    image: str
    row: int
    col: int
    cls: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "image": self.image, "row": self.row, "col": self.col, "class": self.cls}


class Project:
    """The state in ``folder`` (created by ``create``, reopened by ``open``)."""

    def __init__(self, folder: Path, info: dict[str, Any]) -> None:
        self.folder, self.info = folder, info
        self.lock = threading.RLock()

    @classmethod
    def create(cls, folder: str | Path, images: dict[str, dict[str, Any]], classes: list[dict[str, str]],
               source: dict[str, Any], settings: dict[str, Any] | None = None) -> Project:
        """A new project of ``images`` (id -> ``{"height", "width"}``) with the class palette ``classes`` (names
        and ``#rrggbb`` colours) on ``source`` (how the images are read: rasters or a tile folder); ``settings``:
        the config keys its models are fitted with."""
        folder = Path(folder)
        if (folder / PROJECT).exists():
            raise ProjectError(f"{folder}: already holds a project; reopen it with --project {folder} (and --set "
                               "KEY=VALUE to change its settings)")
        colours = default_colors(len(classes))
        palette = [{"name": check_name(c["name"]),
                    "color": check_colour(c.get("color") or hex_colour(colours[i]))}
                   for i, c in enumerate(classes)]
        names = [c["name"] for c in palette]
        if len(set(names)) != len(names):
            raise ProjectError("class names must differ")
        info = {"version": 1, "source": source, "images": images, "classes": palette, "view": None, "rounds": 0,
                "settings": settings or {}}
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / CLICKS, {"next_id": 1, "clicks": []})
        write_json(folder / PROJECT, info)
        return cls(folder, info)

    @classmethod
    def open(cls, folder: str | Path) -> Project:
        folder = Path(folder)
        try:
            info = json.loads((folder / PROJECT).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ProjectError(f"{folder}: no project here (no {PROJECT}); start one with --raster or --data-root") \
                from None
        except (OSError, json.JSONDecodeError) as e:
            raise ProjectError(f"{folder / PROJECT}: cannot read the project ({e})") from e
        return cls(folder, info)

    # --- clicks -------------------------------------------------------------------------------------------------

    def _read_clicks(self) -> dict[str, Any]:
        return json.loads((self.folder / CLICKS).read_text(encoding="utf-8"))

    def clicks(self) -> list[Click]:
        with self.lock:
            return [Click(c["id"], c["image"], c["row"], c["col"], c["class"]) for c in self._read_clicks()["clicks"]]

    def _check_click(self, image: object, row: object, col: object, cls: object) -> tuple[str, int, int, int]:
        images = self.info["images"]
        if not isinstance(image, str) or image not in images:
            raise ProjectError(f"image {str(image)[:80]!r} is not in the project")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (row, col, cls)):
            raise ProjectError("row, col and class are whole numbers")
        r, c, k = int(row), int(col), int(cls)  # type: ignore[call-overload]
        size = images[image]
        if not (0 <= r < size["height"] and 0 <= c < size["width"]):
            raise ProjectError(f"pixel ({r}, {c}) is outside {image} ({size['height']} x {size['width']})")
        if not 0 <= k < len(self.info["classes"]):
            raise ProjectError(f"class {k} is not in the palette (0..{len(self.info['classes']) - 1})")
        return image, r, c, k

    def add_click(self, image: object, row: object, col: object, cls: object) -> Click:
        """Add a click; written before it returns. A click on a pixel that has one replaces its class; a click on a
        suggested pixel answers the suggestion."""
        image, row, col, cls = self._check_click(image, row, col, cls)
        with self.lock:
            self.dismiss_suggestion(image, row, col)
            state = self._read_clicks()
            for c in state["clicks"]:
                if (c["image"], c["row"], c["col"]) == (image, row, col):
                    c["class"] = cls
                    write_json(self.folder / CLICKS, state)
                    return Click(c["id"], image, row, col, cls)
            click = Click(state["next_id"], image, row, col, cls)
            state["next_id"] += 1
            state["clicks"].append(click.to_dict())
            write_json(self.folder / CLICKS, state)
            return click

    def set_class(self, click_id: int, cls: object) -> Click:
        with self.lock:
            state = self._read_clicks()
            for c in state["clicks"]:
                if c["id"] == click_id:
                    self._check_click(c["image"], c["row"], c["col"], cls)
                    c["class"] = cls
                    write_json(self.folder / CLICKS, state)
                    return Click(c["id"], c["image"], c["row"], c["col"], c["class"])
        raise ProjectError(f"no click {click_id}")

    def delete_click(self, click_id: int) -> None:
        with self.lock:
            state = self._read_clicks()
            kept = [c for c in state["clicks"] if c["id"] != click_id]
            if len(kept) == len(state["clicks"]):
                raise ProjectError(f"no click {click_id}")
            state["clicks"] = kept
            write_json(self.folder / CLICKS, state)

    # --- suggested clicks ---------------------------------------------------------------------------------------

    def suggestions(self) -> list[dict[str, Any]]:
        """The suggested clicks not answered or dismissed yet (``rank``, ``image``, ``row``, ``col``, ``score``,
        ``predicted``), image by image in the order they were made."""
        path = self.folder / SUGGESTIONS
        with self.lock:
            return json.loads(path.read_text(encoding="utf-8"))["suggestions"] if path.exists() else []

    def set_suggestions(self, image: str, found: list[dict[str, Any]]) -> None:
        """``found`` replaces the suggestions on ``image`` (those on other images stay)."""
        with self.lock:
            kept = [s for s in self.suggestions() if s["image"] != image]
            write_json(self.folder / SUGGESTIONS, {"suggestions": kept + found})

    def dismiss_suggestion(self, image: object, row: object = None, col: object = None) -> int:
        """Drop the suggestion at ``row``, ``col`` of ``image`` (``None``: every one on ``image``); how many went."""
        with self.lock:
            found = self.suggestions()
            kept = [s for s in found if not (s["image"] == image and (row is None or (s["row"], s["col"]) ==
                                                                     (row, col)))]
            if len(kept) != len(found):
                write_json(self.folder / SUGGESTIONS, {"suggestions": kept})
            return len(found) - len(kept)

    # --- classes and view ---------------------------------------------------------------------------------------

    def add_class(self, name: object, colour: object) -> dict[str, str]:
        if "data_root" in self.info["source"]:
            raise ProjectError("the classes of a tile folder are its dataset's class table (data.classes)")
        entry = {"name": check_name(name), "color": check_colour(colour)}
        with self.lock:
            if entry["name"] in [c["name"] for c in self.info["classes"]]:
                raise ProjectError(f"there is a class {entry['name']!r} already")
            self.info["classes"].append(entry)
            write_json(self.folder / PROJECT, self.info)
        return entry

    def set_settings(self, settings: dict[str, Any]) -> None:
        """The config keys the next rounds are fitted with (the rounds made keep theirs, in their runs)."""
        with self.lock:
            self.info["settings"] = settings
            write_json(self.folder / PROJECT, self.info)

    def set_rounds(self, n: int) -> None:
        """The fast rounds made so far (the latest is reopened)."""
        with self.lock:
            self.info["rounds"] = n
            write_json(self.folder / PROJECT, self.info)

    def set_view(self, view: object) -> None:
        """Where the page looks: ``{image, center: [row, col], zoom}`` (kept for the next visit)."""
        if not (isinstance(view, dict) and set(view) == {"image", "center", "zoom"}):
            raise ProjectError("a view is {image, center, zoom}")
        center, zoom = view["center"], view["zoom"]
        if not (isinstance(center, list) and len(center) == 2 and all(isinstance(v, int | float) and
                                                                      not isinstance(v, bool) for v in center)
                and isinstance(zoom, int | float) and not isinstance(zoom, bool) and -10 <= zoom <= 40):
            raise ProjectError("a view's center is [row, col] and its zoom a number")
        if view["image"] not in self.info["images"]:
            raise ProjectError(f"image {str(view['image'])[:80]!r} is not in the project")
        with self.lock:
            self.info["view"] = view
            write_json(self.folder / PROJECT, self.info)

    def state(self) -> dict[str, Any]:
        """What the page shows: the palette, the images, the clicks with their counts per class, the view."""
        clicks = self.clicks()
        counts = [0] * len(self.info["classes"])
        for c in clicks:
            counts[c.cls] += 1
        return {"classes": self.info["classes"], "images": self.info["images"], "view": self.info["view"],
                "clicks": [c.to_dict() for c in clicks], "counts": counts, "rounds": self.info["rounds"],
                "suggestions": self.suggestions(),
                "fixed_classes": "data_root" in self.info["source"]}
