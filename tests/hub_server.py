"""A stand-in Hugging Face hub on 127.0.0.1: files in the hub's URL layout, for download tests without the internet.

Serves ``HEAD``/``GET {endpoint}/{repo}/resolve/{revision}/{path}`` with the headers huggingface_hub reads
(``X-Repo-Commit``, ``ETag``, ``Content-Length``, ``X-Error-Code`` on errors), byte ranges (resumed downloads) and
``GET /api/models/{repo}/tree/{revision}`` (file listings). Faults can be injected per file: an HTTP status, or a
transfer cut after some bytes. Every request is logged.

Run by hand (e.g. for ComfyUI with ``HF_ENDPOINT=http://127.0.0.1:8765``), serving the reference fixtures under the
official repo names::

    python tests/hub_server.py --fixtures ../shared/fixtures/reference --port 8765
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fixture_repos(reference_dir: str | Path) -> dict[str, dict[str, Path]]:
    """The tiny reference models under the official repo names (what the releases fetch)."""
    ref = Path(reference_dir)
    q, i = ref / "qwen25vl", ref / "internvl3"
    folder = lambda d: {p.name: p for p in sorted(d.iterdir()) if p.is_file()}  # noqa: E731
    return {
        "hustvl/vgt_qwen25vl_2B_sft": {"iter_5000.pth": q / "ar" / "iter_5000.pth"},
        "hustvl/vgt_qwen25vl_2B_pretrain": {"iter_40000.pth": q / "ar" / "iter_5000.pth", "README.md": ref / "README.md"},
        "hustvl/vgt_internvl3_1_6B_sft": {"iter_5000.pth": i / "ar" / "iter_5000.pth"},
        "hustvl/vgt_internvl3_1_6B_pretrain": {"iter_40000.pth": i / "ar" / "iter_5000.pth"},
        "hustvl/vgt_ae": {"vgt_ae_qwen25vl.pth": q / "ae" / "vgt_ae_qwen25vl.pth",
                          "vgt_ae_internvl3.pth": i / "ae" / "vgt_ae_internvl3.pth"},
        "Qwen/Qwen2.5-VL-3B-Instruct": folder(q / "base" / "Qwen2.5-VL-3B-Instruct-tiny"),
        "OpenGVLab/InternVL3-2B": folder(i / "base" / "InternVL3-2B-tiny"),
        "OpenGVLab/InternVL3-1B": folder(i / "base" / "InternVL3-1B-tiny"),
        # The tiny fixtures use a tiny DC-AE; the real repo holds the f32c32 config.
        "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers": folder(q / "base" / "dc-ae-f32c32-sana-1.1-diffusers-tiny"),
    }


class StandInHub:
    """``with StandInHub(repos) as hub: ... hub.endpoint ...``; ``hub.faults[(repo, path)] = 500`` or ``("cut", n)``
    (the first GET sends n bytes then drops the connection); ``hub.log``: (method, repo, path, range)."""

    def __init__(self, repos: dict[str, dict[str, Path]], host: str = "127.0.0.1", port: int = 0):
        self.repos = repos
        self.faults: dict[tuple[str, str], object] = {}
        self.log: list[tuple[str, str, str, str | None]] = []
        self.bytes_sent = 0
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> StandInHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def requests(self, method: str | None = None) -> list[tuple[str, str, str, str | None]]:
        return [r for r in self.log if method is None or r[0] == method]

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _error(self, status: int, code: str | None = None, body: bool = True):
                payload = json.dumps({"error": code or f"error {status}"}).encode()
                self.send_response(status)
                if code:
                    self.send_header("X-Error-Code", code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def _serve(self, body: bool):
                path = unquote(urlparse(self.path).path)
                tree = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
                if tree:
                    return self._tree(tree.group(1), body)
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if not m:
                    return self._error(404, "RepoNotFound", body)
                repo, _rev, name = m.groups()
                hub.log.append((self.command, repo, name, self.headers.get("Range")))
                fault = hub.faults.get((repo, name))
                if isinstance(fault, int):
                    return self._error(fault, None, body)
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound", body)
                file = hub.repos[repo].get(name)
                if file is None:
                    return self._error(404, "EntryNotFound", body)
                data = Path(file).read_bytes()
                start = 0
                rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if rng and body:
                    start = int(rng.group(1))
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if not body:
                    return
                if isinstance(fault, tuple) and fault[0] == "cut":
                    hub.faults.pop((repo, name))  # only the first transfer is cut
                    self.wfile.write(data[start : start + fault[1]])
                    self.wfile.flush()
                    hub.bytes_sent += fault[1]
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])
                hub.bytes_sent += len(data) - start

            def _tree(self, repo: str, body: bool):
                hub.log.append((self.command, repo, "<tree>", None))
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound", body)
                items = [{"type": "file", "path": n, "size": Path(p).stat().st_size,
                          "oid": hashlib.sha1(n.encode()).hexdigest()} for n, p in hub.repos[repo].items()]
                payload = json.dumps(items).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if body:
                    self.wfile.write(payload)

        return Handler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fixtures", required=True, help="the reference fixtures folder")
    p.add_argument("--port", type=int, default=8765)
    args = p.parse_args()
    hub = StandInHub(fixture_repos(args.fixtures), port=args.port)
    print(f"stand-in hub at {hub.endpoint} serving {', '.join(hub.repos)}", flush=True)
    try:
        hub.server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
