"""Caches made by the real torch and Keras download functions, over loopback only.

Marked ``integration``: they need ``pip install -e ".[test,integration]"`` (torch 2.13.0 CPU
and Keras 3 on the torch backend). Outside CI they are skipped when those are missing; in CI
(``CI=true``) a missing library is a failure, so they can never silently not run.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib
import io
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from types import ModuleType

import pytest

from hfcache.caches import keras as keras_kind
from hfcache.caches import torch as torch_kind
from hfcache.caches.scan import scan_caches

pytestmark = pytest.mark.integration
os.environ.setdefault("KERAS_BACKEND", "torch")


def need(module: str) -> ModuleType:
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


class Files(http.server.ThreadingHTTPServer):
    """A loopback file server; paths in ``stall`` send half their bytes, then wait for ``release``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.stall: set[str] = set()
        self.stalled = threading.Event()
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Files
    disable_nagle_algorithm = True  # the body, a second write, never waits for the client's delayed ACK

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.path in self.server.stall:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.server.stalled.set()
            self.server.release.wait(30)
            self.wfile.write(data[len(data) // 2 :])
        else:
            self.wfile.write(data)


@pytest.fixture
def files() -> Iterator[Files]:
    server = Files()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)  # a quick shutdown()
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def checkpoint_bytes(torch: ModuleType, n: int) -> tuple[bytes, str]:
    buf = io.BytesIO()
    torch.save({"w": torch.full((n,), float(n))}, buf)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()[:8]


def test_torch_checkpoints_and_an_unfinished_download(files, tmp_path):
    torch = need("torch")
    root = str(tmp_path / "torch" / "hub")
    model_dir = os.path.join(root, "checkpoints")
    names = []
    for n in (10, 2000):
        data, prefix = checkpoint_bytes(torch, n)
        name = f"resnet18-{prefix}.pth" if n == 10 else f"resnet18_v1.5-{prefix}.pth"
        files.files[f"/{name}"] = data
        names.append(name)
        state = torch.hub.load_state_dict_from_url(f"{files.url}/{name}", model_dir=model_dir, progress=False, check_hash=True)
        assert state["w"].shape == (n,)
    big = b"z" * 300_000
    files.files["/vgg16-397923af.pth"] = big
    files.stall.add("/vgg16-397923af.pth")
    worker = threading.Thread(
        target=torch.hub.download_url_to_file,
        args=(f"{files.url}/vgg16-397923af.pth", os.path.join(model_dir, "vgg16-397923af.pth")),
        kwargs={"progress": False},
    )
    worker.start()
    try:
        assert files.stalled.wait(30)
        # The server has sent half the bytes; wait until torch has written some of them.
        deadline = time.monotonic() + 30
        while not any(n.endswith(".partial") and os.path.getsize(os.path.join(model_dir, n)) for n in os.listdir(model_dir)):
            assert time.monotonic() < deadline, "torch never wrote its .partial file"
            time.sleep(0.05)
        cache = scan_caches([root], kinds=["torch"]).caches[0]
    finally:
        files.release.set()
        worker.join(30)

    found = {i.id: i for i in cache.items}
    assert set(found) == {"resnet18", "resnet18_v1.5"}
    for name in names:
        stem, prefix = name.rsplit("-", 1)
        rev = found[stem].revisions[0]
        assert rev.revision == prefix.removesuffix(".pth")
        assert rev.size_bytes == os.stat(os.path.join(model_dir, name)).st_size
    assert found["resnet18_v1.5"].revisions[0].version == "1.5"
    assert cache.size_bytes == sum(os.stat(os.path.join(model_dir, n)).st_size for n in names)
    (partial,) = cache.partial_files
    assert partial.item_id == "vgg16" and partial.path.endswith(".partial") and 0 < partial.size_bytes < len(big)
    assert partial.scheme == "temporary" and partial.lock_held is None  # torch takes no locks

    # Once finished, torch moved the partial into place: a third item, no partial left.
    after = scan_caches([root], kinds=["torch"]).caches[0]
    assert after.partial_files == () and {i.id for i in after.items} == {"resnet18", "resnet18_v1.5", "vgg16"}
    assert {i.id: i for i in after.items}["vgg16"].size_bytes == len(big)


@pytest.mark.parametrize(
    "env",
    [{}, {"TORCH_HOME": "{tmp}/th"}, {"XDG_CACHE_HOME": "{tmp}/xdg"}, {"TORCH_HOME": "~/t", "XDG_CACHE_HOME": "{tmp}/xdg"}],
)
def test_torch_default_root_is_torch_hub_get_dir(tmp_path, isolated_home, env):
    need("torch")
    full = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    run_env = {k: v for k, v in os.environ.items() if k not in ("TORCH_HOME", "XDG_CACHE_HOME")}
    run_env.update(full, HOME=isolated_home)
    theirs = subprocess.run(
        [sys.executable, "-c", "import torch.hub; print(torch.hub.get_dir())"],
        capture_output=True,
        text=True,
        env=run_env,
        check=True,
    )
    assert torch_kind.default_root({"HOME": isolated_home, **full}) == os.path.abspath(theirs.stdout.strip())


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_keras_get_file_models_datasets_and_archives(files, tmp_path):
    keras = need("keras")
    root = str(tmp_path / "keras")
    os.makedirs(root)  # get_file falls back to /tmp/.keras when its cache_dir is not writable
    files.files["/mnist.npz"] = b"n" * 5000
    files.files["/w_no_top.h5"] = b"h" * 700
    files.files["/w_no_top_v2.h5"] = b"h" * 800
    files.files["/foo.tar.gz"] = tar_gz({"foo/a.txt": b"a" * 3000})
    files.files["/flower_photos.tgz"] = tar_gz({"flower_photos/daisy.jpg": b"d" * 4000})
    get = keras.utils.get_file
    get(origin=f"{files.url}/mnist.npz", cache_dir=root)
    get(origin=f"{files.url}/w_no_top.h5", cache_dir=root, cache_subdir="models")
    sha = hashlib.sha256(files.files["/w_no_top_v2.h5"]).hexdigest()
    get(origin=f"{files.url}/w_no_top_v2.h5", cache_dir=root, cache_subdir="models", file_hash=sha)
    get("foo.tar.gz", origin=f"{files.url}/foo.tar.gz", cache_dir=root, extract=True)
    get(origin=f"{files.url}/flower_photos.tgz", cache_dir=root, extract=True)

    cache = scan_caches([root], kinds=["keras"]).caches[0]
    found = {i.id: i for i in cache.items}
    d = os.path.join(root, "datasets")
    assert set(found) == {"mnist.npz", "w_no_top.h5", "foo.tar.gz", "flower_photos.tgz"}
    assert [r.version for r in found["w_no_top.h5"].revisions] == ["2", None]
    assert found["foo.tar.gz"].revisions[0].unit_paths == (os.path.join(d, "foo.tar.gz"), os.path.join(d, "foo_extracted"))
    flowers = found["flower_photos.tgz"].revisions[0]
    assert flowers.unit_paths == (os.path.join(d, "flower_photos.tgz_archive"), os.path.join(d, "flower_photos.tgz"))
    assert found["foo.tar.gz"].size_bytes == len(files.files["/foo.tar.gz"]) + 3000
    assert flowers.size_bytes == len(files.files["/flower_photos.tgz"]) + 4000
    on_disk = 0
    for folder, _, names in os.walk(root):
        on_disk += sum(os.lstat(os.path.join(folder, n)).st_size for n in names)
    assert cache.size_bytes == on_disk
    assert all(i.deletable for i in cache.items)


def test_keras_default_root_is_keras_home_and_keras_json_is_never_an_item(tmp_path, isolated_home):
    need("keras")
    home = str(tmp_path / "kh")
    run_env = dict(os.environ, HOME=isolated_home, KERAS_HOME=home, KERAS_BACKEND="torch")
    code = "from keras.src.backend.config import keras_home; print(keras_home())"
    theirs = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=run_env, check=True)
    assert keras_kind.default_root({"HOME": isolated_home, "KERAS_HOME": home}) == theirs.stdout.strip().splitlines()[-1]
    assert os.path.isfile(os.path.join(home, "keras.json"))  # Keras wrote its config on import
    cache = scan_caches([home], kinds=["keras"]).caches[0]
    assert cache.items == () and os.path.join(home, "keras.json") in cache.protected
    del run_env["KERAS_HOME"]
    theirs = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=run_env, check=True)
    assert keras_kind.default_root({"HOME": isolated_home}) == os.path.expanduser(theirs.stdout.strip().splitlines()[-1])


def _age(root: str, days: float) -> None:
    old = time.time() - days * 86400
    for folder, _, names in os.walk(root):
        for name in (*names, "."):
            os.utime(os.path.join(folder, name), (old, old), follow_symlinks=False)


def test_torch_and_keras_downloads_archived_then_restored_load_without_the_network(files, tmp_path):
    """Issue 21, point 5: plain-file units (a checkpoint, a Keras file and an extracted archive) leave by an archive and
    come back as their library finds them: the same call returns the same data with the server gone."""
    from tests.support import cli

    torch, keras = need("torch"), need("keras")
    troot, kroot, dest = str(tmp_path / "torch" / "hub"), str(tmp_path / "keras"), str(tmp_path / "archive")
    data, prefix = checkpoint_bytes(torch, 50)
    files.files[f"/resnet18-{prefix}.pth"] = data
    url = f"{files.url}/resnet18-{prefix}.pth"
    model_dir = os.path.join(troot, "checkpoints")
    torch.hub.load_state_dict_from_url(url, model_dir=model_dir, progress=False, check_hash=True)
    os.makedirs(kroot)
    files.files["/w.h5"] = b"h" * 900
    files.files["/foo.tar.gz"] = tar_gz({"foo/a.txt": b"a" * 3000})
    keras.utils.get_file(origin=f"{files.url}/w.h5", cache_dir=kroot, cache_subdir="models")
    keras.utils.get_file("foo.tar.gz", origin=f"{files.url}/foo.tar.gz", cache_dir=kroot, extract=True)
    before = {r: _tree(r) for r in (troot, kroot)}
    _age(troot, 90)
    _age(kroot, 90)
    for root, kind in ((troot, "torch"), (kroot, "keras")):
        code, plan = cli(
            "prune", "--cache-dir", root, "--kind", kind, "--max-age", "30d", "--archive-to", dest, "--yes", "--json"
        )
        assert code == 0, plan
        assert [u["status"] for u in plan["delete"] if u["what"] == "revision"] and all(
            u["status"] == "deleted" for u in plan["delete"]
        )
    assert not os.listdir(model_dir)
    files.files.clear()  # the network is gone: only the archive can bring them back
    code, listing = cli("archive", "ls", dest, "--json")
    assert code == 0 and {u["kind"] for u in listing["units"]} == {"torch", "keras"}
    for root, kind in ((troot, "torch"), (kroot, "keras")):
        ids = sorted({u["id"] for u in listing["units"] if u["kind"] == kind})
        code, out = cli("restore", dest, *ids, "--cache-dir", root, "--json")
        assert code == 0, out
        assert _tree(root) == before[root], kind
    state = torch.hub.load_state_dict_from_url(url, model_dir=model_dir, progress=False, check_hash=True)
    assert state["w"].shape == (50,)
    assert (
        open(keras.utils.get_file(origin=f"{files.url}/w.h5", cache_dir=kroot, cache_subdir="models"), "rb").read() == b"h" * 900
    )


def _tree(root: str) -> dict[str, bytes]:
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith("prune.lock"):  # hfcache's own lock, left by the prune
                continue
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def test_sync_fetches_a_torch_checkpoint_with_torch_and_keeps_it(files, tmp_path):
    """Issue 22, point 4: a manifest entry of kind torch, fetched by torch.hub.download_url_to_file (its hash prefix
    checked), kept from an aggressive policy; the second run fetches nothing."""
    from tests.support import cli

    torch = need("torch")
    troot = str(tmp_path / "torch" / "hub")
    data, prefix = checkpoint_bytes(torch, 30)
    files.files[f"/resnet18-{prefix}.pth"] = data
    manifest = tmp_path / "node.yaml"
    manifest.write_text(f"version: 1\nmodels:\n  - kind: torch\n    url: {files.url}/resnet18-{prefix}.pth\n")
    code, doc = cli("sync", str(manifest), "--cache-dir", troot, "--json")
    assert code == 0, doc
    (entry,) = doc["entries"]
    assert entry["status"] == "fetched" and entry["id"] == "resnet18" and entry["resolved"] == prefix
    assert open(entry["path"], "rb").read() == data
    code, again = cli("sync", str(manifest), "--cache-dir", troot, "--json")
    assert again["entries"][0]["status"] == "present"
    _age(troot, 90)
    code, plan = cli("prune", "--cache-dir", troot, "--kind", "torch", "--max-age", "1d", "--dry-run", "--json")
    assert code == 0 and plan["delete"] == [], plan
    files.files[f"/resnet18_v2-{'0' * 8}.pth"] = data  # a wrong hash prefix in the name: torch refuses the download
    manifest.write_text(f"version: 1\nmodels:\n  - kind: torch\n    url: {files.url}/resnet18_v2-{'0' * 8}.pth\n")
    code, doc = cli("sync", str(manifest), "--cache-dir", troot, "--json")
    assert code == 1 and doc["entries"][0]["status"] == "failed"
    assert not os.path.exists(os.path.join(troot, "checkpoints", f"resnet18_v2-{'0' * 8}.pth"))


def test_sync_fetches_a_keras_file_with_keras_and_keeps_it(files, tmp_path):
    """Issue 22, point 4: a manifest entry of kind keras, fetched by keras.utils.get_file (a sha256 checked), kept."""
    from tests.support import cli

    need("keras")
    kroot = str(tmp_path / "keras")
    os.makedirs(kroot)
    files.files["/w_no_top.h5"] = b"h" * 900
    sha = hashlib.sha256(files.files["/w_no_top.h5"]).hexdigest()
    manifest = tmp_path / "node.yaml"
    manifest.write_text(f"version: 1\nmodels:\n  - kind: keras\n    url: {files.url}/w_no_top.h5\n    revision: '{sha}'\n")
    code, doc = cli("sync", str(manifest), "--cache-dir", kroot, "--json")
    assert code == 0, doc
    (entry,) = doc["entries"]
    assert entry["status"] == "fetched" and open(entry["path"], "rb").read() == b"h" * 900
    assert entry["path"] == os.path.join(kroot, "models", "w_no_top.h5")
    assert cli("sync", str(manifest), "--cache-dir", kroot, "--json")[1]["entries"][0]["status"] == "present"
    _age(kroot, 90)
    code, plan = cli("prune", "--cache-dir", kroot, "--kind", "keras", "--max-age", "1d", "--dry-run", "--json")
    assert code == 0 and plan["delete"] == [], plan
