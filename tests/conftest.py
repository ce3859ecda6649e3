"""Every test runs with HOME and every cache variable pointing into a temporary folder.

The variables are also set when this module is imported, before any test imports
huggingface_hub (which reads them at import time), so nothing ever sees the real home.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

CACHE_VARIABLES = (
    "LLAMA_CACHE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_CACHE",
    "HF_XET_CACHE",
    "HFCACHE_CONFIG",
    "HFCACHE_DEBUG",
    "HFCACHE_STATE",  # (the state database then lies under the test's XDG_STATE_HOME, never the real one)
    "TORCH_HOME",
    "KERAS_HOME",
    "HF_DATASETS_CACHE",
    "KAGGLEHUB_CACHE",
    "PYTORCH_TRANSFORMERS_CACHE",
    "PYTORCH_PRETRAINED_BERT_CACHE",
    "OLLAMA_MODELS",
    "MODELSCOPE_CACHE",
    "MS_CACHE_HOME",
    "MODELSCOPE_HOME",
    "TFHUB_CACHE_DIR",
    "VLLM_CACHE_ROOT",
)
# Where hfcache looks for the Ollama service's store (/usr/share/ollama/.ollama/models):
# pointed into the test's home, so that no test ever reads the real one.
OLLAMA_SERVICE_VARIABLE = "HFCACHE_OLLAMA_SERVICE_ROOT"

_SESSION_HOME = tempfile.mkdtemp(prefix="hfcache-tests-home-")
atexit.register(shutil.rmtree, _SESSION_HOME, True)  # each run made one and left it in /tmp
os.environ["HOME"] = _SESSION_HOME
os.environ["XDG_CACHE_HOME"] = os.path.join(_SESSION_HOME, ".cache")
for _var in CACHE_VARIABLES:
    os.environ.pop(_var, None)
os.environ[OLLAMA_SERVICE_VARIABLE] = os.path.join(_SESSION_HOME, "usr", "share", "ollama", ".ollama", "models")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"  # the loopback hub speaks plain HTTP only
os.environ["HF_HUB_DISABLE_UPDATE_CHECK"] = "1"
os.environ["NO_COLOR"] = "1"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh HOME per test, with the XDG folders under it, no cache variable and no policy file set.

    But one: TF Hub's default cache is the machine's shared ``/tmp/tfhub_modules`` (or under
    ``$TMPDIR``), so ``TFHUB_CACHE_DIR`` points into the test's home. (Not ``TMPDIR`` itself:
    ``tempfile`` remembers the first folder it picks for the rest of the process, and tests
    running as other accounts need their temporary folders where those can reach them.)
    """
    home = str(tmp_path_factory.mktemp("home"))
    monkeypatch.setenv("HOME", home)
    monkeypatch.setenv("XDG_CACHE_HOME", os.path.join(home, ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", os.path.join(home, ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", os.path.join(home, ".local", "state"))
    monkeypatch.delenv("HFCACHE_CONFIG", raising=False)
    # A real /etc/hfcache/config.yaml on the test machine must not change any plan.
    from hfcache.plan import settings as config

    monkeypatch.setattr(config, "SYSTEM_CONFIG", os.path.join(home, "etc", "hfcache", "config.yaml"))
    for var in CACHE_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(OLLAMA_SERVICE_VARIABLE, os.path.join(home, "usr", "share", "ollama", ".ollama", "models"))
    monkeypatch.setenv("TFHUB_CACHE_DIR", os.path.join(home, "tmp", "tfhub_modules"))
    # Keras's fallback is a literal /tmp/.keras: point it into this test's home as well.
    from hfcache.caches import keras

    monkeypatch.setattr(keras, "TMP_FALLBACK", os.path.join(home, "tmp", ".keras"))
    return home


@pytest.fixture
def need_tool():
    """``need_tool("man")``: the command's path, or the test is skipped (failed under ``CI=true``) without it."""
    from tests.support import cannot_run  # (not at the top: huggingface_hub reads the variables above when imported)

    def need(tool: str) -> str:
        path = shutil.which(tool)
        if path is None:
            cannot_run(f"needs the {tool!r} command (.ci/run installs it)")
        return path

    return need


@pytest.fixture
def mounts():
    """A ``support.Mounts``: ``mounts.bind(source, target)``, ``mounts.mount("-t", "tmpfs", "tmpfs", target)``.

    Needs root, ``mount`` and ``umount`` (skipped without them, failed under ``CI=true``); every
    mount is lazily unmounted after the test.
    """
    from tests.support import Mounts, need_mounts

    need_mounts("mount", "umount")
    made = Mounts()
    try:
        yield made
    finally:
        made.undo()


@pytest.fixture
def s3(monkeypatch):
    """A real S3 endpoint on 127.0.0.1 (moto's server, as s3fs's own tests use), a bucket, and the variables
    the real s3fs client reads (``AWS_ENDPOINT_URL``: where users point it at MinIO, Ceph or another store)."""
    import logging

    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        from tests.support import cannot_run

        cannot_run("needs moto[server] and s3fs (the integration extra)")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{server._server.server_port}"
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", url),
    ):
        monkeypatch.setenv(name, value)
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(url + "/moto-api/reset", method="POST")).close()  # (state is per process)
    boto3.client("s3").create_bucket(Bucket="cold")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # (fsspec keeps a client per set of arguments: one of an earlier server)
    try:
        yield "s3://cold/hf-archive"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


@pytest.fixture
def no_margin(monkeypatch):
    """Verify's memos of what was written a moment ago (a test's cache was just built); the real margin has its own test."""
    import hfcache.verify.memo as memo_mod

    monkeypatch.setattr(memo_mod, "MARGIN", 0.0)


@pytest.fixture
def reuses(monkeypatch):
    """Every ``hfcache.verify.memo.Reuse`` a verify makes, to see which repos it counted from memos (tests/memo_support.py)."""
    import hfcache.verify.memo as memo_mod

    made: list[memo_mod.Reuse] = []

    class Recorded(memo_mod.Reuse):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(memo_mod, "Reuse", Recorded)
    return made


@pytest.fixture
def rich_hub(tmp_path):
    """A hub cache built by the real client (tests.support.build_rich_cache): its real root and the commits by name."""
    from tests.fakehub import FakeHub
    from tests.support import build_rich_cache

    root = str(tmp_path / "hub")
    with FakeHub() as hub:
        commits = build_rich_cache(hub, root)
    return os.path.realpath(root), commits
