"""The check of ``conftest.py``: a test not marked slow whose call takes over 5 s fails, asking to mark it."""

from __future__ import annotations

import pytest
from helpers import SLOW_SECONDS, SlowCheck

INNER_TESTS = """
import time

import pytest


@pytest.fixture
def slow_fixture():
    time.sleep(0.4)  # set-up is not measured


def test_quick(slow_fixture):
    pass


def test_sleepy():
    time.sleep(0.4)


@pytest.mark.slow
def test_marked():
    time.sleep(0.4)


def test_broken():
    time.sleep(0.4)
    assert 1 == 2
"""


def test_an_unmarked_test_over_the_limit_fails_and_says_to_mark_it(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n")
    pytester.makepyfile(test_inner=INNER_TESTS)
    result = pytester.inline_run("-p", "no:cacheprovider", plugins=[SlowCheck(seconds=0.2, enforce=True)])
    passed, _, failed = result.listoutcomes()
    assert sorted(r.nodeid.split("::")[1] for r in passed) == ["test_marked", "test_quick"]
    assert sorted(r.nodeid.split("::")[1] for r in failed) == ["test_broken", "test_sleepy"]
    (sleepy,) = [r for r in failed if r.nodeid.endswith("test_sleepy")]
    assert "over the 0.2 s allowed to a test not marked slow: mark it @pytest.mark.slow" in str(sleepy.longrepr)
    (broken,) = [r for r in failed if r.nodeid.endswith("test_broken")]
    assert "assert 1 == 2" in str(broken.longrepr)  # its own failure, not the check's


def test_the_limit_is_5_s() -> None:
    assert SLOW_SECONDS == 5.0 and SlowCheck().seconds == 5.0


def test_the_check_is_enforced_in_the_fast_tier_and_reported_in_a_full_run(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n")
    pytester.makepyfile(test_inner=INNER_TESTS)
    fast = pytester.inline_run("-p", "no:cacheprovider", "-m", "not slow", plugins=[SlowCheck(seconds=0.2)])
    assert sorted(r.nodeid.split("::")[1] for r in fast.listoutcomes()[2]) == ["test_broken", "test_sleepy"]
    full = SlowCheck(seconds=0.2)
    result = pytester.inline_run("-p", "no:cacheprovider", plugins=[full])
    assert sorted(r.nodeid.split("::")[1] for r in result.listoutcomes()[2]) == ["test_broken"]
    assert len(full.reported) == 1 and "test_sleepy took" in full.reported[0]
