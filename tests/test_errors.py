"""Each error class has its own documented exit code."""

from __future__ import annotations

from pathlib import Path

from hfcache.errors import ERROR_CLASSES, EXIT_INTERNAL, EXIT_INTERRUPTED, HfcacheError


def test_codes_are_unique_and_in_range():
    # A subclass of UsageError (a bad policy file, a bad plan file, no --yes) is a usage error: code 2 too.
    codes = [cls.exit_code for cls in ERROR_CLASSES if cls.exit_code != cls.__mro__[1].__dict__.get("exit_code")]
    assert len(set(codes)) == len(codes)
    assert all(c == 2 or 3 <= c <= 99 for c in codes)
    assert EXIT_INTERNAL not in codes and EXIT_INTERRUPTED not in codes


def test_every_error_class_is_registered():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    assert set(subclasses(HfcacheError)) == set(ERROR_CLASSES)


def test_codes_are_in_the_man_page():
    page = (Path(__file__).parent.parent / "man" / "hfcache.1").read_text()
    exit_status = page.split(".SH EXIT STATUS", 1)[1].split(".SH ", 1)[0]
    for code in [0, EXIT_INTERNAL, EXIT_INTERRUPTED] + [cls.exit_code for cls in ERROR_CLASSES]:
        assert f"\n.B {code}\n" in exit_status or f"\n.TP\n.B {code}\n" in exit_status, code
