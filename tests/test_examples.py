"""The operations examples (issue 6): each is validated as its tool would, then run against a real cache.

Every example's command runs as the example writes it, in the environment its scheduler
gives (cron's minimal one, a systemd unit's, a container's, a CI step's shell), with only
its paths mapped into a temporary folder (what a mount or a copy into place would do) and
hfcache found where the example says to put it. Each run is compared with a dry run of the
same command made just before: exactly the planned units go, the audit log records them,
and huggingface_hub still reads the cache cleanly and loads every kept revision offline.

Since issue 17: every comment of an example policy is a promise, checked on a cache built
for it; the examples that install hfcache install the wheel this checkout builds, and fail
the job when the install or the prune fails.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile

import pytest
import yaml
from huggingface_hub import constants, hf_hub_download, scan_cache_dir
from prometheus_client.parser import text_string_to_metric_families

import hfcache.prune
from hfcache import errors
from hfcache.execute.audit import read_log
from hfcache.execute.prune_lock import PruneLocks
from tests import trees
from tests.fakehub import FakeHub
from tests.support import DAY, age_everything, build_rich_cache, markdown_tables, run_cli

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")
HFCACHE = os.path.join(os.path.dirname(sys.executable), "hfcache")  # the installed command
BINDIR = os.path.dirname(HFCACHE)
GB = 10**9


def example(*parts: str) -> str:
    return os.path.join(EXAMPLES, *parts)


def real_cache(root: str, *, aged_days: float = 90) -> None:
    """A hub cache written by hf_hub_download (tags, shared blobs, a dataset, a space), read ``aged_days`` ago."""
    with FakeHub() as hub:
        build_rich_cache(hub, root)
    age_everything(root, aged_days, but=("models--org--moving",))


def dry_run_of(command: list[str], env: dict[str, str]) -> dict:
    """What ``command`` (a prune) would delete: the same command as a dry run (the last --format wins)."""
    out = subprocess.run([*command, "--dry-run", "--format", "json"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def revisions(root: str) -> set[str]:
    return {r.commit_hash for repo in scan_cache_dir(root).repos for r in repo.revisions}


def assert_did_exactly(plan: dict, before: set[str], root: str, log: str, monkeypatch) -> None:
    """The planned revisions are gone and logged, the others stay; the hub reads and loads what stays."""
    going = {u["revision"] for u in plan["delete"] if u["what"] == "revision" and u["root"] == os.path.realpath(root)}
    assert going, "the example should delete something here"
    assert revisions(root) == before - going
    logged = [r for r in read_log(log) if r["root"] == os.path.realpath(root) and r["status"] != "started"]
    assert {r["revision"] for r in logged if r["what"] == "revision"} == going
    assert all(r["status"] == "deleted" for r in logged)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    after = scan_cache_dir(root)
    assert after.warnings == []
    for repo in after.repos:
        for rev in repo.revisions:
            for f in rev.files:
                name = str(f.file_path.relative_to(rev.snapshot_path))
                path = hf_hub_download(
                    repo.repo_id, name, revision=rev.commit_hash, repo_type=repo.repo_type, cache_dir=root, local_files_only=True
                )
                assert os.path.realpath(path) == str(f.blob_path)


def prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


# ---------------------------------------------------------------------------------------------
# cron


CRON_FIELD = re.compile(r"(\*|\d+(-\d+)?)(/\d+)?")
CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def parse_crontab(text: str) -> tuple[dict[str, str], list[tuple[list[str], str]]]:
    """A user crontab as cron reads it: variable lines, and entries (five time fields, the command)."""
    env: dict[str, str] = {}
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assignment = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line)
        if assignment:
            env[assignment.group(1)] = assignment.group(2)
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"not five time fields and a command: {line}"
        for field, (low, high) in zip(fields[:5], CRON_RANGES, strict=True):
            for part in field.split(","):
                assert CRON_FIELD.fullmatch(part), f"bad cron field {field!r}"
                numbers = [int(n) for n in re.findall(r"\d+", part.split("/")[0])]
                assert all(low <= n <= high for n in numbers), f"{field!r} outside {low}-{high}"
        command = fields[5]
        assert not re.search(r"(?<!\\)%", command), f"a bare % is a newline to cron: {command}"
        entries.append((fields[:5], command.replace("\\%", "%")))
    return env, entries


def test_crontab_lines_run_as_cron_runs_them(tmp_path, monkeypatch):
    home = str(tmp_path / "home")
    root = os.path.join(home, ".cache", "huggingface", "hub")
    real_cache(root)
    os.makedirs(os.path.join(home, ".config", "hfcache"))
    shutil.copy(example("policies", "laptop.yaml"), os.path.join(home, ".config", "hfcache", "config.yaml"))
    collector = str(tmp_path / "textfile_collector")
    os.makedirs(collector)

    variables, entries = parse_crontab(open(example("cron", "hfcache.crontab")).read())
    assert [e[0] for e in entries] == [["17", "3", "*", "*", "*"], ["*/15", "*", "*", "*", "*"]]
    # cron's environment: HOME, LOGNAME, SHELL=/bin/sh and the crontab's variables; the
    # crontab's PATH gets the folder hfcache is installed in, as its comment says to do.
    env = {"HOME": home, "LOGNAME": "ml", "SHELL": "/bin/sh", **variables}
    env["PATH"] = f"{BINDIR}:{variables['PATH']}"
    prune, metrics = (command for _, command in entries)
    assert prune.startswith("hfcache prune --yes")

    plan = dry_run_of(shlex.split(prune.split(">")[0]), env)
    before = revisions(root)
    done = subprocess.run(["/bin/sh", "-c", prune], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "", done.stderr
    assert_did_exactly(plan, before, root, os.path.join(home, ".local", "state", "hfcache", "audit.log"), monkeypatch)

    metrics = metrics.replace("/var/lib/node_exporter/textfile_collector", collector)
    done = subprocess.run(["/bin/sh", "-c", metrics], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    found = prometheus(open(os.path.join(collector, "hfcache-ml.prom")).read())
    [(labels, when)] = [s for s in found["hfcache_last_prune_timestamp_seconds"] if s[0]["root"] == root]
    assert time.time() - 600 < when <= time.time()
    # The usage history accumulates with no setup: the dry run, the prune and metrics each recorded a sample.
    assert history_samples(os.path.join(home, ".local", "state", "hfcache", "state.db"), root) == 3


def history_samples(state: str, root: str) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(state)) as db:
        (n,) = db.execute("SELECT count(*) FROM samples WHERE root = ?", (os.fsencode(root),)).fetchone()
    return int(n)


# ---------------------------------------------------------------------------------------------
# systemd


def read_unit(path: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",), comment_prefixes=("#", ";"))
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(path)
    return unit


def test_systemd_units_verify_and_the_service_runs(tmp_path, monkeypatch, need_tool):
    service_file, timer_file = example("systemd", "hfcache-prune.service"), example("systemd", "hfcache-prune.timer")
    metrics_file, metrics_timer_file = example("systemd", "hfcache-metrics.service"), example("systemd", "hfcache-metrics.timer")
    service, timer = read_unit(service_file), read_unit(timer_file)
    metrics_service, metrics_timer = read_unit(metrics_file), read_unit(metrics_timer_file)
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["Nice"] == "19" and service["Service"]["IOSchedulingClass"] == "idle"
    assert timer["Timer"]["RandomizedDelaySec"] and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"

    exec_start, exec_post = service["Service"]["ExecStart"], service["Service"]["ExecStartPost"]
    installed = shlex.split(exec_start)[0]
    analyze = need_tool("systemd-analyze")  # Debian's systemd: the units as systemd itself reads them
    units = tmp_path / "units"
    units.mkdir()
    sources = (service_file, timer_file, metrics_file, metrics_timer_file)
    for src in sources:
        text = open(src).read().replace(installed, HFCACHE)
        (units / os.path.basename(src)).write_text(text)
    verify = subprocess.run(  # the man pages are checked by test_docs, not installed here
        [analyze, "verify", "--man=no", *(str(units / os.path.basename(src)) for src in sources)],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    for on_calendar in (timer["Timer"]["OnCalendar"], metrics_timer["Timer"]["OnCalendar"]):
        calendar = subprocess.run([analyze, "calendar", "--iterations=2", on_calendar], capture_output=True, text=True)
        assert calendar.returncode == 0 and "Next elapse" in calendar.stdout, calendar.stderr
    assert metrics_timer["Timer"]["OnCalendar"] == "*:0/15"  # the history's sampling rate

    # The service's commands, with its paths in a temporary folder.
    hf_home = service["Service"]["Environment"].split("=", 1)[1]
    state = str(tmp_path / "state")
    collector = str(tmp_path / "collector")
    os.makedirs(collector)
    config = str(tmp_path / "config.yaml")
    shutil.copy(example("policies", "gpu-server.yaml"), config)
    paths = {
        installed: HFCACHE,
        "${STATE_DIRECTORY}": state,
        "/etc/hfcache/config.yaml": config,
        "/var/lib/node_exporter/textfile_collector": collector,
    }

    def mapped(command: str) -> list[str]:
        for old, new in paths.items():
            command = command.replace(old, new)
        return shlex.split(command.lstrip("-"))

    env = {"HOME": str(tmp_path / "root"), "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / hf_home.strip("/"))}
    root = os.path.join(env["HF_HOME"], "hub")
    real_cache(root)
    os.makedirs(state)  # StateDirectory=
    plan = dry_run_of(mapped(exec_start), env)
    before = revisions(root)
    done = subprocess.run(mapped(exec_start), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Deleted:" in done.stdout
    assert_did_exactly(plan, before, root, os.path.join(state, "audit.log"), monkeypatch)
    done = subprocess.run(mapped(exec_post), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    found = prometheus(open(os.path.join(collector, "hfcache.prom")).read())
    [(_, freed)] = [s for s in found["hfcache_last_prune_freed_bytes"] if s[0]["root"] == root]
    assert freed == sum(r["bytes"] for r in read_log(os.path.join(state, "audit.log")))
    # Every 15 minutes, the metrics service: the same state folder, the usage history grows.
    done = subprocess.run(mapped(metrics_service["Service"]["ExecStart"]), env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert history_samples(os.path.join(state, "state.db"), root) == 4  # dry run, prune, its metrics, this one


# ---------------------------------------------------------------------------------------------
# Kubernetes


def first_matching_rule(policy: dict, container: str, code: int) -> str:
    """The action Kubernetes takes for a container's exit code under a podFailurePolicy (first match)."""
    for rule in policy["rules"]:
        on = rule.get("onExitCodes")
        if on and on.get("containerName", container) == container:
            if (code in on["values"]) == (on["operator"] == "In"):
                return rule["action"]
    return "Count"


def test_kubernetes_cronjob_validates_and_its_container_runs_on_the_shared_volume(tmp_path, monkeypatch):
    import kubernetes_validate

    docs = list(yaml.safe_load_all(open(example("kubernetes", "hfcache-prune-cronjob.yaml"))))
    for doc in docs:  # the API server's own schemas, unknown fields refused
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    config_map, cron_job = docs
    spec = cron_job["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    [container] = pod["containers"]
    # Exit codes that will not change on a retry fail the Job; "busy" and "partial" are retried.
    usage_and_safety = {c.exit_code for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.HfcacheError)}
    usage_and_safety -= {errors.CacheBusy.exit_code, errors.HfcacheError.exit_code}
    for code in usage_and_safety:
        assert first_matching_rule(job["podFailurePolicy"], container["name"], code) == "FailJob", code
    for code in (errors.CacheBusy.exit_code, errors.EXIT_PARTIAL):
        assert first_matching_rule(job["podFailurePolicy"], container["name"], code) == "Count", code
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it

    # The container, its volumes mapped into a temporary folder as the kubelet would mount them.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: str(tmp_path / m["name"]) for m in container["volumeMounts"]}
    for path, local in mounts.items():
        os.makedirs(local)
        source = volumes[next(m["name"] for m in container["volumeMounts"] if m["mountPath"] == path)]
        if "configMap" in source:
            assert source["configMap"]["name"] == config_map["metadata"]["name"]
            for name, text in config_map["data"].items():
                open(os.path.join(local, name), "w").write(text)

    def mapped(value: str) -> str:
        for path, local in mounts.items():
            value = value.replace(path, local)
        return value

    env = {"PATH": f"{BINDIR}:/usr/bin:/bin", **{e["name"]: mapped(e["value"]) for e in container["env"]}}
    command = [HFCACHE, *(mapped(a) for a in container["args"])]
    root = os.path.join(env["HF_HOME"], "hub")
    assert root.startswith(mounts["/cache/huggingface"])  # the cache is on the shared volume
    real_cache(root, aged_days=30)
    log = mapped("/cache/huggingface/.hfcache/audit.log")
    assert f"--log={log}" in command  # kept on the volume, beside the caches

    # Another prune of the same cache (another CronJob, an admin) holds the lock: busy, nothing deleted.
    before = revisions(root)
    busy = [a.replace("--lock-wait=10m", "--lock-wait=1s") for a in command]
    with PruneLocks({root: os.path.join(root, ".locks", "hfcache-prune.lock")}, 0):
        done = subprocess.run(busy, env=env, capture_output=True, text=True)
    assert done.returncode == errors.CacheBusy.exit_code, done.stderr
    assert revisions(root) == before

    plan = dry_run_of(command, env)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert_did_exactly(plan, before, root, log, monkeypatch)


BUILD_THE_WHEEL = "pip wheel --no-deps -w wheels ."  # what the README and the examples say to run in a clone


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory) -> str:
    """The wheel ``BUILD_THE_WHEEL`` makes, run as written in a copy of this checkout: what the install examples pin."""
    clone = tmp_path_factory.mktemp("clone") / "hfcache"
    ignore = shutil.ignore_patterns(".git", "__pycache__", ".*_cache", "wheels", "build", "dist", "*.egg-info")
    shutil.copytree(os.path.dirname(EXAMPLES), clone, ignore=ignore)
    command = shlex.split(BUILD_THE_WHEEL)
    built = subprocess.run([sys.executable, "-m", *command, "--quiet"], cwd=clone, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    [wheel] = (clone / "wheels").iterdir()
    return str(wheel)


def pinned_wheel(text: str, built: str) -> str:
    """The one wheel an example installs, checked to be the one ``built`` from this checkout (its version pinned)."""
    names, name = set(re.findall(r"hfcache-[^\s/\"']+\.whl", text)), os.path.basename(built)
    assert names == {name}, f"the example names {sorted(names)}; this checkout builds {name}"
    assert BUILD_THE_WHEEL in text, "the example no longer says how to build the wheel it installs"
    return name


def test_the_readme_says_how_to_build_and_install_the_wheel_the_examples_pin(built_wheel):
    readme = open(os.path.join(os.path.dirname(EXAMPLES), "README.md")).read()
    install = readme[readme.index("No release of hfcache is on a package index") :]
    [commands] = re.findall(r"```bash\n(.*?)```", install, re.DOTALL)[:1]
    name = pinned_wheel(commands, built_wheel)
    assert [line.split("#")[0].strip() for line in commands.splitlines()] == [BUILD_THE_WHEEL, f"pip install wheels/{name}"]


def test_the_image_installs_the_pinned_wheel_it_says_to_build(tmp_path, built_wheel):
    """The Dockerfile copies the wheel its comment builds (this version) and installs exactly that file."""
    text = open(example("kubernetes", "Dockerfile")).read()
    name = pinned_wheel(text, built_wheel)
    with zipfile.ZipFile(built_wheel) as wheel:  # the command and the man pages are in it
        files = wheel.namelist()
        [entry_points] = [wheel.read(f).decode() for f in files if f.endswith(".dist-info/entry_points.txt")]
    assert "hfcache = hfcache.cli:run" in entry_points and "hfcache/cli/__init__.py" in files
    assert any(f.endswith("/data/share/man/man5/hfcache.yaml.5") for f in files)
    context = tmp_path / "checkout"  # after `pip wheel --no-deps -w wheels .`
    (context / "wheels").mkdir(parents=True)
    shutil.copy(built_wheel, context / "wheels")
    image = tmp_path / "image"  # the image's file system, as COPY and RUN change it
    copies = [line.split()[1:] for line in text.splitlines() if line.startswith("COPY ")]
    assert copies == [[f"wheels/{name}", "/tmp/"]]
    (image / "tmp").mkdir(parents=True)
    shutil.copy(context / "wheels" / name, image / "tmp")
    [run] = [line[len("RUN ") :] for line in text.splitlines() if line.startswith("RUN ")]
    installers = fake_installer(tmp_path, "pip")
    env = {"PATH": f"{installers}:/usr/bin:/bin"}
    done = subprocess.run(["/bin/sh", "-c", run.replace("/tmp/", f"{image}/tmp/")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # Docker's RUN: /bin/sh -c, the build stops if it fails
    assert open(os.path.join(installers, "calls")).read().split()[1:] == ["install", "--no-cache-dir", f"{image}/tmp/{name}"]
    assert not (image / "tmp" / name).exists()
    (image / "tmp").rmdir()


# ---------------------------------------------------------------------------------------------
# CI: GitHub Actions and GitLab CI


def check_schema(name: str, path: str) -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", name, path], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def runner_cache(root: str) -> dict[str, int]:
    """A real cache made 12 GB by three 4 GB sparse blobs (no disk used), downloaded on three different days."""
    real_cache(root)
    sizes = {}
    for day, repo_dir in enumerate(("models--org--pinned", "models--org--copy", "datasets--org--data")):
        blobs = os.path.join(root, repo_dir, "blobs")
        blob = max(os.listdir(blobs), key=lambda b: os.path.getsize(os.path.join(blobs, b)))
        os.truncate(os.path.join(blobs, blob), 4 * GB)
        when = time.time() - (10 - day) * 86400
        os.utime(os.path.join(blobs, blob), (when, when))
        sizes[repo_dir] = 4 * GB
    return sizes


def fake_installer(tmp_path, name: str, *, exit_code: str = "0") -> str:
    """A stand-in for a command of the CI image (pipx, pip, python): hfcache is already installed here.

    It records its arguments, refuses a wheel that is not there (as pip does) and exits with
    ``exit_code`` (shell text: ``$TESTS_EXIT`` lets a test pick how the tests went).
    """
    bindir = tmp_path / "installers"
    bindir.mkdir(exist_ok=True)
    (bindir / name).write_text(
        "#!/bin/sh\n"
        'echo "$0 $*" >> "$(dirname "$0")/calls"\n'
        'for a in "$@"; do case "$a" in *.whl) [ -f "$a" ] || { echo "$a: no such file" >&2; exit 1; };; esac; done\n'
        f"exit {exit_code}\n"
    )
    (bindir / name).chmod(0o755)
    return str(bindir)


def hub_size(root: str) -> int:
    return scan_cache_dir(root).size_on_disk


def broken_policy(tmp_path) -> str:
    """A policy file hfcache refuses (exit 2): with ``HFCACHE_CONFIG`` pointing to it, every prune fails."""
    path = tmp_path / "broken.yaml"
    path.write_text("keep: two\n")
    return str(path)


def test_github_actions_post_steps_install_the_pinned_wheel_prune_and_fail_loudly(tmp_path, monkeypatch, built_wheel):
    path = example("ci", "github-actions.yml")
    check_schema("vendor.github-workflows", path)
    workflow = yaml.safe_load(open(path))
    [job] = workflow["jobs"].values()
    steps = {s.get("name"): s for s in job["steps"]}
    install, prune = steps["Install hfcache"], steps["Prune the model cache"]
    assert install["if"] == prune["if"] == "always()"
    assert not [s for s in job["steps"] if "continue-on-error" in s]  # a failing step fails the job
    assert install["shell"] == prune["shell"] == "bash"  # GitHub runs it as bash --noprofile --norc -eo pipefail
    names = [s.get("name") for s in job["steps"]]
    assert names.index("Prune the model cache") > names.index("Restore the model cache")  # cache saved after it

    workspace = tmp_path / "workspace"  # the checkout of your repository, the wheel committed to it
    wheel = install["env"]["HFCACHE_WHEEL"]
    assert os.path.basename(wheel) == pinned_wheel(open(path).read(), built_wheel)
    (workspace / os.path.dirname(wheel)).mkdir(parents=True)
    shutil.copy(built_wheel, workspace / wheel)
    hf_home = str(tmp_path / "hf-home")
    root = os.path.join(hf_home, "hub")
    runner_cache(root)
    summary = tmp_path / "summary.md"
    summary.write_text("")
    installers = fake_installer(tmp_path, "pipx")
    env = {
        "HOME": str(tmp_path / "runner"),
        "PATH": f"{installers}:{BINDIR}:/usr/bin:/bin",
        "HF_HOME": hf_home,
        "GITHUB_STEP_SUMMARY": str(summary),
        **install["env"],
    }

    def run(step: dict, **changes: str) -> subprocess.CompletedProcess:
        shell = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]]  # shell: bash
        return subprocess.run(shell, env={**env, **changes}, cwd=workspace, capture_output=True, text=True)

    before = revisions(root)
    assert hub_size(root) > 10 * GB
    plan_command = shlex.split(re.search(r"(hfcache prune .*?--format markdown)", prune["run"].replace("\\\n", " ")).group(1))
    plan = dry_run_of([HFCACHE, *plan_command[1:]], env)
    for step in (install, prune):
        done = run(step)
        assert done.returncode == 0, done.stderr
    assert open(os.path.join(installers, "calls")).read().split()[1:] == ["install", wheel]
    assert hub_size(root) <= 10 * GB
    text = summary.read_text()
    assert text.startswith("### Model cache housekeeping\n")
    [table] = markdown_tables(text)
    assert table[0] == ["KIND", "ID", "REVISION", "STATUS", "FREED", "WHY"]
    assert {r[1] for r in table[1:] if r[3] == "deleted"} == {u["id"] for u in plan["delete"] if u["what"] == "revision"}
    assert_did_exactly(plan, before, root, os.path.join(env["HOME"], ".local", "state", "hfcache", "audit.log"), monkeypatch)

    # Loud: a prune that fails fails its step, and the job with it; so does a wheel that is not there.
    assert run(prune, HFCACHE_CONFIG=broken_policy(tmp_path)).returncode == 2
    os.remove(workspace / wheel)
    assert run(install).returncode != 0


def test_gitlab_script_installs_the_pinned_wheel_prunes_after_the_tests_and_fails_loudly(tmp_path, monkeypatch, built_wheel):
    path = example("ci", "gitlab-ci.yml")
    check_schema("vendor.gitlab-ci", path)
    [job] = yaml.safe_load(open(path)).values()
    assert job["cache"]["when"] == "always" and job["artifacts"]["when"] == "always"
    assert "after_script" not in job  # GitLab ignores a failing after_script: a broken prune would go unseen

    project = tmp_path / "project"
    project.mkdir()
    variables = {k: v.replace("$CI_PROJECT_DIR", str(project)) for k, v in job["variables"].items()}
    assert os.path.relpath(variables["HF_HOME"], project) == job["cache"]["paths"][0]  # the cache GitLab saves
    wheel = variables["HFCACHE_WHEEL"]
    assert os.path.basename(wheel) == pinned_wheel(open(path).read(), built_wheel)
    (project / os.path.dirname(wheel)).mkdir(parents=True)
    shutil.copy(built_wheel, project / wheel)
    root = os.path.join(variables["HF_HOME"], "hub")
    runner_cache(root)
    installers = fake_installer(tmp_path, "pip")
    fake_installer(tmp_path, "python", exit_code='"${TESTS_EXIT:-0}"')  # the tests: pass or fail as told
    env = {"HOME": str(tmp_path / "runner"), "PATH": f"{installers}:{BINDIR}:/usr/bin:/bin", "CI_PROJECT_DIR": str(project)}
    env.update(variables)

    def run(**changes: str) -> subprocess.CompletedProcess:
        # GitLab runs the script's lines in one bash (-e, pipefail), stopping at the first that fails.
        shell = ["bash", "-eo", "pipefail", "-c", "\n".join(job["script"])]
        return subprocess.run(shell, env={**env, **changes}, cwd=project, capture_output=True, text=True)

    before = revisions(root)
    command = next(line for line in job["script"] if line.startswith("hfcache prune"))
    plan = dry_run_of([HFCACHE, *shlex.split(command.split(">")[0])[1:]], env)
    done = run(TESTS_EXIT="1")  # the tests failed: the cache is pruned all the same, and the job fails with them
    assert done.returncode == 1, done.stderr
    calls = [line.split()[1:] for line in open(os.path.join(installers, "calls"))]
    assert calls[0] == ["install", "--quiet", wheel] and calls[2] == ["-m", "pytest"]
    assert hub_size(root) <= 10 * GB
    [artifact] = job["artifacts"]["paths"]
    [table] = markdown_tables((project / artifact).read_text())
    assert {r[3] for r in table[1:]} == {"deleted"}
    assert "| deleted |" in done.stdout  # the plan in the job's log too
    assert_did_exactly(plan, before, root, os.path.join(env["HOME"], ".local", "state", "hfcache", "audit.log"), monkeypatch)
    assert run(TESTS_EXIT="0").returncode == 0  # tests passed, prune done (nothing left to do): the job passes

    # Loud: a prune that fails fails the job although the tests passed; a missing wheel fails it before the tests.
    assert run(TESTS_EXIT="0", HFCACHE_CONFIG=broken_policy(tmp_path)).returncode == 2
    os.remove(project / wheel)
    os.remove(os.path.join(installers, "calls"))
    assert run(TESTS_EXIT="0").returncode != 0
    assert [line.split()[1:] for line in open(os.path.join(installers, "calls"))] == [["install", "--quiet", wheel]]


# ---------------------------------------------------------------------------------------------
# Policies: what each comment of examples/policies/*.yaml says, checked on a cache


def hub_model(root: str, repo_id: str, *revisions: tuple[str, int, float, float], main: str | None = None) -> dict[str, str]:
    """A hub model, one file per revision, each ``(label, bytes, read days ago, downloaded days ago)``; label -> commit.

    The blobs are sparse (``repo`` truncates): a cache of hundreds of GB takes no disk.
    ``refs/main`` points to ``main`` (the last revision when not given).
    """
    folder = "models--" + repo_id.replace("/", "--")
    commits = {label: trees.commit(f"{repo_id}@{label}") for label, *_ in revisions}
    etags = {label: f"{folder}-{label}" for label, *_ in revisions}
    repo_dir = trees.repo(
        root,
        folder,
        snapshots={commits[label]: {"model.safetensors": etags[label]} for label, *_ in revisions},
        blobs={etags[label]: size for label, size, *_ in revisions},
        refs={"main": commits[main or revisions[-1][0]]},
    )
    for label, _, read, downloaded in revisions:
        os.utime(os.path.join(repo_dir, "blobs", etags[label]), (time.time() - read * DAY, time.time() - downloaded * DAY))
    return commits


def partial_download(root: str, repo_id: str, hours_old: float) -> str:
    """A hub partial download (``blobs/<sha256>.incomplete``, no lock held) last written ``hours_old`` ago."""
    path = trees.write(
        os.path.join(root, "models--" + repo_id.replace("/", "--"), "blobs", f"{trees.sha256(hours_old)}.incomplete"), 100
    )
    os.utime(path, (time.time() - hours_old * 3600, time.time() - hours_old * 3600))
    return path


def torch_checkpoint(root: str, name: str, size: int, read: float, downloaded: float) -> str:
    """``<root>/checkpoints/<name>`` (torch hub's download folder), sparse, read and written so many days ago."""
    path = trees.write(os.path.join(root, "checkpoints", name), size)
    os.utime(path, (time.time() - read * DAY, time.time() - downloaded * DAY))
    return path


def plan_with(config: str, *roots: str) -> dict:
    """The plan of ``hfcache prune --config CONFIG --dry-run --json`` on these cache roots."""
    args = [a for root in roots for a in ("--cache-dir", root)]
    done = run_cli("prune", "--config", config, "--dry-run", "--json", *args)
    assert done.exit_code == 0, done.stderr
    return json.loads(done.stdout)


def disk(monkeypatch, *, total: int, free: int) -> None:
    """Every cache on one file system of ``total`` bytes, ``free`` free (what ``min_free`` sees, not this machine's)."""
    monkeypatch.setattr(hfcache.prune, "disk_of", lambda root: hfcache.prune.Disk(1, total, free))


def deleted(plan: dict) -> set[str]:
    """The revisions (commits, checkpoint hashes) and junk paths the plan deletes."""
    return {u["revision"] or u["path"] for u in plan["delete"]}


def whole(plan: dict) -> set[str]:
    """The models the plan deletes every revision of."""
    return {u["id"] for u in plan["delete"] if u["item_removed"]}


def comments(text: str) -> str:
    """What a policy says: its comments, one string, whitespace collapsed (a promise may wrap)."""
    return " ".join(" ".join(line.partition("#")[2] for line in text.splitlines()).split())


def says(policy: str, promise: str) -> str:
    """``promise``, after checking that the policy's comments say it word for word (the test names what it checks).

    ``policy`` is a file of ``examples/policies/``, or the text of a policy.
    """
    text = open(example("policies", policy)).read() if policy.endswith(".yaml") else policy
    assert promise in comments(text), f"the policy no longer says {promise!r}: check what it says now"
    return promise


def test_the_laptop_policy_does_what_its_comments_say(tmp_path, monkeypatch):
    hub, torch = str(tmp_path / "hub"), str(tmp_path / "torch" / "hub")
    tried = hub_model(hub, "org/tried", ("a", GB, 100, 100))
    used = hub_model(hub, "org/used", ("old", GB, 61, 120), ("x", GB, 59, 90), ("y", GB, 30, 60), ("main", GB, 0, 10))
    stale, fresh = partial_download(hub, "org/used", 25), partial_download(hub, "org/used", 12)
    orphan = trees.write(os.path.join(hub, "models--org--used", "blobs", trees.sha256("unreferenced")), 1000)
    os.utime(orphan, (time.time() - 3 * DAY, time.time() - 3 * DAY))
    resnet = torch_checkpoint(torch, "resnet18-5c106cde.pth", 10**7, read=100, downloaded=100)
    vit = torch_checkpoint(torch, "vit_b_16-c867db91.pth", 10**7, read=3, downloaded=100)
    disk(monkeypatch, total=10**12, free=10**10)
    plan = plan_with(example("policies", "laptop.yaml"), hub, torch)
    going = deleted(plan)

    promise = says("laptop.yaml", "a revision not read for two months goes, even a model's only one (then the whole model goes)")
    assert tried["a"] in going and used["old"] in going and "org/tried" in whole(plan), promise
    promise = says("laptop.yaml", "every revision read in the last two months stays, however many a model has")
    assert {used["x"], used["y"], used["main"]}.isdisjoint(going), promise
    promise = says("laptop.yaml", "In every cache (hub, torch, Keras, ...)")
    assert "5c106cde" in going and "c867db91" not in going, promise
    assert os.path.exists(resnet) and os.path.exists(vit)  # a dry run
    promise = says("laptop.yaml", "partial downloads older than a day whose lock is free, orphan blobs")
    assert stale in going and orphan in going and fresh not in going, promise
    promise = says("laptop.yaml", "`keep: 2` here would keep a model tried once")
    with_keep = tmp_path / "laptop-keep-2.yaml"
    with_keep.write_text(open(example("policies", "laptop.yaml")).read() + "keep: 2\n")
    assert tried["a"] not in deleted(plan_with(str(with_keep), hub, torch)), promise


def test_the_gpu_server_policy_does_what_its_comments_say(tmp_path, monkeypatch):
    hub, torch, keras = str(tmp_path / "hub"), str(tmp_path / "torch" / "hub"), str(tmp_path / "keras")
    llama = hub_model(hub, "meta-llama/L3", ("a", 50 * GB, 100, 100), ("b", 50 * GB, 100, 100))
    core = hub_model(hub, "org/core-emb", ("a", 20 * GB, 100, 100))
    stale = hub_model(hub, "org/stale", ("a", 30 * GB, 8, 50))
    solo = hub_model(hub, "org/solo", ("a", 30 * GB, 6, 50))
    busy = hub_model(
        hub, "org/busy", ("r1", 30 * GB, 5, 50), ("r2", 30 * GB, 4, 40), ("r3", 30 * GB, 3, 30), ("main", 10 * GB, 1, 20)
    )
    llama_partial = partial_download(hub, "meta-llama/L3", 100)
    old_partial, young_partial = partial_download(hub, "org/busy", 72), partial_download(hub, "org/busy", 24)
    torch_checkpoint(torch, "resnet18-5c106cde.pth", 10**7, read=40, downloaded=40)
    torch_checkpoint(torch, "vit_b_16-c867db91.pth", 10**7, read=20, downloaded=40)
    served = trees.write(os.path.join(torch, "meta-llama_llama_main", "hubconf.py"), b"dependencies = []\n")
    os.utime(served, (time.time() - 100 * DAY, time.time() - 100 * DAY))
    weights = trees.write(os.path.join(keras, "models", "resnet50_weights_tf_dim_ordering_tf_kernels.h5"), 10**8)
    os.utime(weights, (time.time() - 400 * DAY, time.time() - 400 * DAY))
    disk(monkeypatch, total=10**13, free=5 * 10**12)  # plenty free: min_free has nothing to do
    plan = plan_with(example("policies", "gpu-server.yaml"), hub, torch, keras)
    going = deleted(plan)
    hub_left = hub_size(hub) - sum(u["reclaim_bytes"] for u in plan["delete"] if u["root"] == os.path.realpath(hub))

    promise = says("gpu-server.yaml", "never deleted by any policy (age, quotas, junk), in any cache")
    kept = {(u["kind"], u["revision"] or u["path"]) for u in plan["keep"] if u["id"].startswith("meta-llama/")}
    everything = {*(("huggingface", c) for c in (*llama.values(), llama_partial)), ("torch", "main")}
    assert kept == everything and not [u for u in plan["delete"] if u["id"].startswith("meta-llama/")], promise
    promise = says("gpu-server.yaml", "the same, as a model rule")
    assert core["a"] in {u["revision"] for u in plan["keep"]} and core["a"] not in going, promise
    promise = says("gpu-server.yaml", "not read for a week: goes, even a model's last revision")
    assert stale["a"] in going and "org/stale" in whole(plan), promise
    promise = says("gpu-server.yaml", "least recently read first, until the cache fits")
    assert busy["r1"] in going and busy["r2"] in going and busy["r3"] not in going and hub_left <= 200 * GB, promise
    promise = says("gpu-server.yaml", "but never a model's last revision")
    assert solo["a"] not in going and busy["main"] not in going, promise
    promise = says("gpu-server.yaml", "Torch hub: 30 days unread")
    assert "5c106cde" in going and "c867db91" not in going, promise
    promise = says("gpu-server.yaml", "The other caches (Keras, Xet, datasets, ...): junk only")
    assert "keras" in {c["kind"] for c in plan["caches"]} and not [u for u in plan["delete"] if u["kind"] == "keras"], promise
    promise = says("gpu-server.yaml", "junk younger than two days stays")
    assert old_partial in going and young_partial not in going, promise

    # A second cache, under 200 GB, on a disk with 7 GB of 100 GB free: min_free wants 3 GB more.
    other = str(tmp_path / "other" / "hub")
    third = hub_model(other, "org/busy", ("r1", GB, 3, 3), ("r2", GB, 2, 2), ("main", 2 * GB, 1, 1))
    disk(monkeypatch, total=100 * GB, free=7 * GB)
    plan = plan_with(example("policies", "gpu-server.yaml"), other)
    promise = says("gpu-server.yaml", "then, the same way, until a tenth of the disk is free")
    assert deleted(plan) == {third["r1"], third["r2"]}, promise
    promise = says("gpu-server.yaml", "when what was read this week is more than that, the plan warns and keeps it")
    assert [w for w in plan["warnings"] if "short of min_free" in w] and third["main"] not in deleted(plan), promise


def test_the_ci_runner_policy_does_what_its_comments_say(tmp_path, monkeypatch):
    hub, torch = str(tmp_path / "hub"), str(tmp_path / "torch" / "hub")
    first = hub_model(hub, "org/first", ("a", 12 * GB, 0.01, 10))  # downloaded first, read a minute ago
    second = hub_model(hub, "org/second", ("a", 10 * GB, 30, 5))  # read least recently
    third = hub_model(hub, "org/third", ("a", 8 * GB, 20, 1))
    old_partial, young_partial = partial_download(hub, "org/third", 3), partial_download(hub, "org/third", 1)
    torch_checkpoint(torch, "resnet18-5c106cde.pth", 12 * GB, read=1, downloaded=3)
    torch_checkpoint(torch, "vit_b_16-c867db91.pth", 10 * GB, read=1, downloaded=2)
    disk(monkeypatch, total=10**13, free=5 * 10**12)  # plenty free: min_free has nothing to do
    plan = plan_with(example("policies", "ci-runner.yaml"), hub, torch)
    going = deleted(plan)

    promise = says("ci-runner.yaml", "go by download time")
    assert first["a"] in going and second["a"] not in going, promise
    promise = says("ci-runner.yaml", "per cache: least recently downloaded first until it fits in 20 GB")
    assert going & {first["a"], second["a"], third["a"], "5c106cde", "c867db91"} == {first["a"], "5c106cde"}, promise
    promise = says("ci-runner.yaml", "a quota may empty a model")
    assert whole(plan) == {"org/first", "resnet18"}, promise
    promise = says("ci-runner.yaml", "partial downloads whose lock is free, orphan blobs, leftovers, once 2 hours old")
    assert old_partial in going and young_partial not in going, promise

    # Two caches under 20 GB on one disk with 1 GB of 100 GB free: min_free wants 4 GB more.
    hub, torch = str(tmp_path / "runner" / "hub"), str(tmp_path / "runner" / "torch" / "hub")
    ancient = hub_model(hub, "org/ancient", ("a", 2 * GB, 300, 300))
    fresh = hub_model(hub, "org/fresh", ("a", 6 * GB, 1, 1))
    torch_checkpoint(torch, "resnet18-5c106cde.pth", 4 * GB, read=1, downloaded=3)
    disk(monkeypatch, total=100 * GB, free=50 * GB)
    promise = says("ci-runner.yaml", "nothing goes for its age")
    assert deleted(plan_with(example("policies", "ci-runner.yaml"), hub, torch)) == set(), promise
    disk(monkeypatch, total=100 * GB, free=1 * GB)
    plan = plan_with(example("policies", "ci-runner.yaml"), hub, torch)
    promise = says("ci-runner.yaml", "then the same way across the disk's caches: the next job needs 5 GB free")
    assert deleted(plan) == {ancient["a"], "5c106cde"} and fresh["a"] not in deleted(plan), promise


def test_the_kubernetes_policy_does_what_its_comments_say(tmp_path, monkeypatch):
    [config_map, _] = yaml.safe_load_all(open(example("kubernetes", "hfcache-prune-cronjob.yaml")))
    policy = config_map["data"]["config.yaml"]
    (tmp_path / "config.yaml").write_text(policy)
    hub = str(tmp_path / "hub")
    old = hub_model(hub, "org/old", ("a", 10 * GB, 15, 30))
    recent = hub_model(hub, "org/recent", ("a", 100 * GB, 13, 30))
    served = hub_model(hub, "org/served", ("r1", 300 * GB, 10, 30), ("main", 250 * GB, 0.01, 20))
    old_partial, young_partial = partial_download(hub, "org/served", 72), partial_download(hub, "org/served", 24)
    disk(monkeypatch, total=10**13, free=5 * 10**12)
    plan = plan_with(str(tmp_path / "config.yaml"), hub)
    going = deleted(plan)

    promise = says(policy, "not read for two weeks: goes, even a model's last revision")
    assert old["a"] in going and "org/old" in whole(plan), promise
    promise = says(policy, "then, least recently read first, until the cache fits; never a model's last revision")
    assert served["r1"] in going and recent["a"] not in going and served["main"] not in going, promise
    promise = says(policy, "partial downloads and orphans younger than two days stay")
    assert old_partial in going and young_partial not in going, promise


# ---------------------------------------------------------------------------------------------
# Kubernetes per node, Slurm


def test_the_node_daemonset_validates_holds_no_privilege_and_its_loop_runs(tmp_path):
    """Issue 22, point 3: hostPath caches, metrics for the node's exporter and a daily prune inside the pod."""
    import kubernetes_validate

    from hfcache.plan.settings import load_config

    docs = list(yaml.safe_load_all(open(example("kubernetes", "hfcache-node-daemonset.yaml"))))
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    config_map, daemonset = docs
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert not any(pod.get(k) for k in ("hostPID", "hostNetwork", "hostIPC"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"] and not security.get("privileged")
    assert container["resources"]["limits"]["memory"] and container["resources"]["limits"]["cpu"]
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(config_map["data"]["config.yaml"])
    min_free = load_config(str(policy_file)).defaults.min_free
    assert min_free is not None and min_free.percent is not None and min_free.percent > 10  # above the kubelet's eviction

    # The container's loop, one round, its volumes mapped into a temporary folder as the kubelet mounts them.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: str(tmp_path / m["name"]) for m in container["volumeMounts"]}
    for mount in container["volumeMounts"]:
        os.makedirs(mounts[mount["mountPath"]])
        if "configMap" in volumes[mount["name"]]:
            for name, text in config_map["data"].items():
                open(os.path.join(mounts[mount["mountPath"]], name), "w").write(text)

    where = re.compile("(?<![\\w/])(" + "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True)) + ')(?=[/"\\s]|$)')

    def mapped(value: str) -> str:  # in one pass: a mapped path is never mapped again
        return where.sub(lambda m: mounts[m.group(1)], value)

    env = {"PATH": f"{BINDIR}:/usr/bin:/bin", "NODE_NAME": "gpu-7", "HFCACHE_ROUNDS": "1"}
    env.update({e["name"]: mapped(e["value"]) for e in container["env"] if "value" in e})
    root = os.path.join(env["HF_HOME"], "hub")
    real_cache(root, aged_days=30)
    before = revisions(root)
    script = mapped(container["args"][0])
    listed = yaml.safe_load(config_map["data"]["models.yaml"])["models"]
    with FakeHub() as hub:  # the hub the node's models come from (HF_ENDPOINT: a mirror, here 127.0.0.1)
        for entry in listed:
            hub.push(entry["id"], {"config.json": b"{}", "model.safetensors": b"w" * 2000, "vocab.txt": b"a\nb\n", "x.bin": b"x"})
        env["HF_ENDPOINT"] = hub.endpoint
        done = subprocess.run([*container["command"], script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    found = prometheus(open(os.path.join(mounts["/textfile"], "hfcache-gpu-7.prom")).read())
    assert [labels["root"] for labels, _ in found["hfcache_cache_size_bytes"]] == [root]
    now = revisions(root)
    assert not before <= now  # the daily prune ran: 30 days unread is over max_age 14d
    for entry in listed:  # the node's models fetched (only the files included) and kept
        snapshots = os.path.join(root, "models--" + entry["id"].replace("/", "--"), "snapshots")
        (commit,) = os.listdir(snapshots)
        assert commit in now and sorted(os.listdir(os.path.join(snapshots, commit))) == [
            "config.json",
            "model.safetensors",
            "vocab.txt",
        ]
    desired = json.load(open(os.path.join(mounts["/var/lib/hfcache"], "desired.json")))
    assert [r["id"] for m in desired["manifests"].values() for r in m["revisions"]] == [e["id"] for e in listed]
    assert read_log(os.path.join(mounts["/var/lib/hfcache"], "audit.log"))
    assert history_samples(os.path.join(mounts["/var/lib/hfcache"], "state.db"), root) >= 2  # metrics and prune


def test_the_slurm_epilog_prunes_and_never_drains_the_node_for_a_busy_cache(tmp_path, need_tool):
    bash = need_tool("bash")
    text = open(example("slurm", "hfcache-epilog.sh")).read()
    paths = {"/etc/hfcache": str(tmp_path / "etc"), "/var/lib/hfcache": str(tmp_path / "state")}
    for old, new in paths.items():
        text = text.replace(old, new)
        os.makedirs(new)
    script = tmp_path / "epilog.sh"
    script.write_text(text)
    shutil.copy(example("policies", "laptop.yaml"), os.path.join(paths["/etc/hfcache"], "config.yaml"))
    env = {"PATH": "/usr/bin:/bin", "HFCACHE": HFCACHE, "HF_HOME": str(tmp_path / "hf"), "SLURM_JOB_ID": "4242"}
    root = os.path.join(env["HF_HOME"], "hub")
    real_cache(root, aged_days=90)
    before = revisions(root)
    # Another prune holds the cache past the epilog's --lock-wait: busy, nothing deleted, and exit 0 (no drain).
    quick = text.replace("--lock-wait=30s", "--lock-wait=1s")
    script.write_text(quick)
    with PruneLocks({root: os.path.join(root, ".locks", "hfcache-prune.lock")}, 0):
        done = subprocess.run([bash, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and revisions(root) == before, done.stderr
    script.write_text(text)
    done = subprocess.run([bash, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and revisions(root) < before, done.stderr
    # A broken policy file drains the node (exit 2): an operator's signal, the reason on stderr.
    open(os.path.join(paths["/etc/hfcache"], "config.yaml"), "w").write("keep: two\n")
    done = subprocess.run([bash, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "keep" in done.stderr
