"""The operations examples (issue 6): each is validated as its tool would, then run against a real cache.

Every example's command runs as the example writes it, in the environment its scheduler
gives (cron's minimal one, a systemd unit's, a container's, a CI step's shell), with only
its paths mapped into a temporary folder (what a mount or a copy into place would do) and
hfcache found where the example says to put it. Each run is compared with a dry run of the
same command made just before: exactly the planned units go, the audit log records them,
and huggingface_hub still reads the cache cleanly and loads every kept revision offline.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import yaml
from huggingface_hub import constants, hf_hub_download, scan_cache_dir
from prometheus_client.parser import text_string_to_metric_families

from hfcache import errors
from hfcache.execute.audit import read_log
from hfcache.execute.prune_lock import PruneLocks
from tests.fakehub import FakeHub
from tests.support import age_everything, build_rich_cache, markdown_tables

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


# ---------------------------------------------------------------------------------------------
# systemd


def read_unit(path: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",), comment_prefixes=("#", ";"))
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(path)
    return unit


def test_systemd_units_verify_and_the_service_runs(tmp_path, monkeypatch, need_tool):
    service_file, timer_file = example("systemd", "hfcache-prune.service"), example("systemd", "hfcache-prune.timer")
    service, timer = read_unit(service_file), read_unit(timer_file)
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["Nice"] == "19" and service["Service"]["IOSchedulingClass"] == "idle"
    assert timer["Timer"]["RandomizedDelaySec"] and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"

    exec_start, exec_post = service["Service"]["ExecStart"], service["Service"]["ExecStartPost"]
    installed = shlex.split(exec_start)[0]
    analyze = need_tool("systemd-analyze")  # Debian's systemd: the units as systemd itself reads them
    units = tmp_path / "units"
    units.mkdir()
    for src in (service_file, timer_file):
        text = open(src).read().replace(installed, HFCACHE)
        (units / os.path.basename(src)).write_text(text)
    verify = subprocess.run(  # the man pages are checked by test_docs, not installed here
        [analyze, "verify", "--man=no", str(units / "hfcache-prune.service"), str(units / "hfcache-prune.timer")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    calendar = subprocess.run([analyze, "calendar", timer["Timer"]["OnCalendar"]], capture_output=True, text=True)
    assert calendar.returncode == 0 and "Next elapse" in calendar.stdout, calendar.stderr

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


def test_the_image_builds_from_what_the_dockerfile_copies(tmp_path):
    """The Dockerfile's COPY lines bring everything ``pip install`` needs (checked by building the wheel)."""
    project = os.path.dirname(EXAMPLES)
    context = tmp_path / "context"
    for line in open(example("kubernetes", "Dockerfile")):
        if line.startswith("COPY "):
            *sources, dest = line.split()[1:]
            for src in sources:
                target = context / dest.lstrip("/").rstrip("/") / (os.path.basename(src) if dest.endswith("/") else "")
                if os.path.isdir(os.path.join(project, src)):
                    shutil.copytree(os.path.join(project, src), target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(os.path.join(project, src), target)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path / "dist"), str(context / "src")],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    assert [p.name for p in (tmp_path / "dist").iterdir()][0].startswith("hfcache-")


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


def fake_installer(tmp_path, name: str) -> str:
    """A stand-in for the CI image's installer (pipx, pip): hfcache is already installed here."""
    bindir = tmp_path / "installers"
    bindir.mkdir(exist_ok=True)
    (bindir / name).write_text('#!/bin/sh\necho "$0 $*" >> "$(dirname "$0")/calls"\n')
    (bindir / name).chmod(0o755)
    return str(bindir)


def hub_size(root: str) -> int:
    return scan_cache_dir(root).size_on_disk


def test_github_actions_post_step_prunes_to_the_quota_and_writes_the_job_summary(tmp_path, monkeypatch):
    path = example("ci", "github-actions.yml")
    check_schema("vendor.github-workflows", path)
    workflow = yaml.safe_load(open(path))
    [job] = workflow["jobs"].values()
    steps = {s.get("name"): s for s in job["steps"]}
    install, prune = steps["Install hfcache"], steps["Prune the model cache"]
    assert install["if"] == prune["if"] == "always()" and prune["continue-on-error"] is True
    names = [s.get("name") for s in job["steps"]]
    assert names.index("Prune the model cache") > names.index("Restore the model cache")  # cache saved after it

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
    before = revisions(root)
    assert hub_size(root) > 10 * GB
    plan_command = shlex.split(re.search(r"(hfcache prune .*?--format markdown)", prune["run"].replace("\\\n", " ")).group(1))
    plan = dry_run_of([HFCACHE, *plan_command[1:]], env)
    for step in (install, prune):  # as the runner does: bash -e with pipefail
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], env=env, text=True)
        assert done.returncode == 0
    assert open(os.path.join(installers, "calls")).read().split()[1:] == ["install", "hfcache"]
    assert hub_size(root) <= 10 * GB
    text = summary.read_text()
    assert text.startswith("### Model cache housekeeping\n")
    [table] = markdown_tables(text)
    assert table[0] == ["KIND", "ID", "REVISION", "STATUS", "FREED", "WHY"]
    assert {r[1] for r in table[1:] if r[3] == "deleted"} == {u["id"] for u in plan["delete"] if u["what"] == "revision"}
    assert_did_exactly(plan, before, root, os.path.join(env["HOME"], ".local", "state", "hfcache", "audit.log"), monkeypatch)


def test_gitlab_after_script_prunes_to_the_quota_and_keeps_the_plan_as_an_artifact(tmp_path, monkeypatch):
    path = example("ci", "gitlab-ci.yml")
    check_schema("vendor.gitlab-ci", path)
    [job] = yaml.safe_load(open(path)).values()
    assert job["cache"]["when"] == "always" and job["artifacts"]["when"] == "always"

    project = tmp_path / "project"
    project.mkdir()
    variables = {k: v.replace("$CI_PROJECT_DIR", str(project)) for k, v in job["variables"].items()}
    assert os.path.relpath(variables["HF_HOME"], project) == job["cache"]["paths"][0]  # the cache GitLab saves
    root = os.path.join(variables["HF_HOME"], "hub")
    runner_cache(root)
    installers = fake_installer(tmp_path, "pip")
    env = {"HOME": str(tmp_path / "runner"), "PATH": f"{installers}:{BINDIR}:/usr/bin:/bin", "CI_PROJECT_DIR": str(project)}
    env.update(variables)
    before = revisions(root)
    command = next(line for line in job["after_script"] if line.startswith("hfcache prune"))
    plan = dry_run_of([HFCACHE, *shlex.split(command.split("|")[0])[1:]], env)
    for line in job["after_script"]:
        done = subprocess.run(["bash", "-eo", "pipefail", "-c", line], env=env, cwd=project, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert hub_size(root) <= 10 * GB
    [artifact] = job["artifacts"]["paths"]
    [table] = markdown_tables((project / artifact).read_text())
    assert {r[3] for r in table[1:]} == {"deleted"}
    assert_did_exactly(plan, before, root, os.path.join(env["HOME"], ".local", "state", "hfcache", "audit.log"), monkeypatch)
