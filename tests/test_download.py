"""Downloads against a loopback HTTP server started by the test: no test touches the internet."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bivrec.data.download import DownloadError, download, fetch, fetch_images
from bivrec.data.preprocess import preprocess

FAST = {"timeout_s": 2.0, "retries": 2, "backoff_s": 0.0, "progress": False}
PAYLOAD = gzip.compress(bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8)))


def _jpeg(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, "JPEG")
    return buffer.getvalue()


class Server:
    """Serves ``files`` by path, with per-path misbehaviour, and records every request."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate_once: set[str] = set()  # first response stops halfway through the body
        self.corrupt: set[str] = set()  # always serves flipped bytes
        self.slow: set[str] = set()  # waits before answering
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                if self.path in server.slow:
                    time.sleep(1.0)
                if self.path not in server.files:
                    self.send_error(404, "Not Found")
                    return
                body = server.files[self.path]
                if self.path in server.corrupt:
                    body = bytes(b ^ 0xFF for b in body[:64]) + body[64:]
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in server.truncate_once:
                    server.truncate_once.discard(self.path)
                    self.wfile.write(body[start : start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                try:
                    self.wfile.write(body[start:])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the slow-server test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def hits(self, path: str) -> list:
        return [r for r in self.requests if r[0] == path]


@pytest.fixture
def server():
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_normal_download_checks_hash_and_skips_when_present(server, tmp_path):
    server.files["/data.gz"] = PAYLOAD
    dest = tmp_path / "data.gz"
    assert fetch(server.url + "/data.gz", dest, sha(PAYLOAD), len(PAYLOAD), **FAST) == sha(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "data.gz.part").exists()
    fetch(server.url + "/data.gz", dest, sha(PAYLOAD), **FAST)
    assert len(server.hits("/data.gz")) == 1  # the intact file was not fetched again


def test_interrupted_download_resumes_with_range(server, tmp_path):
    server.files["/data.gz"] = PAYLOAD
    server.truncate_once.add("/data.gz")
    dest = tmp_path / "data.gz"
    fetch(server.url + "/data.gz", dest, sha(PAYLOAD), **FAST)
    assert dest.read_bytes() == PAYLOAD
    first, second = server.hits("/data.gz")
    assert first[1] is None and second[1] == f"bytes={len(PAYLOAD) // 2}-"


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    server.files["/data.gz"] = PAYLOAD
    (tmp_path / "data.gz.part").write_bytes(PAYLOAD[:1000])
    fetch(server.url + "/data.gz", tmp_path / "data.gz", sha(PAYLOAD), **FAST)
    assert (tmp_path / "data.gz").read_bytes() == PAYLOAD
    assert server.hits("/data.gz") == [("/data.gz", "bytes=1000-")]


def test_corrupt_payload_is_retried_then_reported_with_both_hashes(server, tmp_path):
    server.files["/data.gz"] = PAYLOAD
    server.corrupt.add("/data.gz")
    with pytest.raises(DownloadError) as error:
        fetch(server.url + "/data.gz", tmp_path / "data.gz", sha(PAYLOAD), **FAST)
    message = str(error.value)
    assert server.url + "/data.gz" in message and sha(PAYLOAD) in message and "sha256 mismatch" in message
    bad = bytes(b ^ 0xFF for b in PAYLOAD[:64]) + PAYLOAD[64:]
    assert sha(bad) in message
    assert len(server.hits("/data.gz")) == FAST["retries"] + 1
    assert not list(tmp_path.iterdir())  # the corrupt bytes were deleted


def test_404_fails_at_once(server, tmp_path):
    with pytest.raises(DownloadError, match=r"/nothing\.gz: HTTP 404"):
        fetch(server.url + "/nothing.gz", tmp_path / "x.gz", **FAST)
    assert len(server.hits("/nothing.gz")) == 1


def test_slow_server_times_out(server, tmp_path):
    server.files["/slow.gz"] = PAYLOAD
    server.slow.add("/slow.gz")
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"slow\.gz: failed after 2 attempt\(s\): .*timed out"):
        fetch(server.url + "/slow.gz", tmp_path / "slow.gz", timeout_s=0.2, retries=1, backoff_s=0.0, progress=False)
    assert time.monotonic() - started < 1.5
    assert len(server.hits("/slow.gz")) == 2


def test_file_url_and_local_path(tmp_path):
    source = tmp_path / "src" / "a b.gz"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    assert fetch(source.as_uri(), tmp_path / "one.gz", **FAST) == sha(PAYLOAD)
    assert fetch(str(source), tmp_path / "two.gz", **FAST) == sha(PAYLOAD)
    with pytest.raises(DownloadError, match="file not found"):
        fetch(str(tmp_path / "absent.gz"), tmp_path / "three.gz", **FAST)


def test_images_bounded_concurrency_failures_and_rerun(server, tmp_path):
    server.files["/img/a.jpg"] = _jpeg("red")
    server.files["/img/b.jpg"] = _jpeg("blue")
    server.files["/img/garbage.jpg"] = b"not an image at all"
    jobs = pd.DataFrame({"name": ["a.jpg", "b.jpg", "missing.jpg", "garbage.jpg"]})
    jobs["url"] = server.url + "/img/" + jobs["name"]
    settings = {"timeout_s": 2.0, "retries": 1, "backoff_s": 0.0, "image_workers": 3}
    failures = fetch_images(jobs, tmp_path / "images", settings, progress=False)
    assert sorted(failures["name"]) == ["garbage.jpg", "missing.jpg"]
    assert "HTTP 404" in failures.set_index("name").loc["missing.jpg", "error"]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["a.jpg", "b.jpg"]
    before = len(server.requests)
    fetch_images(jobs.iloc[:2], tmp_path / "images", settings, progress=False)
    assert len(server.requests) == before  # valid images already there are skipped


def _amazon_fixture(server) -> dict:
    """A tiny Amazon 2014 dataset served over HTTP: gz JSON-lines reviews and Python-literal metadata."""
    rng = np.random.default_rng(1)
    reviews, meta = [], []
    for u in range(12):
        for t, item in enumerate(rng.choice(6, size=4, replace=False)):
            reviews.append({"reviewerID": f"U{u}", "asin": f"B{item:03d}", "overall": 5.0, "unixReviewTime": 1000 + t,
                            "reviewText": "fine"})
    for item in range(6):
        record = {"asin": f"B{item:03d}", "title": f"Toy number {item}", "brand": "Acme",
                  "categories": [["Baby", "Toys"]], "description": "It's a toy."}
        if item != 5:
            record["imUrl"] = f"{server.url}/images/B{item:03d}.jpg"
        meta.append(repr(record))  # Python literal, single quotes: the 2014 format
        if item < 4:  # item 4 has a URL whose image is missing on the server
            server.files[f"/images/B{item:03d}.jpg"] = _jpeg((40 * item, 0, 0))
    server.files["/mirror/reviews_Toy_5.json.gz"] = gzip.compress("\n".join(map(json.dumps, reviews)).encode())
    server.files["/mirror/meta_Toy.json.gz"] = gzip.compress("\n".join(meta).encode())
    return {
        "kind": "amazon2014",
        "mirror": server.url + "/mirror",
        "sources": {
            "reviews": {"url": "http://example.invalid/reviews_Toy_5.json.gz", "sha256": None},
            "meta": {"url": "http://example.invalid/meta_Toy.json.gz",
                     "sha256": sha(server.files["/mirror/meta_Toy.json.gz"])},
        },
        "k_core": 2,
        "images": True,
        "download": {"timeout_s": 2.0, "retries": 1, "backoff_s": 0.0, "image_workers": 4},
    }


def test_amazon_dataset_through_a_mirror_end_to_end(server, tmp_path, capsys):
    cfg = _amazon_fixture(server)
    raw = tmp_path / "raw" / "toy"
    download("toy", cfg, raw)
    record = json.loads((raw / "checksums.json").read_text())
    assert record["sources"]["reviews"]["sha256"] == sha(server.files["/mirror/reviews_Toy_5.json.gz"])
    assert record["images"] == {"requested": 5, "failed": 1}
    assert "no sha256 pinned; computed" in capsys.readouterr().err
    assert not (tmp_path / "raw" / "toy.partial").exists()

    split = {"valid_ratio": 0.25, "test_ratio": 0.25, "history_ratio": 0.8, "min_sequence_length": 3}
    stats = preprocess("toy", cfg, {**split, "seed": 0}, raw, tmp_path / "data")
    assert (stats["users"], stats["items"], stats["interactions"]) == (12, 6, 48)
    items = pd.read_parquet(tmp_path / "data" / "items.parquet").set_index("original_id")
    assert items.loc["B000", "image"] == "images/B000.jpg" and (raw / "images/B000.jpg").is_file()
    assert items.loc["B004", "image"] == "" and items.loc["B005", "image"] == ""  # failed / no URL: masked
    assert items.loc["B001", "title"] == "Toy number 1"
    assert items.loc["B001", "description"] == "Brand: Acme. It's a toy."
    assert items.loc["B001", "categories"] == "Baby > Toys"

    before = len(server.requests)
    download("toy", cfg, raw)  # rerun: everything present and valid is reused
    assert [r[0] for r in server.requests[before:]] == ["/images/B004.jpg"]  # only the failed image is tried again


def test_failed_download_leaves_no_raw_folder_and_resumes(server, tmp_path):
    cfg = _amazon_fixture(server)
    meta = server.files.pop("/mirror/meta_Toy.json.gz")
    raw = tmp_path / "raw" / "toy"
    with pytest.raises(DownloadError, match="meta_Toy.json.gz: HTTP 404"):
        download("toy", cfg, raw)
    assert not raw.exists() and (tmp_path / "raw" / "toy.partial" / "reviews_Toy_5.json.gz").exists()
    server.files["/mirror/meta_Toy.json.gz"] = meta
    download("toy", cfg, raw)
    assert len(server.hits("/mirror/reviews_Toy_5.json.gz")) == 1  # kept from the failed run
    assert (raw / "meta_Toy.json.gz").read_bytes() == meta
