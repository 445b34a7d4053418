"""Fetch LoveDA (Zenodo record 5706578) into the layout :class:`~pointseg.data.sources.LoveDA` reads."""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from pointseg.io import atomic_path

LOVEDA_FILES = {
    "Train": ("https://zenodo.org/records/5706578/files/Train.zip?download=1", "de2b196043ed9b4af1690b3f9a7d558f"),
    "Val": ("https://zenodo.org/records/5706578/files/Val.zip?download=1", "84cae2577468ff0b5386758bb386d31d"),
    "Test": ("https://zenodo.org/records/5706578/files/Test.zip?download=1", "a489be0090465e01fb067795d24e6b47"),
}


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download_file(url: str, path: Path, md5: str | None = None, timeout: float = 60) -> Path:
    """Download ``url`` to ``path`` (atomically, with a progress bar) and check its MD5."""
    if path.exists() and (md5 is None or md5sum(path) == md5):
        return path
    with atomic_path(path) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=path.name) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        if md5 is not None and (got := md5sum(tmp)) != md5:
            raise ValueError(f"{url}: checksum mismatch (md5 {got}, expected {md5}); download again")
    return path


def download_loveda(root: str | Path, splits: tuple[str, ...] = ("Train", "Val"),
                    files: dict[str, tuple[str, str]] = LOVEDA_FILES) -> Path:
    """Download and extract LoveDA ``splits`` under ``root`` (skipping splits already extracted)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split in splits:
        if (root / split).is_dir():
            continue
        url, md5 = files[split]
        archive = download_file(url, root / f"{split}.zip", md5)
        tmp_dir = root / f".{split}.extracting"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp_dir)
        inner = tmp_dir / split if (tmp_dir / split).is_dir() else tmp_dir
        inner.rename(root / split)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        archive.unlink()
    return root
