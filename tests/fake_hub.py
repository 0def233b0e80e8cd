"""A small Hugging Face Hub on 127.0.0.1, speaking the endpoints huggingface_hub calls
to download (`hf_hub_download`) and to publish (`create_repo`, `upload_folder`):

    POST /api/repos/create                         {"name", "organization"|..., "type"}
    POST /api/validate-yaml                        README.md metadata check
    POST /api/models/<org>/<repo>/preupload/<rev>  upload modes: every file "regular"
    POST /api/models/<org>/<repo>/commit/<rev>     ndjson: header, then base64 files
    GET  /api/models/<org>/<repo>[/revision/<rev>] repository info (sha, siblings)
    HEAD/GET /<org>/<repo>/resolve/<rev>/<file>    X-Repo-Commit, ETag, Content-Length; Range

Repositories live in memory: each commit is a full {path: bytes} snapshot, `main`
names the newest. `log` records (method, path); `tamper(repo, file)` flips a byte of
the file a revision serves without a new commit, as a corrupted mirror would.
"""
import base64
import hashlib
import http.server
import json
import re
import threading
from urllib.parse import unquote, urlparse


class FakeHub(http.server.ThreadingHTTPServer):
    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos: dict[str, dict] = {}  # repo_id -> {"commits": {sha: files}, "main": sha}
        self.log: list[tuple[str, str]] = []
        self.refused: dict[str, int] = {}  # repo id -> the status its files answer (401, 403)
        self.endpoint = f"http://127.0.0.1:{self.server_port}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self):
        self.shutdown()
        self.server_close()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo["commits"][repo["main"] if revision == "main" else revision]

    def tamper(self, repo_id: str, filename: str) -> None:
        files = self.files(repo_id)
        data = bytearray(files[filename])
        data[-1] ^= 0xFF
        files[filename] = bytes(data)

    def commit(self, repo_id: str, files: dict[str, bytes]) -> str:
        repo = self.repos[repo_id]
        snapshot = {**(repo["commits"][repo["main"]] if repo["main"] else {}), **files}
        sha = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in snapshot.items()))
                           .encode() + str(len(repo["commits"])).encode()).hexdigest()
        repo["commits"][sha] = snapshot
        repo["main"] = sha
        return sha


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status, message, code=None):
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        hub, path = self.server, unquote(urlparse(self.path).path)
        hub.log.append((self.command, path))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", path):
            return self._info(m[1], m[2] or "main")
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._resolve(m[1], m[2], m[3])
        self._error(404, f"no route {path}")

    def _info(self, repo_id, revision):
        try:
            files = self.server.files(repo_id, revision)
        except KeyError:
            return self._error(404, "Repository not found", "RepoNotFound")
        sha = self.server.repos[repo_id]["main"] if revision == "main" else revision
        self._json({"id": repo_id, "sha": sha, "private": False,
                    "siblings": [{"rfilename": f} for f in sorted(files)]})

    def _resolve(self, repo_id, revision, filename):
        if repo_id in self.server.refused:
            return self._error(self.server.refused[repo_id], "Access to this repository is restricted")
        if repo_id not in self.server.repos:
            return self._error(404, "Repository not found", "RepoNotFound")
        try:
            files = self.server.files(repo_id, revision)
        except KeyError:
            return self._error(404, "Invalid rev id", "RevisionNotFound")
        if filename not in files:
            return self._error(404, "Entry not found", "EntryNotFound")
        data = files[filename]
        sha = self.server.repos[repo_id]["main"] if revision == "main" else revision
        start = 0
        rng = self.headers.get("Range")
        if rng and (m := re.fullmatch(r"bytes=(\d+)-", rng)) and self.command == "GET":
            start = int(m[1])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("X-Repo-Commit", sha)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data[start:])

    def do_POST(self):
        hub, path = self.server, unquote(urlparse(self.path).path)
        hub.log.append(("POST", path))
        body = self._body()
        if path == "/api/repos/create":
            req = json.loads(body)
            repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            if repo_id in hub.repos:
                return self._error(409, "You already created this model repo")
            hub.repos[repo_id] = {"commits": {}, "main": None}
            return self._json({"url": f"{hub.endpoint}/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":
            return self._json({"errors": [], "warnings": []})
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/(.+)", path):
            files = json.loads(body)["files"]
            return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                         for f in files]})
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/(.+)", path):
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            files = {ln["value"]["path"]: base64.b64decode(ln["value"]["content"])
                     for ln in lines if ln["key"] == "file"}
            sha = hub.commit(m[1], files)
            return self._json({"commitUrl": f"{hub.endpoint}/{m[1]}/commit/{sha}", "commitOid": sha})
        self._error(404, f"no route {path}")
