"""Phantom generator: layout, shapes, affines, labels, documented ranges, determinism, contrasts, atomic writes."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np
from parameterized import parameterized

from monai_dwp.data import phantoms
from monai_dwp.data.phantoms import (
    MS_PHANTOM_RANGES,
    PHANTOM_LABELS,
    PHANTOM_MODALITIES,
    TUMOUR_PHANTOM_RANGES,
    generate_phantom_case,
    make_phantom_dataset,
    phantom_grid,
)

COARSE = 6.0  # mm: written datasets (32 x 32 x 32)
MEDIUM = 4.0  # mm: in-memory cases for volumes and contrasts (48 x 64 x 48)

TEST_GRIDS = [(2.0, (96, 112, 96)), (4.0, (48, 64, 48)), (6.0, (32, 32, 32))]

TEST_BAD_ARGS = [
    ({"disease": "flu"}, ValueError, r"disease must be one of \('ms', 'tumour'\), got 'flu'"),
    ({"spacing": 0.1}, ValueError, r"spacing must lie in \[0.5, 8.0\], got 0.1; millimetres, the default is 2.0 mm"),
    ({"spacing": "2"}, TypeError, r"spacing must be a number, got '2' \(str\); millimetres"),
    ({"num_cases": 0}, ValueError, r"num_cases must be ≥ 1, got 0"),
    ({"num_cases": 2.0}, TypeError, r"num_cases must be an integer, got 2.0 \(float\)"),
    ({"num_test": -1}, ValueError, r"num_test must be ≥ 0, got -1"),
    ({"seed": -3}, ValueError, r"seed must be ≥ 0, got -3"),
]


def _volume_ml(mask: np.ndarray, spacing: float) -> float:
    return float(mask.sum()) * spacing**3 / 1000.0


class TestPhantomDataset(unittest.TestCase):
    """Two small datasets written once (6 mm), plus a few in-memory cases at 4 mm."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        root = Path(cls._tmp.name)
        cls.json = {
            d: make_phantom_dataset(
                root / d, disease=d, num_cases=3, num_test=1, spacing=COARSE, seed=0, progress=False
            )
            for d in ("ms", "tumour")
        }
        cls.cases = {
            d: [generate_phantom_case(d, i, seed=0, spacing=MEDIUM) for i in range(3)] for d in ("ms", "tumour")
        }

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def _content(self, disease):
        return json.loads(self.json[disease].read_text())

    @parameterized.expand([("ms",), ("tumour",)])
    def test_layout(self, disease):
        content = self._content(disease)
        self.assertEqual(content["modality"], {"0": "T1", "1": "FLAIR"})
        self.assertEqual(content["labels"], PHANTOM_LABELS[disease])
        self.assertEqual((content["numTraining"], content["numTest"]), (3, 1))
        self.assertEqual(len(content["training"]), 3)
        self.assertEqual(
            content["test"],
            [{"image": f"./imagesTs/{disease}_ts_001.nii.gz", "label": f"./labelsTs/{disease}_ts_001.nii.gz"}],
        )
        root = self.json[disease].parent
        for entry in content["training"] + content["test"]:
            for key in ("image", "label"):
                self.assertTrue(entry[key].startswith("./"), entry[key])
                self.assertTrue((root / entry[key]).is_file(), entry[key])
        leftovers = [p.name for p in root.rglob(".*")]
        self.assertEqual(leftovers, [], "temporary files left behind")

    @parameterized.expand([("ms",), ("tumour",)])
    def test_files_shapes_and_affines(self, disease):
        root = self.json[disease].parent
        entry = self._content(disease)["training"][0]
        image, label = nib.load(root / entry["image"]), nib.load(root / entry["label"])
        self.assertEqual(image.shape, (32, 32, 32, 2))  # MSD Task01 style: one 4D file, channel last
        self.assertEqual(label.shape, (32, 32, 32))
        self.assertEqual(image.get_data_dtype(), np.int16)
        self.assertEqual(label.get_data_dtype(), np.uint8)
        self.assertEqual(tuple(float(z) for z in label.header.get_zooms()), (COARSE,) * 3)
        np.testing.assert_allclose(image.affine, label.affine)
        np.testing.assert_allclose(np.diag(label.affine)[:3], [COARSE] * 3)
        self.assertEqual(nib.aff2axcodes(label.affine), ("R", "A", "S"))
        self.assertEqual((int(label.header["qform_code"]), int(label.header["sform_code"])), (1, 1))
        # the MNI origin (0, 0, 0) lies inside the volume
        centre = np.linalg.inv(label.affine) @ np.array([0.0, 0.0, 0.0, 1.0])
        self.assertTrue(np.all(centre[:3] > 0) and np.all(centre[:3] < 32))

    @parameterized.expand(TEST_GRIDS)
    def test_grid_shape(self, spacing, shape):
        got, affine = phantom_grid(spacing)
        self.assertEqual(got, shape)
        self.assertTrue(all(s % 16 == 0 for s in got))
        np.testing.assert_allclose(np.diag(affine), [spacing, spacing, spacing, 1.0])

    def test_label_values(self):
        for disease, allowed in (("ms", {0, 1}), ("tumour", {0, 1, 2, 4})):
            seen = set()
            for case in self.cases[disease]:
                values = set(np.unique(case.label).tolist())
                self.assertLessEqual(values, allowed, disease)
                self.assertIn(1, values, disease)
                seen |= values
            self.assertEqual(seen, allowed, disease)
            for entry in self._content(disease)["training"]:
                data = np.asarray(nib.load(self.json[disease].parent / entry["label"]).dataobj)
                self.assertLessEqual(set(np.unique(data).tolist()), allowed)

    def test_ms_lesions_in_documented_ranges(self):
        low, high = MS_PHANTOM_RANGES["label_volume_ml"]
        for case in self.cases["ms"]:
            self.assertTrue(low <= _volume_ml(case.label > 0, MEDIUM) <= high, case.info)
            self.assertTrue(
                MS_PHANTOM_RANGES["lesion_count"][0]
                <= case.info["lesion_count"]
                <= MS_PHANTOM_RANGES["lesion_count"][1]
            )
            # mostly white matter: most lesion voxels have more white matter than grey matter around them
            lesion = case.label > 0
            # normal fractions are scaled by the same (1 - lesion) factor, so their ratio is the underlying tissue
            in_wm = case.fractions["wm"][lesion] >= case.fractions["gm"][lesion]
            self.assertGreater(float(np.mean(in_wm)), 0.7)

    def test_tumour_in_documented_ranges(self):
        for case in self.cases["tumour"]:
            core = _volume_ml(np.isin(case.label, (2, 4)), MEDIUM)
            whole = _volume_ml(case.label > 0, MEDIUM)
            self.assertTrue(
                TUMOUR_PHANTOM_RANGES["core_volume_ml"][0] <= core <= TUMOUR_PHANTOM_RANGES["core_volume_ml"][1]
            )
            self.assertTrue(
                TUMOUR_PHANTOM_RANGES["whole_volume_ml"][0] <= whole <= TUMOUR_PHANTOM_RANGES["whole_volume_ml"][1]
            )
            self.assertGreater(whole, core)  # oedema surrounds the mass
            low, high = TUMOUR_PHANTOM_RANGES["core_radius_mm"]
            self.assertTrue(low <= case.info["core_radius"] <= high)

    def test_tissue_contrasts(self):
        t1, flair = (list(PHANTOM_MODALITIES.values()).index(n) for n in ("T1", "FLAIR"))
        for disease in ("ms", "tumour"):
            for case in self.cases[disease]:
                normal = case.label == 0

                def mean(channel, region, image=case.image):
                    return float(image[channel][region].mean())

                wm, gm, csf = ((case.fractions[k] > 0.85) & normal for k in ("wm", "gm", "csf"))
                self.assertGreater(mean(t1, wm), mean(t1, gm))  # T1: WM > GM > CSF
                self.assertGreater(mean(t1, gm), mean(t1, csf))
                self.assertGreater(mean(flair, gm), mean(flair, csf))  # FLAIR: CSF suppressed
                self.assertGreater(mean(flair, gm), mean(flair, wm))  # FLAIR: GM > WM
                if disease == "ms":
                    self.assertGreater(mean(flair, case.label == 1), mean(flair, wm))  # lesion > WM on FLAIR
                else:
                    self.assertGreater(mean(flair, case.label == 1), mean(flair, wm))  # oedema > WM on FLAIR
                    enhancing = case.fractions["enhancing"] > 0.7
                    self.assertGreater(mean(t1, enhancing), mean(t1, wm))  # enhancing rim > WM on T1
                    if np.any(case.fractions["necrosis"] > 0.7):
                        self.assertLess(mean(t1, case.fractions["necrosis"] > 0.7), mean(t1, gm))  # dark necrosis

    def test_skull_stripped_background(self):
        for case in self.cases["tumour"]:
            self.assertEqual(float(case.image[:, 0, 0, 0].max()), 0.0)
            brain = sum(case.fractions.values()) > 0.5
            self.assertGreater(float(brain.mean()), 0.1)  # the brain fills a good part of the grid
            # zero exactly outside the brain, positive inside it in both channels (thick slices, ghost and all)
            for channel in case.image:
                self.assertEqual(float(np.abs(channel[~brain]).max()), 0.0)
                self.assertGreater(float((channel[brain] > 0).mean()), 0.99)

    def test_tumour_target_is_harder_than_its_look(self):
        """The target's documented difficulties are present: unlabelled FLAIR-bright look-alikes, an oedema whose
        visible signal fades before its label's edge, and the target cohort's acquisition draws."""
        flair = list(PHANTOM_MODALITIES.values()).index("FLAIR")
        for case in self.cases["tumour"]:
            info = case.info
            low, high = TUMOUR_PHANTOM_RANGES["lookalike_count"]
            self.assertTrue(low <= info["lookalike_count"] <= high, info)
            lookalike = (case.fractions["lesion"] > 0.5) & (case.label == 0)
            self.assertTrue(lookalike.any(), "no unlabelled look-alike voxel")
            wm = (case.fractions["wm"] > 0.85) & (case.label == 0)
            self.assertGreater(float(case.image[flair][lookalike].mean()), float(case.image[flair][wm].mean()))
            self.assertTrue(TUMOUR_PHANTOM_RANGES["oedema_fade"][0] <= info["oedema_fade"]
                            <= TUMOUR_PHANTOM_RANGES["oedema_fade"][1])
            self.assertIn(info["slice_thickness_mm"], (MEDIUM, 2 * MEDIUM))  # 1-7 mm at 4 mm voxels: 1 or 2 slices
            self.assertEqual(len(info["noise_std"]), 2)
            self.assertLessEqual(len(info["satellite_radii"]), 2)

    def test_oedema_fades_before_its_label_edge(self):
        """The same subject drawn without fade: same labels, more visible oedema, most of all at the label's edge."""
        from scipy import ndimage

        faded = generate_phantom_case("tumour", 0, seed=0, spacing=COARSE)
        with mock.patch.dict(TUMOUR_PHANTOM_RANGES, {"oedema_fade": (0.0, 0.0)}):
            plain = generate_phantom_case("tumour", 0, seed=0, spacing=COARSE)
        np.testing.assert_array_equal(faded.label, plain.label)
        oedema = faded.label == 1
        edge = oedema & ndimage.binary_dilation(faded.label == 0)
        inner = oedema & ndimage.binary_dilation(np.isin(faded.label, (2, 4)))
        self.assertTrue(edge.any() and inner.any())
        loss = plain.fractions["oedema"] - faded.fractions["oedema"]
        self.assertGreaterEqual(float(loss.min()), -1e-6)
        self.assertGreater(float(loss[oedema].mean()), 0.02)  # fade 0.2-0.7 of the shell's contrast
        self.assertGreater(float(loss[edge].mean()), float(loss[inner].mean()))

    def test_deterministic_and_independent_of_num_cases(self):
        again = generate_phantom_case("ms", 1, seed=0, spacing=MEDIUM)
        np.testing.assert_array_equal(again.image, self.cases["ms"][1].image)
        np.testing.assert_array_equal(again.label, self.cases["ms"][1].label)
        with tempfile.TemporaryDirectory() as tmp:  # subject 1 of a 2-case dataset == subject 1 of a 3-case one
            other = make_phantom_dataset(tmp, disease="tumour", num_cases=2, num_test=0, spacing=COARSE, progress=False)
            entry = json.loads(other.read_text())["training"][1]
            ref = self._content("tumour")["training"][1]
            for key in ("image", "label"):
                a = np.asarray(nib.load(Path(tmp) / entry[key]).dataobj)
                b = np.asarray(nib.load(self.json["tumour"].parent / ref[key]).dataobj)
                np.testing.assert_array_equal(a, b)

    def test_subjects_differ(self):
        for disease in ("ms", "tumour"):
            first, second = self.cases[disease][:2]
            self.assertFalse(np.array_equal(first.label, second.label))
            self.assertGreater(float(np.abs(first.image - second.image).mean()), 1.0)
        other_seed = generate_phantom_case("ms", 0, seed=1, spacing=COARSE)
        same_seed = generate_phantom_case("ms", 0, seed=0, spacing=COARSE)
        test_split = generate_phantom_case("ms", 0, seed=0, spacing=COARSE, split="test")
        self.assertFalse(np.array_equal(other_seed.image, same_seed.image))
        self.assertFalse(np.array_equal(test_split.image, same_seed.image))

    def test_mass_effect_pushes_anatomy_outwards(self):
        centre = np.array([10.0, -5.0, 20.0])
        radius = np.linspace(0.0, 80.0, 161, dtype=np.float32)
        coords = np.zeros((3, radius.size, 1, 1), dtype=np.float32)
        coords[0, :, 0, 0] = centre[0] + radius
        coords[1], coords[2] = centre[1], centre[2]
        sampled = phantoms._mass_effect(coords, centre, radius=15.0, strength=0.5)[0, :, 0, 0] - centre[0]
        self.assertTrue(np.all(np.diff(sampled) > 0))  # monotonic: no folding
        self.assertTrue(np.all(sampled <= radius + 1e-4))  # template tissue appears further from the centre
        self.assertAlmostEqual(float(sampled[-1]), 80.0, places=3)  # no effect far away

    def test_interrupted_run_leaves_no_dataset_json(self):
        real = phantoms._write_case
        calls = []

        def failing(task):
            calls.append(task)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return real(task)

        with tempfile.TemporaryDirectory() as tmp:
            make_phantom_dataset(tmp, disease="ms", num_cases=1, num_test=0, spacing=8.0, progress=False)
            self.assertTrue((Path(tmp) / "dataset.json").is_file())
            with mock.patch.object(phantoms, "_write_case", side_effect=failing), self.assertRaises(KeyboardInterrupt):
                make_phantom_dataset(tmp, disease="ms", num_cases=3, num_test=0, spacing=8.0, progress=False)
            self.assertFalse((Path(tmp) / "dataset.json").exists())  # the old, complete-looking one is gone
            self.assertEqual([p.name for p in Path(tmp).rglob(".*")], [])

    @parameterized.expand(TEST_BAD_ARGS)
    def test_bad_arguments(self, kwargs, error, pattern):
        with tempfile.TemporaryDirectory() as tmp, self.assertRaisesRegex(error, pattern):
            make_phantom_dataset(tmp, **{"num_cases": 1, "num_test": 0, "spacing": 8.0, "progress": False, **kwargs})

    def test_bad_split(self):
        with self.assertRaisesRegex(ValueError, r"split must be one of \('training', 'test'\), got 'val'"):
            generate_phantom_case("ms", 0, split="val")


class TestImportHasNoSideEffects(unittest.TestCase):
    def test_import(self):
        # `import monai` itself may import matplotlib.pyplot; we only check what monai_dwp.data adds
        code = (
            "import sys, monai, monai.transforms, matplotlib; backend = matplotlib.get_backend(); "
            "import monai_dwp.data as d; "
            "assert 'nilearn' not in sys.modules, 'nilearn imported'; "
            "assert d.phantoms._mni152_template.cache_info().currsize == 0, 'template loaded'; "
            "assert matplotlib.get_backend() == backend, 'backend changed'; print('ok')"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        self.assertIn("ok", out.stdout)


if __name__ == "__main__":
    unittest.main()
