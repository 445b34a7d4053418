"""The small real sample shipped inside the package (Dubai tiles with masks, a Landsat scene with clicks; see its
README), and copying it out to try the commands on."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from pointseg.io import check_writable


def sample_dir() -> Path:
    """Where the installed package keeps its sample."""
    return Path(str(resources.files("pointseg").joinpath("sample")))


def dubai_settings(root: Path) -> list[str]:
    """The config keys that read the sample's Dubai tiles (a folder dataset with a colour-coded class table)."""
    return ["data.format=folder", f"data.classes={root / 'classes.csv'}", "data.color_coded=true"]


def copy_sample(out: str | Path) -> Path:
    """The sample copied to ``out``; files already there are an error, before anything is copied."""
    out, source = Path(out), sample_dir()
    check_writable(out)
    clash = [p for p in source.rglob("*") if p.is_file() and (out / p.relative_to(source)).exists()]
    if clash:
        raise FileExistsError(f"{out / clash[0].relative_to(source)}: already there; copy the sample to another "
                              "--out (or remove it first)")
    shutil.copytree(source, out, dirs_exist_ok=True)
    return out
