"""Bad inputs across the package, and docs/errors.md: every case of its table points at a test that exists.

Most cases are tested next to the code they check (tests/data, tests/transforms, tests/inferers, ...); this module
holds the cases of the bundle keys checked at start-up, and the check of the table itself.
"""

from __future__ import annotations

import re
import unittest
from pathlib import Path

from parameterized import parameterized

from monai_dwp.bundle_utils import InvalidKeyError, check_keys

REPO = Path(__file__).resolve().parents[1]
ERRORS_MD = REPO / "docs" / "errors.md"


class TestBundleKeys(unittest.TestCase):
    @parameterized.expand(
        [
            ("zero_epochs", {"epochs": 0}, r"^--epochs must be ≥ 1, got 0\. Fix the override or the config value of "
                                           r"'epochs'\.$"),
            ("negative_epochs", {"epochs": -3}, r"^--epochs must be ≥ 1, got -3\. Fix the override"),
            ("fractional_epochs", {"epochs": 2.5}, r"^--epochs must be an integer, got 2\.5 \(float\)\. Fix"),
            ("zero_mc_samples", {"mc_samples": 0}, r"^--mc_samples must be ≥ 1, got 0\. Fix the override or the "
                                                   r"config value of 'mc_samples'\.$"),
            ("zero_num_train_cases", {"num_train_cases": 0}, r"^--num_train_cases must be ≥ 1, got 0\."),
            ("zero_batch_size", {"batch_size": 0}, r"^--batch_size must be ≥ 1, got 0\."),
        ]
    )
    def test_rejected_at_start_up(self, _, values, pattern):
        with self.assertRaisesRegex(InvalidKeyError, pattern):
            check_keys(**values)


def _table_rows() -> list[tuple[str, str, str]]:
    rows = []
    for line in ERRORS_MD.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) == 5 and cells[0].isdigit():
            rows.append((cells[1], cells[2], cells[4]))  # case, message, tests
    return rows


class TestErrorsTable(unittest.TestCase):
    def test_at_least_30_cases(self):
        rows = _table_rows()
        self.assertGreaterEqual(len(rows), 30)
        self.assertEqual(len({r[0] for r in rows}), len(rows), "a case is listed twice")

    def test_every_listed_test_exists(self):
        for case, _, tests in _table_rows():
            ids = re.findall(r"`([^`]+)`", tests)
            self.assertTrue(ids, f"case {case!r} lists no test")
            for test_id in ids:
                path, cls, method = test_id.split("::")
                source = (REPO / path).read_text(encoding="utf-8")
                self.assertIn(f"class {cls}(", source, test_id)
                base = re.sub(r"_\d+(_\w+)?$", "", method)  # parameterized.expand: test_x_03_name -> test_x
                self.assertTrue(f"def {method}(" in source or f"def {base}(" in source, test_id)


if __name__ == "__main__":
    unittest.main()
