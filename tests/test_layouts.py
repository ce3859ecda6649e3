"""Every view at 80 and 200 columns on a terminal, against checked-in snapshots (issue 17, point 2).

The inventory and the plans are built in memory with a fixed clock, so the text is the same
on every machine. After a deliberate change of layout, write the snapshots again with
``HFCACHE_UPDATE_SNAPSHOTS=1 python -m pytest tests/test_layouts.py -n 0`` and read the diff.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from rich.console import Console

from hfcache.model import CacheInventory, Inventory, Item, Revision
from hfcache.output import render, views
from hfcache.plan.build import make_plan
from hfcache.plan.decisions import Execution, Status, UnitResult
from hfcache.plan.settings import Policy, Settings

SNAPSHOTS = Path(__file__).parent / "snapshots"
NOW = 1_800_000_000.0
DAY = 86400.0
GB = 10**9


def _rev(commit: str, path: str, *, days: float, size: int, refs=(), version=None, default=False) -> Revision:
    t = NOW - days * DAY
    return Revision(commit, path, refs=refs, size_bytes=size, reclaimable_bytes=size // 2, last_accessed=t,
                    last_modified=t - DAY, nb_files=14, version=version, default=default)  # fmt: skip


def _inventory() -> Inventory:
    root = "/data/huggingface/hub"
    llama = "meta-llama/Meta-Llama-3.1-70B-Instruct"
    revs = (
        _rev("a" * 40, f"{root}/x/{'a' * 40}", days=2, size=141 * GB, refs=("main", "v3.1"), version="3.1", default=True),
        _rev("b" * 40, f"{root}/x/{'b' * 40}", days=100, size=139 * GB, refs=("v3.0",), version="3.0"),
        _rev("c" * 40, f"{root}/x/{'c' * 40}", days=200, size=138 * GB),
    )
    bert = (_rev("d" * 40, f"{root}/y/{'d' * 40}", days=40, size=440 * 10**6, refs=("main",), default=True),)
    hub = CacheInventory(
        "huggingface",
        root,
        size_bytes=418 * GB + 440 * 10**6,
        items=(
            Item(
                "huggingface",
                "google-bert/bert-base-uncased",
                "model",
                f"{root}/y",
                440 * 10**6,
                NOW - 40 * DAY,
                NOW - 41 * DAY,
                bert,
            ),
            Item("huggingface", llama, "model", f"{root}/x", 418 * GB, NOW - 2 * DAY, NOW - 3 * DAY, revs),
        ),  # fmt: skip
        title="Hugging Face hub cache",
        has_refs=True,
    )
    keras = CacheInventory(
        "keras",
        "/home/me/.keras",
        size_bytes=150 * 10**6,
        items=(
            Item(
                "keras",
                "resnet50_weights_tf_dim_ordering_tf_kernels",
                "model",
                "/home/me/.keras/models",
                150 * 10**6,
                NOW - 300 * DAY,
                NOW - 300 * DAY,
                (_rev("resnet50.h5", "/home/me/.keras/models/resnet50.h5", days=300, size=150 * 10**6),),
            ),
        ),  # fmt: skip
        title="Keras",
    )
    return Inventory((hub, keras), scanned_at=NOW)


def _plan():
    return make_plan(_inventory(), Policy(overrides=Settings(keep=1, max_age=90 * DAY)), now=NOW)


VIEWS = {
    "scan": lambda: views.scan_tables(_inventory(), revisions=False, filtered=False),
    "scan-revisions": lambda: views.scan_tables(_inventory(), revisions=True, filtered=False),
    "plan": lambda: views.plan_tables(_plan()),
    "plan-kept": lambda: views.plan_tables(_plan(), show_keep=True),
    "run": lambda: views.plan_tables(
        (p := _plan()),
        execution=Execution(
            p,
            tuple(
                UnitResult(
                    u, Status.DELETED if i else Status.SKIPPED, u.reclaim_bytes if i else 0, None if i else "read since the plan"
                )
                for i, u in enumerate(p.delete)
            ),
        ),  # fmt: skip
    ),
}


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize("view", list(VIEWS))
def test_each_view_at_80_and_200_columns(view, width, monkeypatch):
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None, highlight=False)
    monkeypatch.setattr(render, "stdout", lambda: console)
    VIEWS[view]()
    text = "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"
    snapshot = SNAPSHOTS / f"{view}-{width}.txt"
    if os.environ.get("HFCACHE_UPDATE_SNAPSHOTS"):
        snapshot.parent.mkdir(exist_ok=True)
        snapshot.write_text(text)
    assert text == snapshot.read_text(), f"{snapshot.name} differs; HFCACHE_UPDATE_SNAPSHOTS=1 writes it again"
    # Whatever the snapshot says: nothing cut to an ellipsis, no line wider than the terminal.
    assert "…" not in text
    assert max(map(len, text.splitlines())) <= width
