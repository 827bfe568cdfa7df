"""`make test` runs two pytest-xdist workers and keeps the tests that share an engine on one of them, which
stops that engine after the last of them (tests/conftest.py). Checked on a tiny suite, so that a pytest or
xdist release that drops the grouping (pytest-dev/pytest-xdist#1386: pytest 9.2) fails here instead of
quietly starting every engine twice."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TINY = """import pytest
from pathlib import Path

LOG = Path(__file__).with_name("engine.log")

def note(line):
    with LOG.open("a") as log:
        log.write(line + "\\n")

@pytest.fixture(scope="session")
def serving():
    note("start")
    yield "an engine"
    note("stop")

@pytest.mark.parametrize("i", range(6))
def test_shares_the_engine(serving, i):
    note("shares")

@pytest.fixture(scope="session")
def http_serving():
    note("standin-start")
    yield "a stand-in"
    note("standin-stop")

class TestOnTheStandIn:
    @pytest.fixture
    def serving(self, http_serving):  # overrides the engine, as tests/feedback/test_api.py does
        return http_serving

    def test_uses_the_stand_in(self, serving):
        note("standin")

@pytest.mark.parametrize("i", range(6))
def test_alone(i):
    note("alone")

def test_shares_it_again(serving):
    note("shares")

def test_last():
    note("last")
"""


def run_tiny(tmp_path: Path, *flags: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_collection_modifyitems, pytest_runtest_teardown  # noqa: F401\n")
    (tmp_path / "test_tiny.py").write_text(TINY)
    done = subprocess.run([sys.executable, "-m", "pytest", *flags, "-v", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, (tmp_path / "engine.log").read_text().split()


def test_tests_that_share_an_engine_run_on_one_xdist_worker_which_stops_it_after_them(tmp_path: Path) -> None:
    done, log = run_tiny(tmp_path, "-n", "2", "--dist", "loadgroup")
    ran = re.findall(r"\[(gw\d)\].*PASSED .*::(test_\w+(?:\[\d\])?)(@[\w-]+)?", done.stdout)
    assert len(ran) == 15, done.stdout[-3000:]
    shared = [(worker, group) for worker, name, group in ran if name.startswith("test_shares")]
    assert len(shared) == 7 and len(set(shared)) == 1 and shared[0][1] == "@serving-engine", shared
    # the group's seven tests came as one block: its engine started once and stopped once
    assert log.count("start") == 1 and log.count("stop") == 1 and log.count("shares") == 7, log
    assert log.count("standin-start") == 1 and log.count("standin-stop") == 1, log


def test_one_process_stops_an_engine_after_the_last_test_that_asks_for_it(tmp_path: Path) -> None:
    _, log = run_tiny(tmp_path, "-p", "no:xdist")
    # the group's tests are not together in collection order: the engine stays between them (also past the stand-in's
    # group, whose tests override `serving`), and stops before the end
    assert log == ["start", *["shares"] * 6, "standin-start", "standin", "standin-stop", *["alone"] * 6, "shares", "stop",
                   "last"], log
