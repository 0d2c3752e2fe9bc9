"""The suite hands its longest files out first (tests/conftest.py): every file it names must exist, or a renamed
file would quietly fall back to its collection place and the parallel run's tail would grow again."""

from __future__ import annotations

import pytest

from tests.conftest import LONGEST_FIRST, ROOT


def test_the_longest_files_named_first_exist_and_are_named_once():
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
    missing = [name for name in LONGEST_FIRST if not (ROOT / name).is_file()]
    assert not missing, f"tests/conftest.py LONGEST_FIRST names files that are gone: {missing}"


def test_pytest_xdist_keeps_the_order_it_is_given(pytestconfig):
    """pytest-xdist's --loadscope-reorder (on by default) would put the files with the most tests first and these
    long files, of a few tests each, last."""
    if not pytestconfig.pluginmanager.hasplugin("xdist"):
        pytest.skip("pytest-xdist is not installed")
    assert getattr(pytestconfig.option, "loadscopereorder", False) is False
