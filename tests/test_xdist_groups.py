"""``make test`` relies on ``--dist loadgroup``: the tests that share an expensive set-up (the quick chain, the
bundles' hand-offs) carry one ``xdist_group`` and must run in one worker, or every worker redoes the set-up. Some
pytest / pytest-xdist pairs drop the grouping without a word (pytest-dev/pytest-xdist#1386); this checks the pair
installed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

GROUPED = '''
import os
import pytest

pytestmark = pytest.mark.xdist_group("shared")


@pytest.mark.parametrize("i", range(6))
def test_worker(i):
    with open(os.environ["WORKERS_LOG"], "a") as f:
        f.write(os.environ.get("PYTEST_XDIST_WORKER", "none") + "\\n")
'''


class TestLoadGroup(unittest.TestCase):
    def test_a_group_runs_in_one_worker(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for name in ("test_a.py", "test_b.py"):
                (root / name).write_text(GROUPED)
            log = root / "workers.log"
            # a run of its own, also when this test itself runs in an xdist worker
            env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
            env.update(WORKERS_LOG=str(log), PYTHONWARNINGS="ignore")
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup",
                 "--rootdir", str(root), str(root)],
                cwd=root, env=env, capture_output=True, text=True, timeout=120,
            )
            self.assertEqual(proc.returncode, 0, proc.stdout[-2000:] + proc.stderr[-2000:])
            workers = log.read_text().split()
            self.assertEqual(len(workers), 12)
            self.assertEqual(len(set(workers)), 1, f"one xdist_group ran in workers {sorted(set(workers))}: "
                             "pin a pytest / pytest-xdist pair that keeps --dist loadgroup (constraints.txt)")
