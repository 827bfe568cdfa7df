"""`make test` runs two pytest-xdist workers and keeps the tests that share an engine on one of them
(tests/conftest.py). Checked on a tiny suite, so that a pytest or xdist release that drops the grouping
(pytest-dev/pytest-xdist#1386: pytest 9.2) fails here instead of quietly starting every engine twice."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TINY = """import pytest

@pytest.fixture
def serving():
    return "an engine"

@pytest.mark.parametrize("i", range(6))
def test_shares_the_engine(serving, i):
    pass

@pytest.mark.parametrize("i", range(6))
def test_alone(i):
    pass
"""


def test_tests_that_share_an_engine_run_on_one_xdist_worker(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n")
    (tmp_path / "test_tiny.py").write_text(TINY)
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran = re.findall(r"\[(gw\d)\].*PASSED .*::(test_\w+\[\d\])(@[\w-]+)?", done.stdout)
    assert len(ran) == 12, done.stdout[-3000:]
    shared = [(worker, group) for worker, name, group in ran if name.startswith("test_shares")]
    assert len(shared) == 6 and len(set(shared)) == 1 and shared[0][1] == "@serving-engine", shared
