"""`triage data fetch` against a local HTTP server (127.0.0.1, a thread): resume, truncation, corruption."""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ticket_triage.cli import main
from ticket_triage.data.fetch import fetch_cfpb
from ticket_triage.errors import DataError


def make_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # stored: big enough to cut in the middle
        rows = "\n".join(
            f'2020-01-01,Mortgage,"my servicer lost payment {i} and charged a fee",{i}' for i in range(3000)
        )
        z.writestr("complaints.csv", "Date received,Product,Consumer complaint narrative,Complaint ID\n" + rows + "\n")
    return buf.getvalue()


PAYLOAD = make_zip()


class Server:
    """Serves `payload` at /complaints.csv.zip; `mode` picks a misbehaviour."""

    def __init__(self):
        self.payload = PAYLOAD
        self.mode = "ok"  # ok | truncate | norange
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                data = outer.payload
                rng = self.headers.get("Range")
                outer.requests.append({"path": self.path, "range": rng})
                if self.path != "/complaints.csv.zip":
                    self.send_error(404)
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and outer.mode != "norange":
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if outer.mode == "truncate":  # promise everything, send 40%, hang up
                    self.wfile.write(body[: int(len(body) * 0.4)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/complaints.csv.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.close()


def test_download_verifies_and_renames(server, tmp_path):
    out = fetch_cfpb(server.url, tmp_path / "complaints.csv.zip", sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert out.read_bytes() == PAYLOAD
    assert not (tmp_path / "complaints.csv.zip.part").exists()
    assert server.requests[0]["range"] is None


def test_resume_after_truncated_download(server, tmp_path):
    out = tmp_path / "complaints.csv.zip"
    part = tmp_path / "complaints.csv.zip.part"
    server.mode = "truncate"
    with pytest.raises(DataError, match="interrupted|incomplete"):
        fetch_cfpb(server.url, out, timeout=10)
    assert not out.exists()
    have = part.stat().st_size
    assert 0 < have < len(PAYLOAD)
    assert part.read_bytes() == PAYLOAD[:have]
    server.mode = "ok"
    fetch_cfpb(server.url, out, timeout=10)
    assert server.requests[-1]["range"] == f"bytes={have}-"  # asked only for the rest
    assert out.read_bytes() == PAYLOAD
    assert not part.exists()


def test_resume_via_cli_with_progress(server, tmp_path, capsys):
    out = tmp_path / "c.zip"
    (tmp_path / "c.zip.part").write_bytes(PAYLOAD[:1000])
    with pytest.raises(SystemExit) as exc:
        main(["data", "fetch", "--url", server.url, "--out", str(out)])
    assert exc.value.code == 0
    assert server.requests[-1]["range"] == "bytes=1000-"
    assert out.read_bytes() == PAYLOAD
    assert "saved" in capsys.readouterr().out


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    out = tmp_path / "complaints.csv.zip"
    (tmp_path / "complaints.csv.zip.part").write_bytes(b"stale bytes from elsewhere")
    server.mode = "norange"
    fetch_cfpb(server.url, out)
    assert out.read_bytes() == PAYLOAD


def test_complete_part_file_answered_416(server, tmp_path):
    out = tmp_path / "complaints.csv.zip"
    (tmp_path / "complaints.csv.zip.part").write_bytes(PAYLOAD)
    fetch_cfpb(server.url, out)
    assert out.read_bytes() == PAYLOAD


def test_corrupt_download_is_rejected(server, tmp_path, capsys):
    server.payload = b"this is not a zip archive at all" * 100
    out = tmp_path / "complaints.csv.zip"
    with pytest.raises(SystemExit) as exc:
        main(["data", "fetch", "--url", server.url, "--out", str(out), "-q"])
    err = " ".join(capsys.readouterr().err.split())
    assert exc.value.code == 1 and "Traceback" not in err
    assert "not a valid zip archive" in err
    assert not out.exists() and not (tmp_path / "complaints.csv.zip.part").exists()


def test_sha256_mismatch(server, tmp_path):
    with pytest.raises(DataError, match="sha256"):
        fetch_cfpb(server.url, tmp_path / "complaints.csv.zip", sha256="0" * 64)
    assert not (tmp_path / "complaints.csv.zip").exists()


def test_http_error_and_unreachable(server, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        fetch_cfpb(server.url.replace("complaints", "nothing"), tmp_path / "x.zip")
    server.close()
    with pytest.raises(DataError, match="cannot reach"):
        fetch_cfpb(server.url, tmp_path / "y.zip", timeout=2)
    server.close = lambda: None  # already closed


def test_fetched_file_prepares(server, tmp_path):
    from ticket_triage.data import DataConfig, prepare_dataset

    out = fetch_cfpb(server.url, tmp_path / "complaints.csv.zip")
    m = prepare_dataset(DataConfig(input=out, out_dir=tmp_path / "prep")).manifest
    assert m["input"]["format"] == "csv.zip" and m["counts"]["kept"] == 3000
    assert m["input"]["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
