"""The one version parser (CACHE-LAYOUTS.md section 8)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hfcache.caches.versions import group_versions, parse_version, split_version, version_key

# Name parts with digits but no version: letters glued to numbers, bare numbers, sizes.
_word = st.from_regex(r"[a-uw-z]{1,6}[0-9]{0,3}|[0-9]{1,4}|[0-9]{1,2}[bk]", fullmatch=True)


@given(st.lists(_word, min_size=1, max_size=5), st.sampled_from(["_", "-"]), st.sampled_from(["", ".h5", ".pth", ".npz"]))
def test_bare_numbers_inside_a_name_are_never_versions(parts, sep, ext):
    name = sep.join(parts) + ext
    assert split_version(name)[1] is None
    assert parse_version(name) is None


@given(st.lists(st.integers(0, 999), min_size=2, max_size=4), st.booleans())
def test_dotted_versions_round_trip_and_sort_numerically(numbers, with_v):
    text = ("v" if with_v else "") + ".".join(map(str, numbers))
    version = parse_version(text)
    assert version is not None and version_key(version).release[: len(numbers)] == tuple(numbers)
    assert split_version(f"model_{text}.h5") == ("model", version)


@given(st.integers(0, 10**6))
def test_integers_only_where_the_layout_says_so(n):
    assert parse_version(str(n)) is None
    assert parse_version(str(n), integers=True) == str(n)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v1.2.0", "1.2.0"),
        ("1.2.0", "1.2.0"),
        ("v2", "2"),
        ("2.0.0-rc.1", "2.0.0rc1"),
        ("1.4.0.post1", "1.4.0.post1"),
        ("main", None),
        ("master", None),
        ("refs_pr_1", None),
        ("8b", None),
        ("v", None),
        ("1.2.x", None),
    ],
)
def test_tags_and_refs(text, expected):
    assert parse_version(text) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pytorch_vision_v0.10.0", ("pytorch_vision", "0.10.0")),
        ("resnet50_v1.5-0676ba61.pth", ("resnet50", "1.5")),
        ("resnet50-0676ba61.pth", ("resnet50", None)),
        ("mobilenet_1_0_224_tf.h5", ("mobilenet_1_0_224_tf", None)),
        ("weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", ("weights_mobilenet_v3_large_224_1.0_float_no_top", "2")),
        ("efficientnetb0_notop.h5", ("efficientnetb0_notop", None)),
        ("llama-3-8b", ("llama-3-8b", None)),
    ],
)
def test_tokens_in_names(name, expected):
    assert split_version(name) == expected


def test_groups_need_identical_remainders():
    names = [
        "weights_mobilenet_v3_large_224_1.0_float_no_top.h5",
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
        "weights_mobilenet_v3_small_224_1.0_float.h5",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
    ]
    groups = group_versions(names)
    family = "weights_mobilenet_v3_large_224_1.0_float_no_top"
    assert groups[names[0]] == (family, None) and groups[names[1]] == (family, "2")
    assert groups[names[2]][0] is None and groups[names[3]][0] is None  # alone: no group, never mixed in
