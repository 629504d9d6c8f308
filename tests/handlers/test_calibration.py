from __future__ import annotations

import csv
import math
import os
import tempfile
import unittest

import torch
from monai.data import MetaTensor
from monai.metrics import CalibrationErrorMetric, compute_roc_auc

from monai_dwp.handlers.calibration import SegmentationCalibrationHandler
from monai_dwp.metrics.calibration import binned_calibration_error, histogram_roc_auc

from .._distributed import requires_fork, run_two_gloo_ranks


def _binary_item(fg_prob: torch.Tensor, fg_label: torch.Tensor, **maps: torch.Tensor) -> dict:
    """A case with K = 2 from foreground probabilities and a 0/1 foreground label of the same spatial shape."""
    prob = torch.stack([1 - fg_prob, fg_prob])
    label = torch.stack([1 - fg_label, fg_label]).float()
    return {"prob": prob, "label": label, **{k: v[None] for k, v in maps.items()}}


def _entropy(prob: torch.Tensor) -> torch.Tensor:
    return -(prob * prob.clamp_min(1e-12).log()).sum(0, keepdim=True)


def _read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class TestCalibrationError(unittest.TestCase):
    def test_hand_example(self):
        # voxels: p_fg = .9 .9 .2 .6, label = 1 0 0 0; 2 bins [0, .5), [.5, 1]
        item = _binary_item(torch.tensor([0.9, 0.9, 0.2, 0.6]), torch.tensor([1.0, 0, 0, 0]))
        handler = SegmentationCalibrationHandler(n_bins=2, mask_key=None, log_summary=False)
        row = handler.update(item, name="a")
        # top label: confidences .9 .9 .8 .6 (all in bin 1), correct 1 0 1 0 -> |2 - 3.2| / 4
        self.assertAlmostEqual(row["ece"], 0.3, places=6)
        # foreground: bin 0 {.2}: |0 - .2|; bin 1 {.9, .9, .6}: |1 - 2.4| -> (0.2 + 1.4) / 4
        self.assertAlmostEqual(row["fg_ece"], 0.4, places=6)
        self.assertEqual(row["n_voxels"], 4)
        self.assertEqual(row["filename"], "a")
        self.assertAlmostEqual(handler.compute()["ece"], 0.3, places=6)
        table = handler.reliability_table()
        fg1 = [r for r in table if r["curve"] == "foreground" and r["bin"] == 1][0]
        self.assertEqual(fg1["count"], 3)
        self.assertAlmostEqual(fg1["mean_confidence"], 0.8, places=6)
        self.assertAlmostEqual(fg1["accuracy"], 1 / 3, places=6)

    def test_binned_calibration_error_function(self):
        counts = torch.tensor([2.0, 0.0, 2.0])
        sum_confidence, sum_correct = torch.tensor([0.5, 0, 1.8]), torch.tensor([1.0, 0, 1])
        # (|1 - .5| + |1 - 1.8|) / 4
        self.assertAlmostEqual(binned_calibration_error(counts, sum_confidence, sum_correct), 0.325)
        self.assertTrue(math.isnan(binned_calibration_error(torch.zeros(3), torch.zeros(3), torch.zeros(3))))

    def test_calibrated_and_overconfident(self):
        g = torch.Generator().manual_seed(0)
        logits = 3 * torch.randn(200_000, generator=g)
        true_p = torch.sigmoid(logits)
        label = torch.bernoulli(true_p, generator=g)
        calibrated = SegmentationCalibrationHandler(mask_key=None, log_summary=False)
        calibrated.update(_binary_item(true_p, label))
        values = calibrated.compute()
        self.assertLess(values["ece"], 0.01)
        self.assertLess(values["fg_ece"], 0.01)
        over = SegmentationCalibrationHandler(mask_key=None, log_summary=False)
        over.update(_binary_item(torch.sigmoid(4 * logits), label))
        values = over.compute()
        self.assertGreater(values["ece"], 0.05)
        self.assertGreater(values["fg_ece"], 0.05)

    def test_agrees_with_monai_calibration_error(self):
        g = torch.Generator().manual_seed(1)
        handler = SegmentationCalibrationHandler(uncertainty_keys=(), mask_key=None, log_summary=False)
        handler_k3 = SegmentationCalibrationHandler(uncertainty_keys=(), mask_key=None, log_summary=False)
        fg_metric = CalibrationErrorMetric(num_bins=15, include_background=False, metric_reduction="none")
        top_metric = CalibrationErrorMetric(num_bins=15, metric_reduction="none")
        all_conf, all_correct = [], []
        for _ in range(3):
            prob = torch.rand(2, 6, 7, 8, generator=g)
            prob = prob / prob.sum(0, keepdim=True)
            label = torch.nn.functional.one_hot(torch.randint(0, 2, (6, 7, 8), generator=g), 2).movedim(-1, 0).float()
            row = handler.update({"prob": prob, "label": label})
            fg = fg_metric(y_pred=prob[None], y=label[None])
            self.assertAlmostEqual(row["fg_ece"], float(fg[0, 0]), places=5)
            # MONAI's metric on the one-channel pair (confidence, correctness) is the top-label ECE
            conf, pred = prob.max(0)
            correct = (pred == label.argmax(0)).float()
            top = top_metric(y_pred=conf[None, None], y=correct[None, None])
            self.assertAlmostEqual(row["ece"], float(top[0, 0]), places=5)
            all_conf.append(conf.flatten())
            all_correct.append(correct.flatten())
            # K = 3, top label
            prob3 = torch.rand(3, 5, 5, 5, generator=g).softmax(0)
            label3 = torch.randint(0, 3, (1, 5, 5, 5), generator=g)  # class indices are accepted too
            row3 = handler_k3.update({"prob": prob3, "label": label3})
            conf3, pred3 = prob3.max(0)
            top3 = top_metric(y_pred=conf3[None, None], y=(pred3 == label3[0]).float()[None, None])
            self.assertAlmostEqual(row3["ece"], float(top3[0, 0]), places=5)
        # the overall value pools the voxels of all cases
        overall = top_metric(y_pred=torch.cat(all_conf)[None, None], y=torch.cat(all_correct)[None, None])
        self.assertAlmostEqual(handler.compute()["ece"], float(overall[0, 0]), places=5)

    def test_chance_range(self):
        item = _binary_item(torch.tensor([0.9, 0.9, 0.2, 0.6]), torch.tensor([1.0, 0, 0, 0]))
        handler = SegmentationCalibrationHandler(n_bins=2, top_label_range="chance", mask_key=None, log_summary=False)
        row = handler.update(item)
        # bins [.5, .75): {.6} -> |0 - .6|; [.75, 1]: {.9, .9, .8} -> |2 - 2.6| ; (0.6 + 0.6) / 4
        self.assertAlmostEqual(row["ece"], 0.3, places=6)
        lowers = [r["lower"] for r in handler.reliability_table() if r["curve"] == "top_label"]
        self.assertEqual(lowers, [0.5, 0.75])

    def test_mask_and_pred_key(self):
        item = _binary_item(torch.tensor([0.9, 0.9, 0.2, 0.6]), torch.tensor([1.0, 0, 0, 0]))
        item["mask"] = torch.tensor([[1, 1, 0, 0]])
        row = SegmentationCalibrationHandler(n_bins=2, mask_key="mask", log_summary=False).update(item)
        self.assertEqual(row["n_voxels"], 2)
        self.assertAlmostEqual(row["ece"], abs(1 - 1.8) / 2, places=6)
        # a prediction that says background everywhere: confidence = p_background = .1 .1 .8 .4
        item["pred"] = torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]])
        row = SegmentationCalibrationHandler(n_bins=2, pred_key="pred", mask_key=None, log_summary=False).update(item)
        # bin 0: {.1, .1, .4} correct 0 1 1 -> |2 - .6|; bin 1: {.8} correct 1 -> |1 - .8|
        self.assertAlmostEqual(row["ece"], (1.4 + 0.2) / 4, places=6)


def _hand_ece(value: torch.Tensor, target: torch.Tensor, n_bins: int = 15) -> float:
    """ECE = sum_b (n_b / n) |acc_b - conf_b| with equal-width bins over [0, 1], written out with torch."""
    value, target = value.double().flatten(), target.double().flatten()
    idx = (value * n_bins).floor().clamp(0, n_bins - 1).long()
    total = sum(
        float((idx == b).sum()) * abs(float(target[idx == b].mean()) - float(value[idx == b].mean()))
        for b in range(n_bins)
        if (idx == b).any()
    )
    return total / value.numel()


def _masked_case(seed: int, shape=(6, 7, 8)) -> dict:
    """A 2-class case with an image whose border and a few random voxels are 0 (background), 2 channels."""
    g = torch.Generator().manual_seed(seed)
    prob = (4 * torch.randn(2, *shape, generator=g)).softmax(0)  # entropies spread over decades: few bin ties
    label = torch.nn.functional.one_hot(torch.randint(0, 2, shape, generator=g), 2).movedim(-1, 0).float()
    image = torch.rand(2, *shape, generator=g)
    image[:, 0], image[:, :, -1] = 0.0, 0.0  # zero padding of the crop box
    image[0, 2:4, 2:4, 2:4] = 0.0  # inside the brain, only the first channel is 0: still in the mask
    image[:, 3, 4, 1:3] = 0.0  # a hole: both channels 0
    # informative but noisy, within [0, log 2] (larger values would tie in the last histogram bin)
    entropy = (_entropy(prob) * (0.5 + torch.rand(1, *shape, generator=g))).clamp(max=math.log(2))
    return {"prob": prob, "label": label, "image": image, "entropy": entropy}


class TestMask(unittest.TestCase):
    def test_perfect_inside_wrong_outside(self):
        """(a) a prediction perfect inside the brain and confidently wrong in the padding: masked ECE 0."""
        label = torch.zeros(8, 8, 8)
        label[3:5, 3:5, 3:5] = 1.0
        image = torch.zeros(1, 8, 8, 8)
        image[0, 2:6, 2:6, 2:6] = 0.7  # the brain: a cube inside the crop box
        fg_prob = label.clone()  # certain and right inside ...
        fg_prob[image[0] == 0] = 0.95  # ... certain and wrong (label 0) outside
        item = _binary_item(fg_prob, label)
        item["image"] = image
        masked = SegmentationCalibrationHandler(log_summary=False)
        row = masked.update(item)
        self.assertEqual(row["n_voxels"], 4 * 4 * 4)
        self.assertAlmostEqual(row["ece"], 0.0, places=12)
        self.assertAlmostEqual(row["fg_ece"], 0.0, places=12)
        self.assertAlmostEqual(masked.compute()["voxel_accuracy"], 1.0)
        whole = SegmentationCalibrationHandler(mask_key=None, log_summary=False).update(item)
        self.assertEqual(whole["n_voxels"], 8 * 8 * 8)
        outside = 8 * 8 * 8 - 4 * 4 * 4
        self.assertAlmostEqual(whole["ece"], 0.95 * outside / (8 * 8 * 8), places=6)
        self.assertGreater(whole["fg_ece"], 0.5)

    def test_masked_equals_unmasked_on_the_masked_voxels(self):
        """(b) the masked values are those of the masked voxels alone, computed by hand with torch."""
        item = _masked_case(5)
        keep = (item["image"] > 0).any(0)
        self.assertTrue(bool((item["image"][0] == 0)[keep].any()))  # a voxel kept by its second channel
        self.assertTrue(0 < int(keep.sum()) < keep.numel())
        row = SegmentationCalibrationHandler(uncertainty_keys="entropy", log_summary=False).update(item)
        prob, label, entropy = item["prob"][:, keep], item["label"][:, keep], item["entropy"][:, keep]
        conf, pred = prob.max(0)
        correct = (pred == label.argmax(0)).float()
        self.assertEqual(row["n_voxels"], int(keep.sum()))
        self.assertAlmostEqual(row["ece"], _hand_ece(conf, correct), places=9)
        self.assertAlmostEqual(row["fg_ece"], _hand_ece(prob[1], label[1]), places=9)
        self.assertAlmostEqual(row["auc_entropy"], compute_roc_auc(entropy.flatten(), 1 - correct), delta=1e-3)
        # identical to the whole-box handler given only the masked voxels (as a flat (K, n) case)
        subset = {"prob": prob, "label": label, "entropy": entropy}
        unmasked = SegmentationCalibrationHandler(uncertainty_keys="entropy", mask_key=None, log_summary=False)
        ref = unmasked.update(subset)
        for key in ("ece", "fg_ece", "auc_entropy", "n_voxels"):
            self.assertAlmostEqual(row[key], ref[key], places=12, msg=key)
        # an explicit boolean (1, *spatial) mask and a 0/1 float one select the same voxels
        for mask in (keep[None], keep[None].float()):
            explicit = SegmentationCalibrationHandler(uncertainty_keys="entropy", mask_key="brain", log_summary=False)
            other = explicit.update({**item, "image": torch.zeros_like(item["image"]), "brain": mask})
            for key in ("ece", "fg_ece", "auc_entropy", "n_voxels"):
                self.assertAlmostEqual(other[key], row[key], places=12, msg=key)

    def test_per_case_rows_and_pooled_summary(self):
        """(c) per-case rows carry the masked values; the overall values pool the masked voxels of all cases."""
        cases = [_masked_case(6), _masked_case(7, shape=(5, 6, 4))]
        empty = _masked_case(8)
        empty["image"] = torch.zeros_like(empty["image"])  # a case without any brain voxel
        with tempfile.TemporaryDirectory() as tmp:
            handler = SegmentationCalibrationHandler(output_dir=tmp, uncertainty_keys="entropy", log_summary=False)
            for i, c in enumerate(cases):
                handler.update(c, name=f"c{i}")
            with self.assertLogs("monai_dwp.handlers.calibration", "WARNING") as logs:
                handler.update(empty, name="empty")
            self.assertIn("'empty' has no voxel inside the mask (image>0)", logs.output[0])
            summary = handler.compute()
            handler.write(tmp)
            rows = _read_csv(os.path.join(tmp, "calibration.csv"))
            written = _read_csv(os.path.join(tmp, "calibration_summary.csv"))[0]
        self.assertEqual(list(rows[0]), ["filename", "ece", "fg_ece", "auc_entropy", "n_voxels"])
        all_conf, all_correct, all_fg, all_fg_y = [], [], [], []
        for row, c in zip(rows, cases):
            keep = (c["image"] > 0).any(0)
            prob, label = c["prob"][:, keep], c["label"][:, keep]
            conf, pred = prob.max(0)
            correct = (pred == label.argmax(0)).float()
            self.assertEqual(int(row["n_voxels"]), int(keep.sum()))
            self.assertAlmostEqual(float(row["ece"]), _hand_ece(conf, correct), places=8)
            self.assertAlmostEqual(float(row["fg_ece"]), _hand_ece(prob[1], label[1]), places=8)
            self.assertAlmostEqual(
                float(row["auc_entropy"]), compute_roc_auc(c["entropy"][:, keep].flatten(), 1 - correct), delta=1e-3
            )
            all_conf.append(conf)
            all_correct.append(correct)
            all_fg.append(prob[1])
            all_fg_y.append(label[1])
        self.assertEqual(rows[2]["filename"], "empty")
        self.assertEqual((rows[2]["ece"], rows[2]["fg_ece"], rows[2]["n_voxels"]), ("nan", "nan", "0"))
        # pooled over the masked voxels of all cases, not the mean of the cases
        self.assertEqual(summary["n_voxels"], sum(int(r["n_voxels"]) for r in rows))
        self.assertAlmostEqual(summary["ece"], _hand_ece(torch.cat(all_conf), torch.cat(all_correct)), places=9)
        self.assertAlmostEqual(summary["fg_ece"], _hand_ece(torch.cat(all_fg), torch.cat(all_fg_y)), places=9)
        case_ece = [float(r["ece"]) for r in rows[:2]]
        self.assertAlmostEqual(summary["ece_case_mean"], sum(case_ece) / 2, places=9)  # the empty case left out
        self.assertNotAlmostEqual(summary["ece_case_mean"], summary["ece"], places=6)
        self.assertEqual(written["mask"], "image>0")
        self.assertAlmostEqual(float(written["fg_ece_case_mean"]), summary["fg_ece_case_mean"], places=8)
        self.assertEqual(int(written["n_voxels"]), summary["n_voxels"])

    def test_bad_mask(self):
        """(d) a mask on another grid, a missing mask key and a bad mask_key type say what to do."""
        item = _masked_case(9)
        handler = SegmentationCalibrationHandler(log_summary=False)
        with self.assertRaisesRegex(
            ValueError,
            r"mask_key='image': the item's 'image' has shape \(2, 6, 7, 9\) but 'prob' has shape \(2, 6, 7, 8\);"
            r".*spatial shape \(6, 7, 8\).*or pass mask_key=None",
        ):
            handler.update({**item, "image": torch.ones(2, 6, 7, 9)})
        with self.assertRaisesRegex(ValueError, r"'image' has shape \(6, 7, 8\) but 'prob' has shape \(2, 6, 7, 8\)"):
            handler.update({**item, "image": torch.ones(6, 7, 8)})  # no channel dimension
        del item["image"]
        with self.assertRaisesRegex(ValueError, r"no mask key mask_key='image' \(keys: \['entropy', 'label', 'prob'\]\)"
                                                r".*mask_key=None"):
            handler.update(item)
        with self.assertRaisesRegex(TypeError, r"mask_key must be a key name \(str\) or None, got 3 \(int\)"):
            SegmentationCalibrationHandler(mask_key=3)

    def test_negative_image_warns(self):
        item = _masked_case(10)
        item["image"] = item["image"] - 0.5  # z-scored-like intensities: "> 0" is no brain mask
        handler = SegmentationCalibrationHandler(log_summary=False)
        with self.assertLogs("monai_dwp.handlers.calibration", "WARNING") as logs:
            handler.update(item)
        self.assertIn("mask_key='image' has negative values", logs.output[0])

    def test_mask_key_none_is_the_old_behaviour(self):
        """(e) mask_key=None counts every voxel of the box, whatever the image holds."""
        item = _binary_item(torch.tensor([0.9, 0.9, 0.2, 0.6]), torch.tensor([1.0, 0, 0, 0]))
        item["image"] = torch.tensor([[0.0, 0.3, 0.0, 0.0]])
        handler = SegmentationCalibrationHandler(n_bins=2, mask_key=None, log_summary=False)
        row = handler.update(item, name="a")
        # the numbers of test_hand_example (every voxel)
        self.assertEqual(row["n_voxels"], 4)
        self.assertAlmostEqual(row["ece"], 0.3, places=6)
        self.assertAlmostEqual(row["fg_ece"], 0.4, places=6)
        with tempfile.TemporaryDirectory() as tmp:
            handler.write(tmp)
            self.assertEqual(_read_csv(os.path.join(tmp, "calibration_summary.csv"))[0]["mask"], "none")
        # the default keeps the one voxel with image > 0: confidence .9 (p_fg), wrong
        row = SegmentationCalibrationHandler(n_bins=2, log_summary=False).update(item)
        self.assertEqual(row["n_voxels"], 1)
        self.assertAlmostEqual(row["ece"], 0.9, places=6)


class TestUncertaintyAUC(unittest.TestCase):
    def test_histogram_roc_auc_hand(self):
        # positives at bins 2, 1; negatives at bins 0, 1 -> pairs: (2>0),(2>1),(1>0),(1=1 tie) -> 3.5 / 4
        self.assertAlmostEqual(histogram_roc_auc(torch.tensor([0.0, 1, 1]), torch.tensor([1.0, 1, 0])), 0.875)
        self.assertTrue(math.isnan(histogram_roc_auc(torch.zeros(3), torch.ones(3))))
        with self.assertRaisesRegex(ValueError, "same shape"):
            histogram_roc_auc(torch.zeros(3), torch.zeros(4))

    def _errors(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        fg_p = torch.rand(n, generator=g)
        label = (torch.rand(n, generator=g) < fg_p).float()
        error = ((fg_p > 0.5).float() != label).float()
        return g, fg_p, label, error

    def test_perfect_and_random_scores(self):
        g, fg_p, label, error = self._errors(50_000, 2)
        noise = torch.rand(50_000, generator=g) * math.log(2)
        handler = SegmentationCalibrationHandler(uncertainty_keys=("oracle", "noise"), mask_key=None, log_summary=False)
        row = handler.update(_binary_item(fg_p, label, oracle=0.5 * error, noise=noise))
        self.assertAlmostEqual(row["auc_oracle"], 1.0, places=9)
        self.assertAlmostEqual(row["auc_noise"], 0.5, delta=0.02)

    def test_agrees_with_monai_roc_auc(self):
        for scale in ("log", "linear"):
            g, fg_p, label, error = self._errors(20_000, 3)
            prob = torch.stack([1 - fg_p, fg_p])
            entropy = _entropy(prob)[0] * (0.5 + torch.rand(20_000, generator=g))  # informative but noisy
            item = _binary_item(fg_p, label, entropy=entropy.clamp(max=math.log(2)))
            handler = SegmentationCalibrationHandler(
                uncertainty_keys="entropy", score_scale=scale, mask_key=None, log_summary=False
            )
            row = handler.update(item)
            exact = compute_roc_auc(item["entropy"].flatten(), error)
            self.assertGreater(exact, 0.6)
            self.assertAlmostEqual(row["auc_entropy"], exact, delta=1e-3, msg=scale)

    def test_all_zero_mutual_information_is_uninformative(self):
        _, fg_p, label, _ = self._errors(1000, 4)
        row = SegmentationCalibrationHandler(mask_key=None, log_summary=False).update(
            _binary_item(fg_p, label, mutual_information=torch.zeros(1000))
        )
        self.assertAlmostEqual(row["auc_mutual_information"], 0.5)
        self.assertTrue(math.isnan(row["auc_entropy"]))  # missing map: skipped

    def test_no_errors_gives_nan(self):
        row = SegmentationCalibrationHandler(mask_key=None, log_summary=False).update(
            _binary_item(torch.tensor([0.9, 0.1]), torch.tensor([1.0, 0]), entropy=torch.tensor([0.3, 0.3]))
        )
        self.assertTrue(math.isnan(row["auc_entropy"]))


class TestBadInput(unittest.TestCase):
    def test_arguments(self):
        with self.assertRaisesRegex(ValueError, "n_bins must be ≥ 2, got 1"):
            SegmentationCalibrationHandler(n_bins=1)
        with self.assertRaisesRegex(ValueError, "score_bins must be ≥ 2"):
            SegmentationCalibrationHandler(score_bins=1)
        with self.assertRaisesRegex(ValueError, "top_label_range must be one of"):
            SegmentationCalibrationHandler(top_label_range="half")
        with self.assertRaisesRegex(ValueError, "score_scale must be one of"):
            SegmentationCalibrationHandler(score_scale="sqrt")
        with self.assertRaisesRegex(ValueError, "score_max must be a finite number"):
            SegmentationCalibrationHandler(score_max=0.0)
        with self.assertRaisesRegex(ValueError, "uncertainty_keys must be distinct"):
            SegmentationCalibrationHandler(uncertainty_keys=("entropy", "entropy"))

    def test_items(self):
        handler = SegmentationCalibrationHandler(mask_key=None, log_summary=False)
        good = _binary_item(torch.tensor([0.9, 0.2]), torch.tensor([1.0, 0]))
        with self.assertRaisesRegex(ValueError, "no 'prob' key.*CopyItemsd\\(keys='pred', names='prob'\\)"):
            handler.update({"label": good["label"]})
        with self.assertRaisesRegex(ValueError, "no 'label' key.*AsDiscreted\\(keys='label', to_onehot=K\\)"):
            handler.update({"prob": good["prob"]})
        with self.assertRaisesRegex(ValueError, "'label' must be one-hot \\(2, 2\\).*got \\(2, 3\\)"):
            handler.update({"prob": good["prob"], "label": torch.zeros(2, 3)})
        with self.assertRaisesRegex(ValueError, "K >= 2 classes"):
            handler.update({"prob": torch.rand(1, 4), "label": torch.zeros(1, 4)})
        with self.assertRaisesRegex(ValueError, "probabilities in \\[0, 1\\].*Activationsd"):
            handler.update({"prob": 5 * good["prob"], "label": good["label"]})
        with self.assertRaisesRegex(ValueError, "uncertainty map 'entropy' must have shape \\(1, 2\\), got \\(1, 3\\)"):
            handler.update({**good, "entropy": torch.zeros(1, 3)})
        with self.assertRaisesRegex(ValueError, "'prob' is a dict .*FlattenMCOutputd\\(keys='pred'\\)"):
            handler.update({"prob": {"pred": good["prob"]}, "label": good["label"]})
        with self.assertRaisesRegex(ValueError, "foreground_channel=2 but 'prob' has 2 classes"):
            SegmentationCalibrationHandler(foreground_channel=2).update(good)


class TestInEvaluator(unittest.TestCase):
    def _evaluator(self, handlers, batch_size=1, with_label=True):
        from monai.data import DataLoader, Dataset
        from monai.engines import SupervisedEvaluator
        from monai.transforms import Activationsd, AsDiscreted, Compose, CopyItemsd, Lambdad

        torch.manual_seed(0)
        data = []
        for i in range(2):
            image = torch.randn(1, 8, 8, 6)
            label = (image > 0.3).float()
            meta = {"filename_or_obj": f"/data/case_{i}.nii.gz"}
            data.append({"image": MetaTensor(image, meta=meta), "label": MetaTensor(label, meta=dict(meta))})
        self.data = data
        net = torch.nn.Conv3d(1, 2, kernel_size=3, padding=1)
        post = Compose(
            [
                Activationsd(keys="pred", softmax=True),
                CopyItemsd(keys="pred", names="prob"),
                Lambdad(keys="prob", func=_entropy, overwrite="entropy"),
                AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=[2, 2]),
            ]
        )
        if not with_label:
            post = Compose([Activationsd(keys="pred", softmax=True), AsDiscreted(keys="pred", argmax=True)])
        return SupervisedEvaluator(
            device=torch.device("cpu"),
            val_data_loader=DataLoader(Dataset(data), batch_size=batch_size),
            network=net,
            postprocessing=post,
            val_handlers=handlers,
        )

    def test_files_and_metrics(self):
        from monai.handlers import StatsHandler

        seen_at_epoch_completed: dict = {}

        def record(engine):
            seen_at_epoch_completed.update(engine.state.metrics)

        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "eval")
            # StatsHandler first: the values must already be there at EPOCH_COMPLETED
            stats = StatsHandler(iteration_log=False, epoch_print_logger=record)
            handler = SegmentationCalibrationHandler(output_dir=out)
            evaluator = self._evaluator([stats, handler], batch_size=2)
            evaluator.run()
            metrics = evaluator.state.metrics
            for key in ("ece", "fg_ece", "auc_entropy"):
                self.assertIn(key, metrics)
                self.assertTrue(0.0 <= metrics[key] <= 1.0, key)
                self.assertEqual(seen_at_epoch_completed[key], metrics[key])
            self.assertNotIn("auc_mutual_information", metrics)  # no such map in this pipeline

            self.assertEqual(
                sorted(os.listdir(out)),
                ["calibration.csv", "calibration_summary.csv", "reliability.csv", "reliability.png"],
            )
            rows = _read_csv(os.path.join(out, "calibration.csv"))
            self.assertEqual([r["filename"] for r in rows], ["/data/case_0.nii.gz", "/data/case_1.nii.gz"])
            self.assertEqual(
                list(rows[0]), ["filename", "ece", "fg_ece", "auc_entropy", "auc_mutual_information", "n_voxels"]
            )
            # default mask_key="image": only the voxels where the input image is > 0 count
            in_mask = [int((d["image"] > 0).sum()) for d in self.data]
            self.assertTrue(0 < in_mask[0] < 8 * 8 * 6)
            self.assertEqual([r["n_voxels"] for r in rows], [str(n) for n in in_mask])
            self.assertEqual(rows[0]["auc_mutual_information"], "nan")
            summary = _read_csv(os.path.join(out, "calibration_summary.csv"))
            self.assertEqual(len(summary), 1)
            self.assertEqual(summary[0]["n_cases"], "2")
            self.assertEqual(summary[0]["n_voxels"], str(sum(in_mask)))
            self.assertEqual(summary[0]["mask"], "image>0")
            self.assertAlmostEqual(
                float(summary[0]["ece_case_mean"]), sum(float(r["ece"]) for r in rows) / 2, places=8
            )
            self.assertAlmostEqual(metrics["ece_case_mean"], float(summary[0]["ece_case_mean"]), places=8)
            self.assertAlmostEqual(float(summary[0]["ece"]), metrics["ece"], places=8)
            reliability = _read_csv(os.path.join(out, "reliability.csv"))
            self.assertEqual(len(reliability), 30)
            self.assertEqual(sum(int(r["count"]) for r in reliability if r["curve"] == "top_label"), sum(in_mask))
            with open(os.path.join(out, "reliability.png"), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
            from matplotlib.image import imread

            self.assertEqual(imread(os.path.join(out, "reliability.png")).shape[:2], (700, 600))
            self.assertFalse([n for n in os.listdir(out) if n.endswith(".tmp")])

            # a second run (as every validation of a trainer) starts afresh and gives the same values
            first = dict(metrics)
            evaluator.run()
            self.assertEqual({k: evaluator.state.metrics[k] for k in first if k in ("ece", "fg_ece")},
                             {k: first[k] for k in ("ece", "fg_ece")})
            self.assertEqual(len(_read_csv(os.path.join(out, "calibration.csv"))), 2)

    def test_unknown_epoch_length(self):
        """Data without a length: the values are published at EPOCH_COMPLETED instead."""
        from ignite.engine import Engine

        item = _binary_item(torch.tensor([0.9, 0.9, 0.2, 0.6]), torch.tensor([1.0, 0, 0, 0]))
        item["image"] = torch.tensor([[0.5, 0.1, 1.0, 0.3]])  # every voxel inside the brain mask
        engine = Engine(lambda e, batch: batch)
        SegmentationCalibrationHandler(n_bins=2, log_summary=False).attach(engine)
        engine.run(iter([[item], [item]]), max_epochs=1)
        self.assertAlmostEqual(engine.state.metrics["ece"], 0.3, places=6)

    def test_missing_key_in_engine(self):
        evaluator = self._evaluator([SegmentationCalibrationHandler()], with_label=False)
        with self.assertRaisesRegex(ValueError, "no 'prob' key"):
            evaluator.run()


def _ddp_worker(local_rank: int, out_dir: str) -> None:
    import ignite.distributed as idist
    from ignite.engine import Engine

    torch.set_num_threads(1)  # a forked child must not enter its parent's OpenMP pool (it would hang)
    rank = idist.get_rank()
    g = torch.Generator().manual_seed(10)
    cases = []
    for _ in range(3):
        fg_prob, fg_label = torch.rand(50, generator=g), (torch.rand(50, generator=g) > 0.6).float()
        cases.append(_binary_item(fg_prob, fg_label, entropy=torch.rand(50, generator=g) * 0.6))
    for i, c in enumerate(cases):
        image = (torch.rand(1, 50, generator=g) - 0.3).clamp_min(0)  # ~30 % background voxels (image == 0)
        c["image"] = MetaTensor(image, meta={"filename_or_obj": f"c{i}"})
    # decollated batches of one case each, as a SupervisedEvaluator leaves them; unequal iterations per rank
    mine = [[cases[0]], [cases[1]]] if rank == 0 else [[cases[2]]]
    engine = Engine(lambda e, batch: batch)
    handler = SegmentationCalibrationHandler(output_dir=out_dir, log_summary=False)
    handler.attach(engine)
    engine.run(mine, max_epochs=1)
    result = {"metrics": dict(engine.state.metrics), "rows": handler.case_rows}
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    if rank == 0:
        torch.save(_serial_values(cases), os.path.join(out_dir, "serial.pt"))


def _serial_values(cases: list[dict]) -> dict:
    """The values of all cases in one process (from the local histograms, no collective)."""
    handler = SegmentationCalibrationHandler(log_summary=False)
    rows = [handler.update(c) for c in cases]
    local = handler.metric.local_histograms()
    values = local.values()
    values["ece_case_mean"] = sum(r["ece"] for r in rows) / len(rows)
    values["n_voxels"] = local.n_voxels
    return values


@requires_fork
class TestDistributed(unittest.TestCase):
    def test_gloo_two_processes(self):
        """Two gloo ranks with 2 and 1 iterations: one collective each, global values on both, files once."""
        with tempfile.TemporaryDirectory() as tmp:
            run_two_gloo_ranks(_ddp_worker, tmp)
            serial = torch.load(os.path.join(tmp, "serial.pt"))
            for rank in (0, 1):
                result = torch.load(os.path.join(tmp, f"rank{rank}.pt"), weights_only=False)
                for key in ("ece", "fg_ece", "auc_entropy", "ece_case_mean"):
                    self.assertAlmostEqual(result["metrics"][key], serial[key], places=9)
                self.assertEqual(sorted(r["filename"] for r in result["rows"]), ["c0", "c1", "c2"])
            rows = _read_csv(os.path.join(tmp, "calibration.csv"))
            self.assertEqual(sorted(r["filename"] for r in rows), ["c0", "c1", "c2"])
            summary = _read_csv(os.path.join(tmp, "calibration_summary.csv"))[0]
            self.assertEqual(int(summary["n_voxels"]), serial["n_voxels"])
            self.assertLess(serial["n_voxels"], 3 * 50)  # the background was left out


if __name__ == "__main__":
    unittest.main()
