from __future__ import annotations

import math
import os
import tempfile
import unittest
from unittest import mock

import torch
from monai.metrics import CalibrationErrorMetric, compute_roc_auc

from monai_dwp.metrics import (
    CalibrationHistograms,
    VoxelCalibration,
    binned_calibration_error,
    histogram_roc_auc,
    reliability_histogram,
    score_histogram,
)

from .._distributed import requires_fork, run_two_gloo_ranks


def _case(seed: int, shape=(6, 7, 8), num_classes: int = 2) -> dict:
    """Probabilities (K, *spatial), one-hot label, a (1, *spatial) mask and an informative, noisy entropy map."""
    g = torch.Generator().manual_seed(seed)
    prob = (4 * torch.randn(num_classes, *shape, generator=g)).softmax(0)
    label = torch.nn.functional.one_hot(torch.randint(0, num_classes, shape, generator=g), num_classes)
    entropy = -(prob * prob.clamp_min(1e-12).log()).sum(0, keepdim=True)
    entropy = (entropy * (0.5 + torch.rand(1, *shape, generator=g))).clamp(max=math.log(num_classes))
    mask = torch.rand(1, *shape, generator=g) > 0.3
    return {"prob": prob, "label": label.movedim(-1, 0).float(), "entropy": entropy, "mask": mask}


def _hand_ece(value: torch.Tensor, target: torch.Tensor, n_bins: int = 15, low: float = 0.0) -> float:
    """sum_b (n_b / n) |acc_b - conf_b| with equal-width bins [l, u) over [low, 1], written out."""
    value, target = value.double().flatten(), target.double().flatten()
    idx = ((value - low) / (1 - low) * n_bins).floor().clamp(0, n_bins - 1).long()
    total = sum(
        float((idx == b).sum()) * abs(float(target[idx == b].mean()) - float(value[idx == b].mean()))
        for b in range(n_bins)
        if (idx == b).any()
    )
    return total / value.numel()


class TestFunctions(unittest.TestCase):
    def test_binned_calibration_error(self):
        counts = torch.tensor([2.0, 0.0, 2.0])
        sum_confidence, sum_correct = torch.tensor([0.5, 0, 1.8]), torch.tensor([1.0, 0, 1])
        self.assertAlmostEqual(binned_calibration_error(counts, sum_confidence, sum_correct), 0.325)  # (.5 + .8) / 4
        self.assertTrue(math.isnan(binned_calibration_error(torch.zeros(3), torch.zeros(3), torch.zeros(3))))

    def test_histogram_roc_auc(self):
        # positives at bins 2, 1; negatives at bins 0, 1 -> pairs (2>0), (2>1), (1>0), (1=1 tie) -> 3.5 / 4
        self.assertAlmostEqual(histogram_roc_auc(torch.tensor([0.0, 1, 1]), torch.tensor([1.0, 1, 0])), 0.875)
        self.assertTrue(math.isnan(histogram_roc_auc(torch.zeros(3), torch.ones(3))))
        with self.assertRaisesRegex(ValueError, "same shape"):
            histogram_roc_auc(torch.zeros(3), torch.zeros(4))

    def test_reliability_histogram_bins(self):
        # bins [0, .5) and [.5, 1]: .5 and 1.0 belong to the upper bin, out-of-range values are clamped
        value = torch.tensor([0.0, 0.49, 0.5, 1.0, -0.01, 1.01])
        target = torch.tensor([1.0, 0, 1, 1, 0, 1])
        hist = reliability_histogram(value, target, 2)
        self.assertEqual(hist.dtype, torch.float64)
        self.assertEqual(hist[0].tolist(), [3.0, 3.0])
        self.assertAlmostEqual(float(hist[1, 1]), 2.51, places=6)
        self.assertEqual(hist[2].tolist(), [1.0, 3.0])
        # over [1/3, 1] with 2 bins the inner edge is 2/3
        chance = reliability_histogram(torch.tensor([0.4, 0.66, 0.67, 0.9]), torch.ones(4), 2, low=1 / 3)
        self.assertEqual(chance[0].tolist(), [2.0, 2.0])

    def test_score_histogram(self):
        score = torch.tensor([0.0, 1e-13, 1e-6, 0.01, 0.69, 5.0])
        correct = torch.tensor([1.0, 0, 1, 0, 1, 0])
        hist = score_histogram(score, correct, 8, math.log(2), "log")
        self.assertEqual(hist.shape, (2, 8))
        self.assertEqual(float(hist.sum()), 6.0)
        self.assertEqual((float(hist[0].sum()), float(hist[1].sum())), (3.0, 3.0))  # errors, correct
        self.assertEqual((float(hist[1, 0]), float(hist[0, 0])), (1.0, 1.0))  # 0 and 1e-13 share the first bin
        self.assertEqual(float(hist[0, -1]), 1.0)  # 5 > log 2: last bin
        linear = score_histogram(score, correct, 8, math.log(2), "linear")
        # linear bins (width log(2) / 8): 0, 1e-13, 1e-6 and .01 tie in the first bin, which log bins separate
        self.assertEqual(float(linear[:, 0].sum()), 4.0)
        self.assertEqual(float(hist[:, 0].sum()), 2.0)
        with self.assertRaisesRegex(ValueError, "score_scale must be one of"):
            score_histogram(score, correct, 8, 1.0, "sqrt")


class TestAgainstMONAI(unittest.TestCase):
    def test_plain_ece_of_a_case_equals_calibration_error_metric(self):
        """Per case and without a mask, our ECE is MONAI's CalibrationErrorMetric (off the bin edges)."""
        metric = VoxelCalibration()
        fg_metric = CalibrationErrorMetric(num_bins=15, include_background=False, metric_reduction="none")
        top_metric = CalibrationErrorMetric(num_bins=15, metric_reduction="none")
        for seed in range(3):
            c = _case(seed)
            values = metric.histograms(c["prob"], c["label"]).values()
            fg = fg_metric(y_pred=c["prob"][None], y=c["label"][None])
            self.assertAlmostEqual(values["fg_ece"], float(fg[0, 0]), places=5)
            conf, pred = c["prob"].max(0)
            correct = (pred == c["label"].argmax(0)).float()
            top = top_metric(y_pred=conf[None, None], y=correct[None, None])
            self.assertAlmostEqual(values["ece"], float(top[0, 0]), places=5)

    def test_why_calibration_error_metric_is_not_used(self):
        """MONAI keeps one value per case: the pooled ECE is not their mean; and an inner bin edge goes lower."""
        metric = VoxelCalibration()
        top_metric = CalibrationErrorMetric(num_bins=15, metric_reduction="none")
        cases = [_case(3, shape=(4, 4, 4)), _case(4, shape=(9, 9, 9))]
        confs, corrects = [], []
        for c in cases:
            metric.update(metric.histograms(c["prob"], c["label"]))
            conf, pred = c["prob"].max(0)
            confs.append(conf.flatten())
            corrects.append((pred == c["label"].argmax(0)).float().flatten())
            top_metric(y_pred=confs[-1][None, None], y=corrects[-1][None, None])
        pooled = metric.compute()["ece"]
        self.assertAlmostEqual(pooled, _hand_ece(torch.cat(confs), torch.cat(corrects)), places=9)
        self.assertNotAlmostEqual(pooled, float(top_metric.aggregate(reduction="mean")), places=4)
        # a confidence of exactly .5 with 2 bins: [.5, 1] here (Guo et al.), the lower bin in MONAI
        value, target = torch.tensor([0.5, 0.9]), torch.tensor([1.0, 0.0])
        ours = binned_calibration_error(*reliability_histogram(value, target, 2))
        monai_metric = CalibrationErrorMetric(num_bins=2, metric_reduction="none")
        monai = monai_metric(y_pred=value.view(1, 1, 2), y=target.view(1, 1, 2))
        self.assertAlmostEqual(ours, abs(1 - 1.4) / 2, places=6)
        self.assertAlmostEqual(float(monai[0, 0]), (0.5 + 0.9) / 2, places=6)

    def test_auc_agrees_with_compute_roc_auc(self):
        c = _case(5, shape=(20, 20, 20))
        g = torch.Generator().manual_seed(5)
        c["label"] = (torch.rand(1, 20, 20, 20, generator=g) < c["prob"][1:]).long()  # errors where p is unsure
        for scale in ("log", "linear"):
            metric = VoxelCalibration(uncertainty_keys="entropy", score_scale=scale)
            values = metric.histograms(c["prob"], c["label"], scores={"entropy": c["entropy"]}).values()
            error = (c["prob"].argmax(0) != c["label"][0]).float().flatten()
            exact = compute_roc_auc(c["entropy"].flatten(), error)
            self.assertGreater(exact, 0.6)
            self.assertAlmostEqual(values["auc_entropy"], exact, delta=1e-3, msg=scale)


class TestVoxelCalibration(unittest.TestCase):
    def test_hand_example(self):
        # p_fg = .9 .9 .2 .6, label 1 0 0 0, 2 bins: top label confidences .9 .9 .8 .6 correct 1 0 1 0
        prob = torch.tensor([[0.1, 0.1, 0.8, 0.4], [0.9, 0.9, 0.2, 0.6]])
        label = torch.tensor([[1, 0, 0, 0]])  # class indices
        metric = VoxelCalibration(n_bins=2)
        case = metric.histograms(prob, label)
        self.assertIsInstance(case, CalibrationHistograms)
        self.assertAlmostEqual(case.values()["ece"], 0.3, places=6)  # |2 - 3.2| / 4
        self.assertAlmostEqual(case.values()["fg_ece"], 0.4, places=6)  # (|0 - .2| + |1 - 2.4|) / 4
        self.assertEqual((case.n_voxels, case.voxel_accuracy), (4, 0.5))
        self.assertEqual(metric.num_classes, None)  # histograms() leaves the state alone
        metric.update(case)
        self.assertEqual(metric.compute(), {"ece": case.values()["ece"], "fg_ece": case.values()["fg_ece"],
                                            "voxel_accuracy": 0.5, "n_voxels": 4})
        table = case.reliability_table()
        self.assertEqual([r["curve"] for r in table], ["top_label"] * 2 + ["foreground"] * 2)
        fg1 = table[3]
        self.assertEqual((fg1["bin"], fg1["lower"], fg1["upper"], fg1["count"]), (1, 0.5, 1.0, 3))
        self.assertAlmostEqual(fg1["mean_confidence"], 0.8, places=6)
        self.assertAlmostEqual(fg1["accuracy"], 1 / 3, places=6)
        self.assertTrue(math.isnan(table[0]["mean_confidence"]))  # an empty bin

    def test_chance_range_pred_and_mask(self):
        prob = torch.tensor([[0.1, 0.1, 0.8, 0.4], [0.9, 0.9, 0.2, 0.6]])
        label = torch.tensor([[1, 0, 0, 0]])
        metric = VoxelCalibration(n_bins=2, top_label_range="chance")
        case = metric.histograms(prob, label)
        self.assertAlmostEqual(case.values()["ece"], 0.3, places=6)  # (|0 - .6| + |2 - 2.6|) / 4
        self.assertEqual([r["lower"] for r in case.reliability_table()[:2]], [0.5, 0.75])
        masked = VoxelCalibration(n_bins=2).histograms(prob, label, mask=torch.tensor([[1, 1, 0, 0]]))
        self.assertEqual(masked.n_voxels, 2)
        self.assertAlmostEqual(masked.values()["ece"], abs(1 - 1.8) / 2, places=6)
        # background predicted everywhere: confidences .1 .1 .8 .4, correct 0 1 1 1
        forced = VoxelCalibration(n_bins=2).histograms(prob, label, pred=torch.zeros(1, 4))
        self.assertAlmostEqual(forced.values()["ece"], (abs(2 - 0.6) + abs(1 - 0.8)) / 4, places=6)

    def test_mask_equals_the_masked_voxels_alone(self):
        c = _case(6)
        metric = VoxelCalibration(uncertainty_keys="entropy")
        keep = c["mask"][0]
        masked = metric.histograms(c["prob"], c["label"], mask=c["mask"], scores={"entropy": c["entropy"]})
        subset = metric.histograms(c["prob"][:, keep], c["label"][:, keep], scores={"entropy": c["entropy"][:, keep]})
        for a, b in ((masked.top, subset.top), (masked.fg, subset.fg), (masked.scores, subset.scores)):
            self.assertTrue(torch.allclose(a, b, rtol=0, atol=1e-9))
        conf, pred = c["prob"][:, keep].max(0)
        self.assertAlmostEqual(masked.values()["ece"], _hand_ece(conf, pred == c["label"][:, keep].argmax(0)), places=9)

    def test_chunks_do_not_change_the_result(self):
        c = _case(7, num_classes=3)
        metric = VoxelCalibration(uncertainty_keys="entropy", foreground_channel=2)
        whole = metric.histograms(c["prob"], c["label"], mask=c["mask"], scores={"entropy": c["entropy"]})
        with mock.patch("monai_dwp.metrics.calibration._CHUNK", 37):
            chunked = metric.histograms(c["prob"], c["label"], mask=c["mask"], scores={"entropy": c["entropy"]})
        for a, b in ((whole.top, chunked.top), (whole.fg, chunked.fg), (whole.scores, chunked.scores)):
            self.assertTrue(torch.allclose(a, b, rtol=1e-12, atol=1e-9))

    def test_pooling_batches_and_seen_maps(self):
        cases = [_case(8), _case(9)]
        metric = VoxelCalibration(uncertainty_keys=("entropy", "mutual_information"))
        metric.update(metric.histograms(cases[0]["prob"], cases[0]["label"], scores={"entropy": cases[0]["entropy"]}))
        metric.update((cases[1]["prob"][None], cases[1]["label"][None]))  # a batch without maps
        values = metric.compute()
        self.assertIn("auc_entropy", values)
        self.assertNotIn("auc_mutual_information", values)  # never given: not a metric
        self.assertTrue(math.isnan(metric.local_histograms().values()["auc_mutual_information"]))
        self.assertEqual(metric.local_histograms().seen.tolist(), [1.0, 0.0])
        batch = VoxelCalibration()
        batch.update((torch.stack([c["prob"] for c in cases]), torch.stack([c["label"] for c in cases])))
        conf = torch.cat([c["prob"].max(0).values.flatten() for c in cases])
        correct = torch.cat([(c["prob"].argmax(0) == c["label"].argmax(0)).flatten() for c in cases])
        self.assertAlmostEqual(batch.compute()["ece"], _hand_ece(conf, correct), places=9)
        self.assertEqual(batch.compute()["n_voxels"], 2 * 6 * 7 * 8)
        batch.reset()
        self.assertTrue(math.isnan(batch.compute()["ece"]))
        self.assertIsNone(batch.num_classes)

    def test_in_an_ignite_engine(self):
        from ignite.engine import Engine
        from monai.handlers import from_engine

        cases = [_case(10), _case(11)]
        engine = Engine(lambda e, batch: batch)  # the output: a list of case dicts, as a MONAI evaluator's
        VoxelCalibration(output_transform=from_engine(["prob", "label"])).attach(engine, "calibration")
        engine.run([cases], max_epochs=1)
        reference = VoxelCalibration()
        for c in cases:
            reference.update(reference.histograms(c["prob"], c["label"]))
        self.assertAlmostEqual(engine.state.metrics["ece"], reference.compute()["ece"], places=12)
        self.assertEqual(engine.state.metrics["n_voxels"], 2 * 6 * 7 * 8)

    def test_bad_input(self):
        metric = VoxelCalibration(uncertainty_keys="entropy")
        prob, label = _case(12)["prob"], _case(12)["label"]
        with self.assertRaisesRegex(ValueError, "K >= 2 classes"):
            metric.histograms(prob[:1], label[:1])
        with self.assertRaisesRegex(ValueError, r"y must be one-hot \(2, 6, 7, 8\) or class indices"):
            metric.histograms(prob, label[:, :3])
        with self.assertRaisesRegex(ValueError, r"probabilities in \[0, 1\]"):
            metric.histograms(5 * prob, label)
        with self.assertRaisesRegex(ValueError, "pred must be one-hot"):
            metric.histograms(prob, label, pred=torch.zeros(3, 6, 7, 8))
        with self.assertRaisesRegex(ValueError, r"mask must have one value per voxel \(336\)"):
            metric.histograms(prob, label, mask=torch.ones(5, dtype=torch.bool))
        with self.assertRaisesRegex(ValueError, "not one of uncertainty_keys"):
            metric.histograms(prob, label, scores={"variance": torch.zeros(1, 6, 7, 8)})
        with self.assertRaisesRegex(ValueError, "uncertainty map 'entropy' must have one value per voxel"):
            metric.histograms(prob, label, scores={"entropy": torch.zeros(3)})
        with self.assertRaisesRegex(ValueError, "foreground_channel=2 but y_pred has 2 classes"):
            VoxelCalibration(foreground_channel=2).histograms(prob, label)
        metric.update((prob[None], label[None]))
        with self.assertRaisesRegex(ValueError, "y_pred has 3 classes, earlier cases had 2"):
            metric.histograms(torch.full((3, 2), 1 / 3), torch.zeros(1, 2))
        with self.assertRaisesRegex(ValueError, "other bins or uncertainty_keys"):
            metric.update(VoxelCalibration(n_bins=4).histograms(prob, label))
        with self.assertRaisesRegex(ValueError, "must be batches"):
            metric.update((prob[:, :, 0, 0], label[:, :, 0, 0]))  # (K, N): no batch dimension
        with self.assertRaisesRegex(TypeError, "takes \\(y_pred, y\\) batches"):
            metric.update({"y_pred": prob})

    def test_arguments(self):
        for kwargs, message in (
            ({"n_bins": 1}, "n_bins must be ≥ 2, got 1"),
            ({"n_bins": True}, "n_bins must be an integer, got True"),
            ({"score_bins": 1}, "score_bins must be ≥ 2, got 1"),
            ({"top_label_range": "half"}, "top_label_range must be one of"),
            ({"score_scale": "sqrt"}, "score_scale must be one of"),
            ({"score_max": 0.0}, "score_max must be a finite number"),
            ({"score_max": float("inf")}, "score_max must be a finite number"),
            ({"foreground_channel": -1}, "foreground_channel must be ≥ 0, got -1"),
            ({"uncertainty_keys": ("entropy", "entropy")}, "uncertainty_keys must be distinct"),
        ):
            with self.assertRaisesRegex((ValueError, TypeError), message, msg=str(kwargs)):
                VoxelCalibration(**kwargs)


def _ddp_worker(local_rank: int, out_dir: str) -> None:
    import ignite.distributed as idist

    # a forked child must not enter the OpenMP pool its parent already started (it would wait forever on the
    # parent's threads, which the fork did not copy): one thread
    torch.set_num_threads(1)
    rank = idist.get_rank()
    cases = [_case(20, num_classes=3), _case(21, shape=(4, 5, 6), num_classes=3), _case(22, num_classes=3)]
    results = {}
    for keys in (("entropy",), ()):
        metric = VoxelCalibration(uncertainty_keys=keys, top_label_range="chance", foreground_channel=2)
        # rank 0 has two cases, rank 1 none: its number of classes comes from rank 0 (MAX)
        for c in cases[:2] if rank == 0 else []:
            scores = {"entropy": c["entropy"]} if keys else None
            metric.update(metric.histograms(c["prob"], c["label"], mask=c["mask"], scores=scores))
        hist = metric.compute_histograms()
        results[keys] = {"values": metric.compute(), "table": hist.reliability_table(), "top": hist.top}
        if rank == 0:  # every case in one process, without collectives
            serial = VoxelCalibration(uncertainty_keys=keys, top_label_range="chance", foreground_channel=2)
            for c in cases[:2]:
                scores = {"entropy": c["entropy"]} if keys else None
                serial.update(serial.histograms(c["prob"], c["label"], mask=c["mask"], scores=scores))
            local = serial.local_histograms()
            results[("serial", keys)] = {"values": local.values(), "table": local.reliability_table(), "top": local.top}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


@requires_fork
class TestDistributed(unittest.TestCase):
    def test_gloo_sync_all_reduce(self):
        """Two gloo ranks, one without any case: the same histograms, values and table on both as in one process."""
        with tempfile.TemporaryDirectory() as tmp:
            run_two_gloo_ranks(_ddp_worker, tmp)
            ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in (0, 1)]
        for keys in (("entropy",), ()):
            serial = ranks[0][("serial", keys)]
            for result in (ranks[0][keys], ranks[1][keys]):
                self.assertTrue(torch.equal(result["top"], serial["top"]))
                self.assertEqual(str(result["table"]), str(serial["table"]))
                self.assertEqual(result["table"][0]["lower"], 1 / 3)  # K = 3 on the rank without cases too
                for key, value in serial["values"].items():
                    self.assertAlmostEqual(result["values"][key], value, places=12, msg=(keys, key))
            self.assertEqual("auc_entropy" in ranks[1][keys]["values"], bool(keys))


if __name__ == "__main__":
    unittest.main()
