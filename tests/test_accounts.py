"""``hfcache scan --all-users`` (issue 22, point 5): every account's caches, and what the same model costs twice.

Accounts the test makes: a passwd file in the system's format (``--passwd``, as a host's is
mounted into a container), homes in a temporary folder owned by their uids, caches in them
written by the real huggingface_hub client. The machine's own accounts are never read.
"""

from __future__ import annotations

import os

from tests.fakehub import FakeHub
from tests.support import cli, get, payload, run_cli


def _chown(top: str, uid: int) -> None:
    for folder, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(folder, name), uid, uid)
    os.lchown(top, uid, uid)


def test_every_account_is_scanned_where_its_libraries_would_cache_and_double_copies_are_counted(tmp_path):
    homes = {name: tmp_path / "home" / name for name in ("alice", "bob", "carol")}
    for home in homes.values():
        home.mkdir(parents=True)
    with FakeHub() as hub:
        hub.push("org/common", {"w.bin": payload(6000, 1)})
        hub.push("org/only-bob", {"w.bin": payload(3000, 2)})
        for name in ("alice", "bob"):
            get(hub, str(homes[name] / ".cache" / "huggingface" / "hub"), "org/common", "w.bin")
        get(hub, str(homes["bob"] / ".cache" / "huggingface" / "hub"), "org/only-bob", "w.bin")
    checkpoints = homes["alice"] / ".cache" / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "resnet18-f37072fd.pth").write_bytes(payload(1000, 3))
    uids = {"alice": 64001, "bob": 64002, "carol": 64003}
    for name, home in homes.items():
        if os.geteuid() == 0:
            _chown(str(home), uids[name])
    passwd = tmp_path / "passwd"
    passwd.write_text(
        "".join(f"{n}:x:{uid}:{uid}::{homes[n]}:/bin/bash\n" for n, uid in uids.items())
        + f"daemon:x:1:1::{tmp_path}:/usr/sbin/nologin\n"  # a system account: not a person's
        + f"gone:x:64004:64004::{tmp_path / 'nowhere'}:/bin/bash\n"  # no home folder
    )
    code, doc = cli("scan", "--all-users", "--passwd", str(passwd), "--json")
    assert code == 0, doc
    by_user = {a["user"]: a for a in doc["accounts"]}
    assert set(by_user) == {"alice", "bob", "carol"}
    for name in ("alice", "bob"):
        code, own = cli("scan", "--cache-dir", str(homes[name] / ".cache" / "huggingface" / "hub"), "--json", "--state", "off")
        hub_bytes = own["caches"][0]["size_bytes"]
        extra = 1000 if name == "alice" else 0  # alice's torch checkpoint
        assert by_user[name]["size_bytes"] == hub_bytes + extra
    assert by_user["carol"]["size_bytes"] == 0 and by_user["carol"]["caches"] == []
    (common,) = doc["shared"]
    assert common["id"] == "org/common" and [a["user"] for a in common["accounts"]] == ["alice", "bob"]
    assert common["one_cache_saves_bytes"] == common["total_bytes"] // 2 == 6000
    out = run_cli("scan", "--all-users", "--passwd", str(passwd)).stdout
    assert "org/common" in out and "one shared cache would save" in out
    assert run_cli("scan", "--all-users", "--cache-dir", str(tmp_path)).exit_code == 2
