"""A tiny stand-in for the Hugging Face Hub, served on 127.0.0.1.

It answers what ``huggingface_hub.hf_hub_download`` asks: ``HEAD`` and ``GET`` on
``/{repo_id}/resolve/{revision}/{path}`` (``/datasets/...``, ``/spaces/...`` for other
repo types), with the headers the real Hub sends (``X-Repo-Commit``, ``ETag``,
``Content-Length``) and ``X-Error-Code`` on 404s. Tests point ``HF_ENDPOINT`` at it so
the real client builds real caches without touching the network.

Repos are mutable while the server runs: ``push`` adds a commit and moves a branch,
``tag`` points a tag at a commit. ``delay`` slows every GET body down (for tests that
need a download in progress).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

_TYPE_PREFIXES = {"datasets": "dataset", "spaces": "space", "kernels": "kernel"}


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a blob: what the Hub sends as ETag for a non-LFS file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def etag_for(data: bytes, lfs: bool) -> str:
    """LFS files are identified by their sha256, regular files by their git blob sha1."""
    return hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    lfs_threshold: int = 1024  # files at least this big are served as LFS (sha256 etag)

    def resolve(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        if revision in self.refs:
            return self.refs[revision]
        matches = [c for c in self.commits if len(revision) >= 7 and c.startswith(revision)]
        return matches[0] if len(matches) == 1 else None


class FakeHub:
    """Holds the repos and runs the HTTP server. Use as a context manager."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.delay = 0.0
        self.cut: set[str] = set()  # file names whose body breaks off half-way (a connection lost mid-download)
        self.requests: list[tuple[str, str]] = []
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None

    # -- repo management -------------------------------------------------
    def push(
        self, repo_id: str, files: dict[str, bytes], *, repo_type: str = "model", branch: str = "main", keep: bool = True
    ) -> str:
        """Add a commit on ``branch``; with ``keep`` the files of the branch's previous commit carry over."""
        repo = self.repos.setdefault((repo_type, repo_id), FakeRepo())
        previous = repo.commits.get(repo.refs.get(branch, ""), {}) if keep else {}
        self._counter += 1
        commit = hashlib.sha1(f"{repo_type}/{repo_id}/{self._counter}".encode()).hexdigest()
        repo.commits[commit] = {**previous, **files}
        repo.refs[branch] = commit
        return commit

    def tag(self, repo_id: str, name: str, commit: str, *, repo_type: str = "model") -> None:
        self.repos[(repo_type, repo_id)].refs[name] = commit

    # -- server ----------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes on a kept-alive connection: with Nagle's
            # algorithm on, the body waited for the client's delayed ACK (40 ms a request).
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                if self.path.startswith("/api/"):
                    self._api()
                    return
                found = hub._lookup(self.path.split("?", 1)[0])
                if isinstance(found, tuple) and found[1] is None:  # the revision exists, the file does not
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Error-Message", "EntryNotFound")
                    self.send_header("X-Repo-Commit", found[0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if isinstance(found, str):
                    self.send_response(404)
                    self.send_header("X-Error-Code", found)
                    self.send_header("X-Error-Message", found)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                commit, data, etag = found
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if not body:
                    return
                if any(self.path.split("?", 1)[0].endswith("/" + name) for name in hub.cut):
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if hub.delay:
                    chunk = max(1, len(data) // 20)
                    for start in range(0, len(data), chunk):
                        self.wfile.write(data[start : start + chunk])
                        self.wfile.flush()
                        time.sleep(hub.delay / 20)
                else:
                    self.wfile.write(data)

            def _api(self) -> None:
                """``repo_info`` and ``list_repo_tree`` (what ``snapshot_download`` asks first), as JSON."""
                found = hub._api(self.path.split("?", 1)[0])
                data = json.dumps(found if not isinstance(found, str) else {"error": found}).encode()
                self.send_response(200 if not isinstance(found, str) else 404)
                if isinstance(found, str):
                    self.send_header("X-Error-Code", found)
                    self.send_header("X-Error-Message", found)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # shutdown() waits for the loop to look again: every 0.5 s by default, at each exit.
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _api(self, path: str) -> object:
        """``/api/{models,datasets,spaces}/{repo_id}/revision/{rev}`` and ``.../tree/{rev}``: the Hub's JSON, or an error code."""
        parts = path[len("/api/") :].split("/")
        repo_type = {"models": "model", "datasets": "dataset", "spaces": "space"}.get(parts[0])
        if repo_type is None or len(parts) < 5 or parts[3] not in ("revision", "tree"):
            return "RepoNotFound"
        repo_id, what, revision = "/".join(parts[1:3]), parts[3], unquote(parts[4])
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            return "RepoNotFound"
        commit = repo.resolve(revision)
        if commit is None:
            return "RevisionNotFound"
        files = repo.commits[commit]
        if what == "revision":
            return {"id": repo_id, "sha": commit, "siblings": [{"rfilename": name} for name in sorted(files)]}
        entries = []
        for name, data in sorted(files.items()):
            entry: dict[str, object] = {"type": "file", "path": name, "size": len(data), "oid": git_blob_sha1(data)}
            if len(data) >= repo.lfs_threshold:
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 130}
            entries.append(entry)
        return entries

    def _lookup(self, path: str) -> tuple[str, bytes | None, str] | str:
        """(commit, data, etag); data None when the commit exists but not the file; an error code otherwise."""
        parts = path.lstrip("/").split("/")
        repo_type = "model"
        if parts and parts[0] in _TYPE_PREFIXES:
            repo_type = _TYPE_PREFIXES[parts.pop(0)]
        if "resolve" not in parts:
            return "RepoNotFound"
        i = parts.index("resolve")
        repo_id = "/".join(parts[:i])
        if i + 2 >= len(parts) + 1 or len(parts) < i + 3:
            return "EntryNotFound"
        revision = unquote(parts[i + 1])
        filename = unquote("/".join(parts[i + 2 :]))
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            return "RepoNotFound"
        commit = repo.resolve(revision)
        if commit is None:
            return "RevisionNotFound"
        data = repo.commits[commit].get(filename)
        if data is None:
            return commit, None, ""
        return commit, data, etag_for(data, lfs=len(data) >= repo.lfs_threshold)
