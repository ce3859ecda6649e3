"""Write a large synthetic Hugging Face hub cache, laid out exactly as huggingface_hub lays one out.

    python benchmarks/make_cache.py /tmp/hub-100k --files 100000
    python benchmarks/make_cache.py /tmp/hub-1m --files 1000000

Repos (models, some datasets and spaces) with one to four revisions each; later revisions
share most blobs with earlier ones, as a model updated in a few files does; files in
subfolders; ``refs/main``, tags and PR refs, detached revisions; ``.no_exist`` markers and
``.incomplete`` partial downloads (with their ``.locks``). Blobs are sparse files of the
sizes real weights have (up to gigabytes): the tree costs inodes, not disk. The same seed
gives the same tree. ``--files`` counts snapshot entries (the links), about 20 per revision.

``--content`` (``make_cache(..., content=True)``, for ``bench_verify.py``): the same tree,
but each blob holds a few hundred bytes of real content and is named by its hash, as the hub
names it: the sha256 where the sparse variant has a 64-hex name (weights, LFS), git's blob
hash where it has a 40-hex one (files kept in git). ``hfcache verify`` finds every file ok.
Partial downloads stay sparse (nothing verifies them).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time

FILES_PER_REVISION = 20
SHARED = 0.7  # the share of a revision's files unchanged from the one before


def sha(*parts: object, n: int = 40) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:n]


def blob_size(rng: random.Random, name: str) -> int:
    if name.endswith((".safetensors", ".bin", ".gguf", ".pt")):
        return rng.randint(50_000_000, 5_000_000_000)
    return rng.randint(200, 2_000_000)


def file_names(rng: random.Random, n: int) -> list[str]:
    names = ["config.json", "README.md", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]
    shards = max(1, n - len(names) - 3)
    names += [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    names += ["model.safetensors.index.json", "onnx/model.onnx", "onnx/config.json"]
    return names[:n]


def hashed_blob(index: int, name: str, revision: int, lfs: bool) -> tuple[str, bytes]:
    """A small real content and its hub name: the sha256 (``lfs``), else git's blob hash ``sha1(b"blob <n>\\0" + content)``."""
    content = f"repo {index} file {name} revision {revision}\n".encode() * (4 + index % 13)
    if lfs:
        return hashlib.sha256(content).hexdigest(), content
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest(), content


def write_repo(root: str, rng: random.Random, index: int, revisions: int, files: int, content: bool = False) -> int:
    """One repo folder; returns the number of snapshot entries written (``content``: see the module docstring)."""
    repo_type = "models" if index % 10 < 8 else ("datasets" if index % 10 == 8 else "spaces")
    repo_dir = os.path.join(root, f"{repo_type}--org{index % 97}--repo-{index}")
    blobs_dir = os.path.join(repo_dir, "blobs")
    os.makedirs(blobs_dir)
    names = file_names(rng, files)
    current: dict[str, str] = {}
    commits = []
    written = 0
    for r in range(revisions):
        c = sha(index, "commit", r)
        commits.append(c)
        for name in names:
            if name in current and rng.random() < SHARED:
                continue
            size = blob_size(rng, name)
            if content:  # (the same random draws as the sparse tree: the same shape)
                etag, data = hashed_blob(index, name, r, lfs=size > 10_000_000)
            else:
                etag, data = sha(index, name, r, n=64 if size > 10_000_000 else 40), b""
            path = os.path.join(blobs_dir, etag)
            with open(path, "wb") as f:
                if content:
                    f.write(data)
                else:
                    f.truncate(size)  # sparse: no data blocks
            when = time.time() - rng.uniform(0, 180) * 86400
            os.utime(path, (when + rng.uniform(0, 86400), when))
            current[name] = etag
        snap = os.path.join(repo_dir, "snapshots", c)
        for name in names:
            link = os.path.join(snap, name)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            depth = name.count("/")
            os.symlink(os.path.join(*([".."] * (depth + 2)), "blobs", current[name]), link)
            written += 1
    refs = os.path.join(repo_dir, "refs")
    os.makedirs(refs)
    with open(os.path.join(refs, "main"), "w") as f:
        f.write(commits[-1])
    if revisions > 1 and rng.random() < 0.5:
        with open(os.path.join(refs, "v1.0"), "w") as f:
            f.write(commits[0])
    if rng.random() < 0.05:
        os.makedirs(os.path.join(refs, "refs", "pr"))
        with open(os.path.join(refs, "refs", "pr", "1"), "w") as f:
            f.write(commits[-1])
    if rng.random() < 0.3:
        no_exist = os.path.join(repo_dir, ".no_exist", commits[-1])
        os.makedirs(no_exist)
        open(os.path.join(no_exist, "adapter_config.json"), "w").close()
    if rng.random() < 0.02:  # a download in progress (or abandoned)
        etag = sha(index, "partial", n=64)
        with open(os.path.join(blobs_dir, f"{etag}.incomplete"), "wb") as f:
            f.truncate(rng.randint(1, 4_000_000_000))
        locks = os.path.join(root, ".locks", os.path.basename(repo_dir))
        os.makedirs(locks, exist_ok=True)
        open(os.path.join(locks, f"{etag}.lock"), "w").close()
    return written


def make_cache(root: str, files: int, seed: int = 0, content: bool = False) -> int:
    rng = random.Random(seed)
    os.makedirs(root)
    written = index = 0
    while written < files:
        revisions = min(rng.choice((1, 1, 2, 3, 4)), files - written)
        per = max(1, min(FILES_PER_REVISION + rng.randint(-15, 15), (files - written) // revisions))
        written += write_repo(root, rng, index, revisions, per, content)
        index += 1
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder to create (must not exist)")
    parser.add_argument("--files", type=int, default=100_000, help="snapshot entries to write (default 100000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--content", action="store_true", help="small real blobs named by their hash (for verify)")
    args = parser.parse_args()
    if os.path.exists(args.root):
        sys.exit(f"error: {args.root} exists; give a new folder")
    started = time.monotonic()
    repos = make_cache(args.root, args.files, args.seed, content=args.content)
    print(f"{args.root}: {repos} repos, {args.files} snapshot files, in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
