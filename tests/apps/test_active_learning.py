"""``benchmarks/active_learning.py --scale tiny``: the simulated labelling loop with MONAI Label's classes, end to end.

Runs in the separate MONAI Label environment (``bash .ci/monailabel.sh``). Where ``monailabel`` is not importable
the module is skipped, unless ``MONAI_DWP_REQUIRE_MONAILABEL=1`` (set by .ci/monailabel.sh), which turns the skip
into a failure.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

if importlib.util.find_spec("monailabel") is None:
    if os.environ.get("MONAI_DWP_REQUIRE_MONAILABEL") == "1":
        raise ImportError("MONAI_DWP_REQUIRE_MONAILABEL=1 but monailabel is not importable; run bash .ci/monailabel.sh")
    raise unittest.SkipTest("monailabel is not installed here; bash .ci/monailabel.sh runs these tests in its own env")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "active_learning.py"
STRATEGIES = ("mutual_information", "epistemic", "random")


def _benchmark():
    """The benchmark module (imported from ``benchmarks/``)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import active_learning

    return active_learning


def _ranked(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=scores.get, reverse=True)


class TestTinyScale(unittest.TestCase):
    def test_runs_resumes_and_writes_its_outputs(self):
        from monai_dwp.data import validate_decathlon

        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            work, results = root / "work", root / "results"
            cmd = [sys.executable, str(SCRIPT), "--scale", "tiny", "--device", "cpu", "--work_dir", str(work),
                   "--results", str(results), "--workers", "3"]
            env = dict(os.environ, PYTHONWARNINGS="ignore")
            proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
            self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-3000:])

            csv_path = results / "active_learning.csv"
            rows = list(csv.DictReader(csv_path.open()))
            self.assertEqual(sorted((r["strategy"], r["seed"], r["round"], r["num_labelled"]) for r in rows),
                             sorted((s, "0", str(k), str(3 + 2 * k)) for s in STRATEGIES for k in (0, 1)))
            # the seed's split as the bundle makes it: 1 validation case, the rest the pool in the seed's order
            split = validate_decathlon(work / "data" / "tumour", modality="FLAIR", num_val_cases=1, seed=0)
            pool = [Path(c["image"]).name.split(".")[0] for c in split["train"]]
            initial = pool[:3]
            first = {r["strategy"]: r for r in rows if r["round"] == "0"}
            then = {r["strategy"]: r for r in rows if r["round"] == "1"}
            for s in STRATEGIES:
                # round 0: the same three studies and one shared run for every strategy
                self.assertEqual(first[s]["labelled"].split(";"), initial)
                self.assertEqual(first[s]["run"], "initial_n3_seed0")
                self.assertEqual(first[s]["test_dice"], first["random"]["test_dice"])
                # round 1: two new studies of the pool on top
                picked = then[s]["picked"].split(";")
                self.assertEqual(len(set(picked)), 2)
                self.assertTrue(set(picked) <= set(pool) - set(initial), picked)
                self.assertEqual(then[s]["labelled"].split(";"), initial + picked)
                self.assertEqual(then[s]["run"], f"{s}_n5_seed0")
                for r in (first[s], then[s]):
                    self.assertEqual((r["scale"], r["method"], r["steps"]), ("tiny", "gaussian_prior", "2"))
                    self.assertTrue(0.0 <= float(r["test_dice"]) <= 1.0, r)
                    self.assertTrue(0.0 <= float(r["test_pooled_dice"]) <= 1.0, r)
                # the bundle trained on exactly the labelled studies: its split came from the run's datalist.json
                run = work / "runs" / then[s]["run"]
                datalist = json.loads((run / "datalist.json").read_text())["split"]
                self.assertEqual([Path(c["image"]).name.split(".")[0] for c in datalist["train"]], initial + picked)
                self.assertEqual(datalist["val"], split["val"])
                self.assertEqual(datalist["test"], split["test"][:2])
                log = (work / "logs" / f"{then[s]['run']}_train.log").read_text()
                self.assertIn(f"--split '%{run / 'datalist.json'}#split'", log)
                self.assertIn("over 5 volumes", log)  # the ELBO's data: the 5 labelled studies
                selection = json.loads((run / "selection.json").read_text())
                self.assertEqual(selection["picked"], picked)
                self.assertEqual(selection["labelled_before"], initial)
            # the scored strategies picked the two highest scores of every unlabeled study; random scored nothing
            for s in ("mutual_information", "epistemic"):
                selection = json.loads((work / "runs" / then[s]["run"] / "selection.json").read_text())
                self.assertEqual(set(selection["scores"]), set(pool) - set(initial))
                self.assertTrue(all(v >= 0.0 for v in selection["scores"].values()), selection)
                # the two highest scores (stock epistemic scores tie when no draw segments anything: any of them)
                scores, picked = selection["scores"], then[s]["picked"].split(";")
                self.assertGreaterEqual(min(scores[i] for i in picked),
                                        max(v for i, v in scores.items() if i not in picked), selection)
                if s == "mutual_information":
                    self.assertEqual(picked, _ranked(scores)[:2])
                self.assertEqual(int(then[s]["scored_studies"]), len(pool) - 3)
                self.assertGreater(float(then[s]["scoring_seconds_per_study"]), 0.0)
            self.assertEqual((then["random"]["scored_studies"], float(then["random"]["scoring_seconds"])), ("0", 0.0))

            md = (results / "active_learning.md").read_text()
            self.assertIn("| strategy | 3 | 5 |", md)
            for s in STRATEGIES:
                self.assertRegex(md, rf"\| `{s}` \| [0-9.]+ ± [0-9.]+ \(1\) \| (\*\*)?[0-9.]+ ± [0-9.]+ "
                                     r"\(1\)(\*\*)? \|")
            self.assertRegex(md, r"\| `mutual_information` − `random` \| [+-][0-9.]+ \(1 seed\) \| [+-][0-9.]+ "
                                 r"\(1 seed\) \|")
            self.assertRegex(md, r"\| `mutual_information` − `epistemic` \| [+-][0-9.]+ \(1 seed\) \|")
            self.assertRegex(md, r"\| `mutual_information` \| `MutualInformationScoring` \(one call\) \| "
                                 r"2 \(one call\) \| [0-9.]+ ± [0-9.]+ \(1\) \| 4 \|")
            self.assertRegex(md, r"\| `epistemic` \| `EpistemicScoring` \(epistemic_v2\) \| 2 \(calls of one draw\) ")
            self.assertIn("PyTorch", md)  # the machine
            self.assertGreater((results / "active_learning.png").stat().st_size, 5_000)

            # a second call (in this process: no second start-up) finds every row and runs, scores and adds nothing
            before = csv_path.read_bytes()
            selections = {s: (work / "runs" / then[s]["run"] / "selection.json").stat().st_mtime_ns
                          for s in STRATEGIES}
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
                md_path = _benchmark().main(scale="tiny", device="cpu", work_dir=str(work), results=str(results),
                                            workers=3)
            self.assertEqual(md_path, results / "active_learning.md")
            self.assertNotIn("[run ]", printed.getvalue())
            self.assertEqual(csv_path.read_bytes(), before)
            self.assertEqual({s: (work / "runs" / then[s]["run"] / "selection.json").stat().st_mtime_ns
                              for s in STRATEGIES}, selections)


class TestFlags(unittest.TestCase):
    def test_bad_flags_stop_with_the_fix(self):
        main = _benchmark().main
        with tempfile.TemporaryDirectory() as tmp:
            for kwargs, message in (
                ({"scale": "huge"}, r"--scale must be one of \['cpu', 'tiny'\], got 'huge'"),
                ({"seeds": "0,x"}, r"--seeds must be comma-separated integers >= 0, e.g. --seeds 0,1,2"),
                ({"seeds": (1, 1)}, r"--seeds must list distinct seeds"),
                ({"workers": 0}, r"--workers must be an integer >= 1"),
                ({"method": "random_init"}, r"--method must be a Bayesian method .* got 'random_init'"),
                ({"device": "tpu"}, r"--device must be cpu or cuda, got 'tpu'"),
                ({"work_dir": f"{tmp}/a#b"}, r"--work_dir must not contain '#'"),
            ):
                with self.subTest(**kwargs), self.assertRaisesRegex(SystemExit, message):
                    main(**{"scale": "tiny", "work_dir": tmp, **kwargs})


class TestMarkdown(unittest.TestCase):
    def test_intervals_over_seeds(self):
        module = _benchmark()
        scale = module.SCALES["cpu"]
        rows = []
        for seed in (0, 1, 2):
            for s, gain in (("mutual_information", 0.05), ("epistemic", 0.02), ("random", 0.0)):
                for k, n in enumerate(scale.sizes[:3]):
                    dice = 0.5 + 0.02 * n + (gain + 0.01 * seed if k else 0.0)
                    rows.append({**{f: "" for f in module.FIELDS}, "strategy": s, "seed": str(seed), "round": str(k),
                                 "num_labelled": str(n), "method": "gaussian_prior", "run": f"{s}_n{n}_seed{seed}",
                                 "test_dice": str(dice), "test_pooled_dice": str(dice), "train_seconds": "10",
                                 "eval_seconds": "5", "scoring_mc_samples": "3", "epistemic_simulation_size": "3",
                                 "scored_studies": "0" if s == "random" or not k else "17",
                                 "scoring_seconds": "0" if s == "random" or not k else "34",
                                 "scoring_seconds_per_study": "0" if s == "random" or not k else "2.0"})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "active_learning.md"
            module.write_markdown(rows, "cpu", scale, path, "a machine")
            module.write_figure(rows, Path(tmp) / "active_learning.png")
            md = path.read_text()
            self.assertIn("| strategy | 3 | 5 | 7 |", md)
            # round 0 is shared: no best; later the highest mean in bold
            self.assertIn("| `mutual_information` | 0.560 ± 0.000 (3) | **0.660 ± 0.008 (3)** |", md)
            # the same gain every seed and round: a zero-width interval around it
            self.assertIn("| `mutual_information` − `random` | +0.050 [+0.050, +0.050] | +0.050 [+0.050, +0.050] "
                          "| +0.050 [+0.050, +0.050] |", md)
            self.assertIn("| `mutual_information` − `epistemic` | +0.030 [+0.030, +0.030] |", md)
            self.assertIn("| 2.00 ± 0.00 (6) | 102 | 204 |", md)
            self.assertIn("a machine", md)
            self.assertGreater((Path(tmp) / "active_learning.png").stat().st_size, 5_000)


if __name__ == "__main__":
    unittest.main()
