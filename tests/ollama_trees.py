"""Ollama model stores laid out exactly as Ollama writes them (ollama/ollama at fb307609, Aug 2026).

- ``manifest/manifest.go`` ``WriteManifest``: ``manifests/<host>/<namespace>/<model>/<tag>``,
  a Docker v2 manifest (``schemaVersion`` 2, ``mediaType``
  ``application/vnd.docker.distribution.manifest.v2+json``, ``config``, ``layers``) written by
  Go's ``json.Encoder``: compact, fields in struct order, one trailing newline;
- ``manifest/paths.go`` ``BlobsPath``: ``blobs/sha256-<hex>`` for the digest ``sha256:<hex>``,
  whose sha256 really is ``<hex>`` (``server/images.go`` ``verifyBlob`` checks it after a pull);
- ``server/download.go`` ``blobDownload.run``/``newPart``: a download in progress is the data
  file ``blobs/sha256-<hex>-partial`` (opened ``O_CREATE|O_RDWR``, ``Truncate``-d to the full
  size up front: sparse) and one JSON state file ``-partial-<N>`` per part.

Only ``os`` calls, so the same helpers work on the real disk and under pyfakefs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

from tests.trees import write

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
DAY = 86400.0


def blob(root: str, data: bytes) -> tuple[str, int]:
    """Write ``data`` as the blob Ollama would store it under; returns ``(digest, size)``."""
    hexa = hashlib.sha256(data).hexdigest()
    write(os.path.join(root, "blobs", f"sha256-{hexa}"), data)
    return f"sha256:{hexa}", len(data)


def layer(media_type: str, digest: str, size: int) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def manifest_bytes(config: tuple[str, int], layers: list[tuple[str, tuple[str, int]]]) -> bytes:
    """What ``WriteManifest`` writes: Go's ``json.Encoder`` output of ``manifest.Manifest``."""
    doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": layer(CONFIG_MEDIA_TYPE, *config),
        "layers": [layer(kind, *d) for kind, d in layers],
    }
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


def model(
    root: str,
    name: str,
    tag: str,
    *,
    weights: bytes,
    extras: tuple[tuple[str, bytes], ...] = (),
    config: bytes | None = None,
    host: str = "registry.ollama.ai",
    namespace: str = "library",
    age_days: float = 0.0,
) -> str:
    """A pulled model tag: its blobs (weights, extra layers, config), then its manifest, as a pull does."""
    if config is None:
        config = json.dumps({"model_format": "gguf", "model": f"{namespace}/{name}", "tag": tag}).encode()
    cfg = blob(root, config)
    layers = [(MODEL_MEDIA_TYPE, blob(root, weights))]
    layers += [(f"application/vnd.ollama.image.{kind}", blob(root, data)) for kind, data in extras]
    path = write(os.path.join(root, "manifests", host, namespace, name, tag), manifest_bytes(cfg, layers))
    if age_days:
        age(path, age_days)
    return path


def age(path: str, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t))


def blob_path(root: str, digest: str) -> str:
    return os.path.join(root, "blobs", digest.replace(":", "-"))


def digests(manifest_path: str) -> list[tuple[str, int]]:
    """``(digest, size)`` of the config and every layer of a manifest, as ``Manifest.Size`` sums them."""
    with open(manifest_path, "rb") as f:
        doc = json.load(f)
    return [(d["digest"], d["size"]) for d in (*doc["layers"], doc["config"])]


def loads(root: str, manifest_path: str) -> bool:
    """Whether Ollama could load this tag: every blob it names is there, and its sha256 is its name."""
    for digest, size in digests(manifest_path):
        path = blob_path(root, digest)
        if not os.path.isfile(path):
            return False
        with open(path, "rb") as f:
            data = f.read()
        if len(data) != size or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            return False
    return True


def partial(root: str, data: bytes, total: int, parts: int = 2) -> tuple[str, list[str]]:
    """A download in progress, as ``blobDownload.Prepare``/``run`` leave it: the data file and its part files."""
    hexa = hashlib.sha256(b"partial" + data).hexdigest()
    name = os.path.join(root, "blobs", f"sha256-{hexa}")
    data_file = write(name + "-partial", data)
    with open(data_file, "r+b") as f:
        f.truncate(total)  # pre-truncated to the full size: sparse beyond what was written
    size = total // parts
    part_files = []
    for n in range(parts):
        state = {"N": n, "Offset": n * size, "Size": size, "Completed": len(data) if n == 0 else 0}
        part_files.append(write(f"{name}-partial-{n}", (json.dumps(state) + "\n").encode()))
    return data_file, part_files
