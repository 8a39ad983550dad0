"""Offline tests of the dataset downloads against a loopback HTTP server with tiny archives."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import re
import struct
import tarfile
import threading
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.datasets import MNIST

from moebench.cli.dg import download as cli
from moebench.dg.datasets import domainbed as db, sources
from moebench.dg.datasets.base import DatasetFileError
from moebench.dg.datasets.download import ChecksumError, DownloadError, download_file, extract_archive

OFFICE_CLASSES = [f"class_{i:02d}" for i in range(65)]
TERRA_EXTRA = "badger"  # a real CCT category DomainBed drops


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _targz(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _tree(prefix: str, envs, classes, jpeg: bytes) -> dict[str, bytes]:
    return {f"{prefix}{env}/{c}/0.jpg": jpeg for env in envs for c in classes}


def _domain_net_classes() -> tuple[list[str], dict[str, str]]:
    """345 class names including those of one listed duplicate in clipart and in sketch."""
    lines = sources.DOMAIN_NET_DUPLICATES.read_text().split()
    dups = {d: next(x for x in lines if x.startswith(d + "/")) for d in ("clipart", "sketch")}
    named = {x.split("/")[1] for x in dups.values()}
    return sorted(named | {f"c{i:03d}" for i in range(345 - len(named))}), dups


def _terra(jpeg: bytes) -> tuple[bytes, bytes]:
    """Images tar + annotations tar: 5 locations x 11 categories (one location/category dropped)."""
    names = list(sources.TERRA_CATEGORIES) + [TERRA_EXTRA]
    cats = [{"id": 10 + i, "name": n} for i, n in enumerate(names)]
    images, anns, files = [], [], {}
    for k, (loc, ci) in enumerate((loc, ci) for loc in ("38", "46", "100", "43", "99")
                                  for ci in range(len(names))):
        loc_value = int(loc) if k % 2 else loc  # both forms occur in CCT files
        images.append({"id": f"i{k}", "file_name": f"f{k}.jpg", "location": loc_value})
        anns.append({"id": f"a{k}", "image_id": f"i{k}", "category_id": 10 + ci})
        files[f"eccv_18_all_images_sm/f{k}.jpg"] = jpeg
    half = len(images) // 2
    split = {"train": (images[:half], anns[:half]), "cis_val": (images[half:], anns[half:])}
    ann_files = {f"eccv_18_annotation_files/{s}_annotations.json": json.dumps(
        {"images": im, "annotations": an, "categories": cats}).encode()
        for s, (im, an) in split.items()}
    return _targz(files), _targz(ann_files)


def _mnist() -> dict[str, bytes]:
    """IDX files: 6 train and 4 test 28x28 images, labels i % 10."""
    images = lambda n: gzip.compress(struct.pack(">IIII", 0x803, n, 28, 28)  # noqa: E731
                                     + bytes(i % 256 for i in range(n * 784)))
    labels = lambda n: gzip.compress(struct.pack(">II", 0x801, n)  # noqa: E731
                                     + bytes(i % 10 for i in range(n)))
    return {"train-images-idx3-ubyte.gz": images(6), "train-labels-idx1-ubyte.gz": labels(6),
            "t10k-images-idx3-ubyte.gz": images(4), "t10k-labels-idx1-ubyte.gz": labels(4)}


@pytest.fixture(scope="module")
def archives() -> dict[str, bytes]:
    """Mirror path -> bytes, one tiny archive set per dataset in its real layout."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 90)).save(buf, format="JPEG")
    jpeg = buf.getvalue()
    out = {
        "PACS.zip": _zip(_tree("kfold/", db.PACS.FOLDERS, db.PACS.CLASSES, jpeg)),
        "VLCS.tar.gz": _targz(_tree("VLCS/", db.VLCS.FOLDERS, db.VLCS.CLASSES, jpeg)),
        "office_home.zip": _zip({**_tree("OfficeHomeDataset_10072016/", db.OfficeHome.FOLDERS,
                                         OFFICE_CLASSES, jpeg),
                                 "OfficeHomeDataset_10072016/ImageInfo.csv": b"info"}),
        **_mnist()}
    classes, dups = _domain_net_classes()
    for remote in sources.SOURCES["domain_net"].files:
        domain = remote.filename[:-4]
        entries = _tree("", [domain], classes, jpeg)
        entries.update({dups[domain]: jpeg} if domain in dups else {})
        out[remote.mirror_path] = _zip(entries)
    out["eccv_18_all_images_sm.tar.gz"], out["eccv_18_annotations.tar.gz"] = _terra(jpeg)
    return out


@dataclasses.dataclass
class Route:
    body: bytes = b""
    status: int = 200
    cut_after: int | None = None  # send only this many bytes, then close...
    cuts_left: int = 0            # ...for this many requests
    gdrive: str | None = None     # "cookie" | "form" | "link" | "stuck": interstitial page first


PAGES = {  # Google Drive interstitials: cookie token, download-form, confirm= link, dead end
    "cookie": "<html>virus scan warning</html>",
    "form": ('<form id="download-form" action="/uc" method="get"><input type="hidden" name="id" '
             'value="X"><input type="hidden" name="confirm" value="t"></form>'),
    "link": '<a href="/uc?export=download&amp;confirm=AbC-9&amp;id=X">Download</a>',
    "stuck": "<html>Quota exceeded</html>"}
COOKIE = {"Set-Cookie": "download_warning_1=TOK3n; Path=/"}


class Handler(BaseHTTPRequestHandler):
    routes: dict[str, Route]  # set per server
    log: list[tuple[str, dict[str, str]]]  # (path, headers) of every request

    def log_message(self, *args: object) -> None:  # keep test output clean
        return

    def do_GET(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        self.log.append((self.path, dict(self.headers)))
        assert len(self.log) < 50, "unbounded request loop"
        route = self.routes.get(url.path)
        if route is None or route.status != 200:
            self.send_error(404 if route is None else route.status)
        elif route.gdrive and not self._confirmed(route, urllib.parse.parse_qs(url.query)):
            cookie = COOKIE if route.gdrive == "cookie" else {}
            self._reply(200, PAGES[route.gdrive].encode(), {"Content-Type": "text/html", **cookie})
        else:
            self._send(route)

    def _confirmed(self, route: Route, query: dict[str, list[str]]) -> bool:
        token = query.get("confirm", [""])[0]
        if route.gdrive == "cookie":
            return token == "TOK3n" and "download_warning_1=TOK3n" in self.headers.get("Cookie", "")
        return token == ("t" if route.gdrive == "form" else "AbC-9")

    def _reply(self, code: int, body: bytes, headers: dict, cut: int | None = None) -> None:
        """Send ``body``; with ``cut``, only its first bytes (HTTP/1.0: the connection closes)."""
        self.send_response(code)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body[:cut])

    def _send(self, route: Route) -> None:
        body, headers = route.body, {"Content-Type": "application/octet-stream"}
        start = int(self.headers.get("Range", "bytes=0-")[6:].split("-")[0])
        if "Range" in self.headers:
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        cut = route.cut_after if route.cuts_left > 0 else None
        route.cuts_left -= cut is not None
        self._reply(206 if "Range" in self.headers else 200, body[start:], headers, cut)


@pytest.fixture
def server(archives):
    """(base URL, routes, request log); every archive is served under /mirror/."""
    routes = {f"/mirror/{path}": Route(body) for path, body in archives.items()}
    log: list[tuple[str, dict[str, str]]] = []
    handler = type("H", (Handler,), {"routes": routes, "log": log})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", routes, log
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_interrupted_download_resumes_with_range(server, tmp_path):
    base, routes, log = server
    route = routes["/mirror/PACS.zip"]
    route.cut_after, route.cuts_left = 1000, 1
    url, dest, parts = f"{base}/mirror/PACS.zip", tmp_path / "out/PACS.zip", tmp_path / "tmp"
    with pytest.raises(DownloadError) as err:
        download_file(url, dest, part_dir=parts, retries=0)
    assert str(err.value) == (f"download failed: {url}: connection closed after 1000 of "
                              f"{len(route.body)} bytes")
    assert not dest.exists() and os.listdir(parts) == ["PACS.zip.part"]
    assert (parts / "PACS.zip.part").stat().st_size == 1000
    download_file(url, dest, part_dir=parts, sha256=_sha(route.body), retries=0, progress=True)
    assert _sha(dest.read_bytes()) == _sha(route.body) and os.listdir(parts) == []
    assert "Range" not in log[0][1] and log[1][1]["Range"] == "bytes=1000-" and len(log) == 2


def test_cut_connection_is_resumed_within_one_call(server, tmp_path):
    base, routes, log = server
    routes["/mirror/VLCS.tar.gz"].cut_after, routes["/mirror/VLCS.tar.gz"].cuts_left = 50, 2
    dest = download_file(f"{base}/mirror/VLCS.tar.gz", tmp_path / "VLCS.tar.gz", retries=2)
    assert dest.read_bytes() == routes["/mirror/VLCS.tar.gz"].body
    assert [h.get("Range") for _, h in log] == [None, "bytes=50-", "bytes=100-"]


@pytest.mark.parametrize("kind", ["cookie", "form", "link", "stuck"])
def test_google_drive_confirm_pages(server, tmp_path, kind):
    base, routes, log = server
    routes["/uc"] = Route(routes["/mirror/PACS.zip"].body, gdrive=kind)
    url, dest = f"{base}/uc?export=download&id=X", tmp_path / "PACS.zip"
    if kind == "stuck":  # an HTML page offering no token: one clear line, nothing written
        with pytest.raises(DownloadError, match=rf"^download failed: {re.escape(url)}: got an"):
            download_file(url, dest, retries=0)
        assert os.listdir(tmp_path) == [] and len(log) == 1
        return
    assert download_file(url, dest, retries=0).read_bytes() == routes["/uc"].body
    assert len(log) == 2 and "confirm=" in log[1][0] and "confirm=" not in log[0][0]


def test_checksum_and_size_mismatch(server, tmp_path):
    base, routes, _ = server
    body = routes["/mirror/VLCS.tar.gz"].body
    with pytest.raises(ChecksumError) as err:
        download_file(f"{base}/mirror/VLCS.tar.gz", tmp_path / "VLCS.tar.gz", sha256="0" * 64)
    assert str(err.value) == ("checksum mismatch for VLCS.tar.gz: expected sha256 "
                              f"{'0' * 64}, got {_sha(body)}")
    with pytest.raises(ChecksumError, match=r"^size mismatch for VLCS.tar.gz: expected 3 bytes"):
        download_file(f"{base}/mirror/VLCS.tar.gz", tmp_path / "VLCS.tar.gz", size=3)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["PACS.zip", "VLCS.tar.gz", "train-images-idx3-ubyte.gz"])
def test_truncated_archive_is_reported(archives, tmp_path, name):
    (tmp_path / name).write_bytes(archives[name][: len(archives[name]) // 2])
    with pytest.raises(DownloadError, match=rf"^corrupt archive {name}: \S"):
        extract_archive(tmp_path / name, tmp_path / "x")


def _build(name: str, data: Path, base: str) -> Path:
    spec = db.DOWNLOADABLE[name]
    spec.build(data / spec.DIR_NAME, mirror=f"{base}/mirror", cache_dir=data.parent / "cache")
    return data / spec.DIR_NAME


@pytest.mark.parametrize("name,classes", [
    ("pacs", db.PACS.CLASSES), ("vlcs", db.VLCS.CLASSES), ("office_home", OFFICE_CLASSES),
    ("terra_incognita", sources.TERRA_CATEGORIES), ("domain_net", None)])
def test_build_gives_domainbed_layout_and_load(server, tmp_path, name, classes):
    base, _, log = server
    out = _build(name, tmp_path / "data", base)
    spec = db.DOWNLOADABLE[name]
    assert sorted(os.listdir(tmp_path / "data")) == [spec.DIR_NAME]
    assert sorted(os.listdir(tmp_path / "cache")) == ["checksums.json"]  # archives removed
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == spec.FOLDERS
    ds = spec.load(out)
    assert ds.environments == spec.ENVIRONMENTS and ds.num_classes == spec.N_CLASSES
    assert all(len(env) == spec.N_CLASSES for env in ds.envs)  # one image per class and env
    assert classes is None or ds.envs[0].classes == list(classes)
    x, y = ds.envs[-1][spec.N_CLASSES - 1]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and int(y) == spec.N_CLASSES - 1
    n_requests = len(log)
    _build(name, tmp_path / "data", base)  # already there: validated, nothing fetched
    assert len(log) == n_requests


def test_domain_net_duplicates_removed_and_terra_filtered(server, tmp_path):
    base, _, _ = server
    dn = _build("domain_net", tmp_path / "data", base)
    for dup in _domain_net_classes()[1].values():
        assert not (dn / dup).exists() and (dn / dup).parent.joinpath("0.jpg").is_file()
    terra = _build("terra_incognita", tmp_path / "data", base)
    assert not (terra / "location_99").exists()
    counts = {loc: sorted(os.listdir(terra / loc)) for loc in db.TerraIncognita.FOLDERS}
    assert all(v == list(sources.TERRA_CATEGORIES) for v in counts.values())  # no TERRA_EXTRA


def test_mnist_download_reads_with_torchvision(server, tmp_path, monkeypatch):
    base, _, _ = server
    with pytest.raises(ChecksumError, match=r"^checksum mismatch for train-images-idx3-ubyte.gz: "
                                            r"expected md5 f68b3c2dcbeaaa9fbdd348bbdeb94873, got "):
        _build("mnist", tmp_path / "data", base)  # torchvision's real md5s reject fake files
    src = sources.SOURCES["mnist"]
    files = tuple(dataclasses.replace(f, md5=None) for f in src.files)
    monkeypatch.setitem(sources.SOURCES, "mnist", dataclasses.replace(src, files=files))
    out = _build("mnist", tmp_path / "data", base)
    train, test = MNIST(out, train=True), MNIST(out, train=False)
    assert len(train) == 6 and len(test) == 4
    assert train.targets.tolist() == [0, 1, 2, 3, 4, 5] and train.data.shape == (6, 28, 28)


def test_existing_dir_is_validated_and_linked(server, tmp_path):
    base, _, _ = server
    user = _build("pacs", tmp_path / "user", base).parent
    out = tmp_path / "data" / "PACS"
    db.PACS.build(out, existing_dir=user)  # the parent folder is accepted too
    assert out.is_symlink() and out.resolve() == (user / "PACS").resolve()
    ds = db.PACS.load(out, augment=True, test_envs=[2])  # augmentation only on training envs
    kinds = [type(env.transform.transforms[0]).__name__ for env in ds.envs]
    assert kinds == ["RandomResizedCrop", "RandomResizedCrop", "Resize", "RandomResizedCrop"]
    assert ds.envs[0][0][0].shape == (3, 224, 224)
    (user / "PACS" / "sketch").rename(user / "PACS" / "skecth")
    with pytest.raises(DatasetFileError, match=r"environment folders missing \['sketch'\], "
                                               r"unexpected \['skecth'\]$"):
        db.PACS.build(tmp_path / "other" / "PACS", existing_dir=user / "PACS")
    assert not (tmp_path / "other").exists()


def test_recorded_checksum_catches_a_changed_upstream_file(server, tmp_path, archives):
    base, routes, _ = server
    _build("vlcs", tmp_path / "data", base)
    recorded = json.loads((tmp_path / "cache" / "checksums.json").read_text())
    body = archives["VLCS.tar.gz"]
    assert recorded["VLCS.tar.gz"]["sha256"] == _sha(body)
    routes["/mirror/VLCS.tar.gz"].body = body[:-1] + bytes([body[-1] ^ 1])  # same size
    with pytest.raises(ChecksumError, match=r"^checksum mismatch for VLCS.tar.gz: .*recorded in"):
        _build("vlcs", tmp_path / "data2", base)
    assert not (tmp_path / "data2").exists()


def _fail_mode(mode: str, routes: dict[str, Route], archives, monkeypatch) -> str:
    """Break PACS in one way; returns the expected error line (after 'error: ')."""
    route, n = routes["/mirror/PACS.zip"], len(archives["PACS.zip"])
    if mode == "http500":
        route.status = 500
        return r"download failed: http://127\.0\.0\.1:\d+/mirror/PACS\.zip: HTTP 500"
    if mode == "cut":
        route.cut_after, route.cuts_left = 100, 5
        return rf"download failed: \S+/PACS\.zip: connection closed after 100 of {n} bytes"
    if mode == "truncated":
        route.body = route.body[: n // 2]
        return r"corrupt archive PACS\.zip: File is not a zip file"
    if mode == "checksum":
        src = sources.SOURCES["pacs"]
        bad = dataclasses.replace(src.files[0], sha256="f" * 64)
        monkeypatch.setitem(sources.SOURCES, "pacs", dataclasses.replace(src, files=(bad,)))
        return rf"checksum mismatch for PACS\.zip: expected sha256 f{{64}}, got {_sha(route.body)}"
    if mode == "layout":
        route.body = _zip({"pacs_v2/a.txt": b"x"})
        return r"unexpected archive layout: no top folder 'kfold' \(found \['pacs_v2'\]\)"
    with zipfile.ZipFile(io.BytesIO(route.body)) as zf:  # mode "invalid": one domain missing
        route.body = _zip({i: zf.read(i) for i in zf.namelist() if "/sketch/" not in i})
    return (r"invalid pacs directory \S+/data/PACS: environment folders missing \['sketch'\], "
            r"unexpected \[\]")


@pytest.mark.parametrize("mode,cache_left", [
    ("http500", []), ("cut", ["PACS.zip.part"]), ("truncated", []), ("checksum", []),
    ("layout", ["PACS.zip"]), ("invalid", ["PACS.zip"])])
def test_cli_failure_leaves_data_dir_clean_and_prints_one_line(
        server, tmp_path, archives, monkeypatch, capsys, mode, cache_left):
    base, routes, _ = server
    expected = _fail_mode(mode, routes, archives, monkeypatch)
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    code = cli.main(["--dataset", "pacs", "--data-dir", str(data), "--mirror", f"{base}/mirror",
                     "--cache-dir", str(cache), "--retries", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert re.fullmatch(f"error: {expected}", err[0]), err[0]
    assert os.listdir(data) == [] and sorted(os.listdir(cache)) == cache_left


def test_cli_resumes_in_default_cache_then_succeeds(server, tmp_path, capsys):
    base, routes, log = server
    routes["/mirror/PACS.zip"].cut_after, routes["/mirror/PACS.zip"].cuts_left = 700, 1
    data = tmp_path / "data"
    args = ["--dataset", "pacs", "--data-dir", str(data), "--mirror", f"{base}/mirror",
            "--retries", "0", "--no-progress"]
    assert cli.main(args) == 1
    assert os.listdir(data) == [".downloads"]
    assert os.listdir(data / ".downloads") == ["PACS.zip.part"]
    assert cli.main(args) == 0 and log[-1][1]["Range"] == "bytes=700-"
    assert sorted(os.listdir(data)) == [".downloads", "PACS"]
    assert os.listdir(data / ".downloads") == ["checksums.json"]
    assert cli.main(["--dataset", "nope", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: unknown dataset 'nope'")


def test_duplicates_list_is_an_exact_copy():
    lines = sources.DOMAIN_NET_DUPLICATES.read_text().splitlines()
    assert len(lines) == 9431 and lines[0] == "clipart/animal_migration/clipart_006_000227.jpg"
    shared = Path("/work/shared/data/domain_net_duplicates.txt")  # the team's copy, if present
    assert not shared.exists() or sources.DOMAIN_NET_DUPLICATES.read_bytes() == shared.read_bytes()
