import hashlib
import http.server
import threading
import zipfile
from functools import partial

import pytest

from pointseg.data.download import download_loveda
from pointseg.data.sources import LoveDA
from tests.conftest import write_loveda


@pytest.fixture
def file_server(tmp_path):
    """Serve ``tmp_path / 'www'`` on a loopback port."""
    www = tmp_path / "www"
    www.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def make_zip(tmp_path, www):
    src = write_loveda(tmp_path / "src", "Train", range(3))
    archive = www / "Train.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted((src / "Train").rglob("*.png")):
            z.write(f, f.relative_to(src))
    return hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_and_extract_into_loveda_layout(tmp_path, file_server):
    www, url = file_server
    md5 = make_zip(tmp_path, www)
    root = download_loveda(tmp_path / "data", ("Train",), {"Train": (f"{url}/Train.zip", md5)})
    assert len(LoveDA(root, "Train", ("Rural",))) == 3
    assert not (root / "Train.zip").exists()


def test_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path, file_server):
    www, url = file_server
    make_zip(tmp_path, www)
    with pytest.raises(ValueError, match="checksum mismatch"):
        download_loveda(tmp_path / "data", ("Train",), {"Train": (f"{url}/Train.zip", "0" * 32)})
    assert list((tmp_path / "data").iterdir()) == []
