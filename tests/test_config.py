"""Policy files: the format, precedence, where they are found, errors naming file, line and key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hfcache.caches.registry import registry
from hfcache.errors import ConfigError
from hfcache.model import Inventory
from hfcache.plan.build import make_plan
from hfcache.plan.policyfile import parse_config
from hfcache.plan.settings import SYSTEM_CONFIG, MinFree, Settings, find_config, load_config
from hfcache.prune import build_policy
from tests.support import DAY, NOW, THREE

EXAMPLES = sorted((Path(__file__).parent.parent / "examples" / "policies").glob("*.yaml"))
KINDS = tuple(registry().kinds)


def test_the_examples_exist():
    assert {p.stem for p in EXAMPLES} == {"laptop", "gpu-server", "ci-runner"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_policy_is_valid_and_plans(path):
    policy = load_config(str(path), kinds=KINDS)
    assert not policy.is_empty
    plan = make_plan(Inventory((THREE,), NOW), policy, now=NOW)
    assert all(u.reasons for u in (*plan.delete, *plan.keep))


def test_gpu_server_example_means_what_it_says():
    policy = load_config(str(next(p for p in EXAMPLES if p.stem == "gpu-server")), kinds=KINDS)
    assert policy.protected_by("huggingface", "meta-llama/Llama-3-8B") == "meta-llama/*"
    assert policy.protected_by("huggingface", "org/core-embedder") == "org/core-*"
    assert policy.protected_by("huggingface", "org/other") is None
    other = policy.for_item("huggingface", "org/other")
    assert (other.max_age, other.keep) == (7 * DAY, None)  # no keep rule: it would stop max_age and the quota
    assert policy.for_cache("huggingface").max_size == 200 * 10**9
    assert policy.for_cache("huggingface").min_free == MinFree(percent=10.0)
    assert policy.for_item("torch", "resnet18").max_age == 30 * DAY
    assert policy.for_cache("torch").junk_grace == 48 * 3600


POLICY = """\
version: 1
keep: 3
max_age: 90d
models:
  "org/*": {keep: 2}
caches:
  huggingface:
    max_age: 30d
    models:
      "org/special": {keep: 1}
"""


@pytest.mark.parametrize(
    ("kind", "item", "overrides", "expected"),
    [
        ("torch", "x", Settings(), (3, 90 * DAY)),  # top level
        ("huggingface", "x", Settings(), (3, 30 * DAY)),  # caches.<kind> over the top level
        ("huggingface", "org/a", Settings(), (2, 30 * DAY)),  # a models glob over the kind
        ("huggingface", "org/special", Settings(), (1, 30 * DAY)),  # the kind's models glob over the top-level models
        ("huggingface", "org/special", Settings(keep=5, max_age=DAY), (5, DAY)),  # the command line over everything
    ],
)
def test_precedence(kind, item, overrides, expected):
    policy = replace(parse_config(POLICY, "p.yaml", kinds=KINDS), overrides=overrides)
    settings = policy.for_item(kind, item)
    assert (settings.keep, settings.max_age) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("keep: two\n", "p.yaml:1: keep: expected a whole number, got 'two'"),
        ("keep: 0\n", "p.yaml:1: keep: keep must be at least 1"),
        ("max_age: 30\n", "p.yaml:1: max_age: invalid duration '30'"),
        ("version: 1\nmax_size: 5XB\n", "p.yaml:2: max_size: invalid size '5XB'"),
        ("min_free: 120%\n", "p.yaml:1: min_free: invalid free-space target '120%'"),
        ("kep: 2\n", "p.yaml:1: kep: unknown setting"),
        ("caches:\n  torch:\n    keep: x\n", "p.yaml:3: caches.torch.keep: expected a whole number"),
        ("caches:\n  tensorflow: {keep: 1}\n", "p.yaml:2: caches.tensorflow: unknown cache kind"),
        ("models:\n  'a/*': {max_size: 1GB}\n", "p.yaml:2: models.a/*.max_size: max_size is set per cache, not per model"),
        ("junk: maybe\n", "p.yaml:1: junk: expected true or false"),
        ("keep_per: patch\n", "p.yaml:1: keep_per: keep_per must be one of major, minor"),
        ("protect: meta-llama/*\n", "p.yaml:1: protect: expected a list of model-id globs"),
        ("version: 2\n", "p.yaml:1: version: only version 1 is understood"),
        ("keep: [1\n", "p.yaml:2: not valid YAML"),
        ("- keep\n", "p.yaml:1: : expected a mapping"),
    ],
)
def test_errors_name_the_file_the_line_and_the_key(text, message):
    with pytest.raises(ConfigError) as err:
        parse_config(text, "p.yaml", kinds=KINDS)
    assert str(err.value).startswith(message), str(err.value)
    assert err.value.exit_code == 2


def test_an_empty_file_is_an_empty_policy_and_refused():
    assert parse_config("", "p.yaml").is_empty
    with pytest.raises(Exception, match="no policy given"):
        build_policy(Settings(), use_config=False)


def test_where_the_policy_file_is_found(tmp_path, monkeypatch):
    user = tmp_path / "xdg" / "hfcache" / "config.yaml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("hfcache.plan.settings.SYSTEM_CONFIG", str(tmp_path / "etc.yaml"))
    assert find_config(None, env={}) is None
    (tmp_path / "etc.yaml").write_text("keep: 1\n")
    assert find_config(None, env={}) == str(tmp_path / "etc.yaml")
    user.parent.mkdir(parents=True)
    user.write_text("keep: 2\n")
    assert find_config(None, env={}) == str(user)
    env_file = tmp_path / "env.yaml"
    env_file.write_text("keep: 3\n")
    assert find_config(None, env={"HFCACHE_CONFIG": str(env_file)}) == str(env_file)
    assert find_config(str(user), env={"HFCACHE_CONFIG": str(env_file)}) == str(user)
    with pytest.raises(ConfigError, match="policy file not found"):
        find_config(str(tmp_path / "missing.yaml"), env={})
    assert SYSTEM_CONFIG.endswith("/etc/hfcache/config.yaml")


def test_command_line_protect_adds_to_the_files(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("keep: 1\nprotect: ['a/*']\n")
    policy = build_policy(Settings(), protect=("b/*",), config=str(f))
    assert policy.protect == ("a/*", "b/*")
    assert build_policy(Settings(keep=1), protect=("b/*",), config=str(f), use_config=False).protect == ("b/*",)
