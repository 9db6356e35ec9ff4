"""A small HTTP server on 127.0.0.1 that speaks the part of the Hugging Face Hub's protocol model downloads
use (repository info, file metadata and ranged file reads), serving one folder as one model repository,
and the part uploads use (create a repository, ask the upload mode, commit files sent inline).

Run as: python tests/model/hub_server.py FOLDER REPO_ID URL_FILE [--cut-after BYTES]   (or `serve()` in-process)
It writes its URL to URL_FILE. `--cut-after` drops the connection of the first full read of the largest
file after that many bytes, so a client has to resume the download with a Range request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

SHA = "0123456789abcdef0123456789abcdef01234567"


class Repo:
    def __init__(self, folder: Path, repo_id: str, cut_after: int | None, kind: str = "model"):
        self.folder = folder
        self.repo_id = repo_id
        self.kind = kind  # "model" or "dataset"
        self.refresh()
        self.largest = max(self.files, key=lambda f: (folder / f).stat().st_size, default=None)
        self.cut_after = cut_after
        self.log: list[str] = []
        self.lock = threading.Lock()

    def refresh(self) -> None:
        self.files = sorted(
            p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*") if p.is_file()
        )

    def etag(self, name: str) -> str:
        return hashlib.sha256((self.folder / name).read_bytes()).hexdigest()


def handler_for(repo: Repo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _json(self, value: object, status: int = 200) -> None:
            body = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _missing(self, code: str) -> None:
            body = json.dumps({"error": code}).encode()
            self.send_response(404)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802
            self._file(head=True)

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?")[0]
            prefix = f"/api/{repo.kind}s/{repo.repo_id}"
            if path in (prefix, f"{prefix}/revision/main", f"{prefix}/revision/{SHA}"):
                siblings = [{"rfilename": f} for f in repo.files]
                self._json({"id": repo.repo_id, "sha": SHA, "siblings": siblings, "private": False})
            elif path.startswith((f"{prefix}/tree/main", f"{prefix}/tree/{SHA}")):
                under = path.split("/tree/", 1)[1].partition("/")[2]
                self._json(self._listing(under, recursive="recursive=true" in self.path.lower()))
            elif path.startswith("/api/"):
                with repo.lock:
                    repo.log.append(f"unhandled GET {self.path}")
                self._missing("RepoNotFound")
            else:
                self._file(head=False)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if not size:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()

        def _upload(self, path: str, body: bytes) -> bool:
            """Uploads: every file is asked to come inline (no LFS), commits write into the folder."""
            prefix = f"/api/{repo.kind}s/{repo.repo_id}"
            with repo.lock:
                repo.log.append(f"POST {path} auth={self.headers.get('Authorization', '')}")
            if path == "/api/repos/create":
                self._json({"url": f"http://{self.headers['Host']}/{repo.repo_id}", "name": repo.repo_id})
            elif path == "/api/validate-yaml":
                self._json({"errors": [], "warnings": []})
            elif path.startswith(f"{prefix}/preupload/"):
                files = json.loads(body)["files"]
                self._json(
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                        ]
                    }
                )
            elif path.startswith(f"{prefix}/commit/"):
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        target = repo.folder / item["value"]["path"]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(base64.b64decode(item["value"]["content"]))
                with repo.lock:
                    repo.refresh()
                url = f"http://{self.headers['Host']}/{repo.repo_id}/commit/{SHA}"
                self._json({"commitUrl": url, "commitOid": SHA, "success": True, "pullRequestUrl": None})
            else:
                return False
            return True

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?")[0]
            raw = self._body()
            if self._upload(path, raw):
                return
            body = raw.decode()
            if not path.startswith(f"/api/{repo.kind}s/{repo.repo_id}/paths-info/"):
                with repo.lock:
                    repo.log.append(f"unhandled POST {self.path}")
                return self._missing("RepoNotFound")
            asked = (
                json.loads(body).get("paths", []) if body.startswith("{") else parse_qs(body).get("paths", [])
            )
            out: list[dict[str, object]] = []
            for name in asked:
                if name in repo.files:
                    out.append(self._entry(name))
                elif any(f.startswith(name.rstrip("/") + "/") for f in repo.files):
                    out.append({"type": "directory", "path": name.rstrip("/"), "oid": SHA})
            self._json(out)

        def _listing(self, under: str, recursive: bool) -> list[dict[str, object]]:
            under = under.strip("/")
            out, dirs = [], set()
            for name in repo.files:
                if under and not name.startswith(under + "/"):
                    continue
                rest = name[len(under) + 1 :] if under else name
                if "/" in rest and not recursive:
                    dirs.add((under + "/" if under else "") + rest.split("/")[0])
                    continue
                out.append(self._entry(name))
                if recursive:
                    parts = name.split("/")[:-1]
                    dirs.update("/".join(parts[: k + 1]) for k in range(len(parts)))
            return [{"type": "directory", "path": d, "oid": SHA} for d in sorted(dirs)] + out

        def _entry(self, name: str) -> dict[str, object]:
            size = (repo.folder / name).stat().st_size
            entry: dict[str, object] = {
                "type": "file",
                "path": name,
                "size": size,
                "oid": repo.etag(name)[:40],
            }
            if name.endswith(".safetensors"):
                entry["lfs"] = {"oid": repo.etag(name), "size": size, "pointerSize": 134}
            return entry

        def _file(self, head: bool) -> None:
            parts = self.path.split("?")[0].lstrip("/").split("/")
            if repo.kind == "dataset" and parts[:1] == ["datasets"]:
                parts = parts[1:]
            # /{org}/{name}/resolve/{revision}/{filename...}
            if len(parts) < 5 or "/".join(parts[:2]) != repo.repo_id or parts[2] != "resolve":
                return self._missing("RepoNotFound")
            name = "/".join(parts[4:])
            if name not in repo.files:
                return self._missing("EntryNotFound")
            data = (repo.folder / name).read_bytes()
            start = 0
            ranged = self.headers.get("Range")
            if ranged and ranged.startswith("bytes="):
                start = int(ranged[len("bytes=") :].split("-")[0] or 0)
            with repo.lock:
                repo.log.append(f"{'HEAD' if head else 'GET'} {name} from {start}")
            self.send_response(206 if start else 200)
            self.send_header("ETag", f'"{repo.etag(name)}"')
            self.send_header("X-Repo-Commit", SHA)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if head:
                return
            body = data[start:]
            with repo.lock:
                cut = repo.cut_after if (name == repo.largest and not start) else None
                if cut is not None:
                    repo.cut_after = None  # only the first read is cut
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

    return Handler


def serve(
    folder: Path, repo_id: str, cut_after: int | None = None, kind: str = "model"
) -> tuple[ThreadingHTTPServer, Repo, str]:
    """Start serving in a daemon thread: (server, repo with its request log, endpoint URL)."""
    repo = Repo(folder, repo_id, cut_after, kind)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(repo))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, repo, f"http://127.0.0.1:{server.server_address[1]}"


def main(argv: list[str]) -> None:
    folder, repo_id, port_file = Path(argv[0]), argv[1], Path(argv[2])
    cut = int(argv[argv.index("--cut-after") + 1]) if "--cut-after" in argv else None
    server, _, url = serve(folder, repo_id, cut)
    port_file.write_text(url)
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
