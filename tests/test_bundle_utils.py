from __future__ import annotations

import subprocess
import sys
import tempfile
import types
import unittest
from pathlib import Path

import torch

from monai_dwp.bundle_utils import (
    bundle_path,
    KEY_RULES,
    BundleInputError,
    InvalidKeyError,
    MissingHandoffError,
    check_keys,
    checked,
    end_distributed,
    latest_checkpoint,
    require_handoff,
    require_handoffs,
    resume_handlers,
    run_name,
)
from tests._distributed import free_port


class TestBundleUtils(unittest.TestCase):
    def test_checkpoints_and_handoffs(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            self.assertIsNone(latest_checkpoint(root))
            for epoch in (2, 10, 9):
                torch.save({"model": torch.nn.Linear(1, 1).state_dict()}, root / f"checkpoint_epoch={epoch}.pt")
            self.assertTrue(latest_checkpoint(root).endswith("checkpoint_epoch=10.pt"))
            self.assertEqual(resume_handlers(root, {"model": torch.nn.Linear(1, 1)}, resume=False), [])
            self.assertEqual(len(resume_handlers(root, {"model": torch.nn.Linear(1, 1)}, resume=True)), 1)
            self.assertEqual(require_handoff(root / "checkpoint_epoch=2.pt", "model"), str(root / "checkpoint_epoch=2.pt"))
            self.assertEqual(len(require_handoffs(f"{tmp}/checkpoint_epoch=*.pt")), 3)
            with self.assertRaisesRegex(FileNotFoundError, r"--resume true but .* holds no checkpoint_epoch=N.pt"):
                resume_handlers(root / "empty", {}, resume=True)
        with self.assertRaisesRegex(FileNotFoundError, r"source_ckpts \['x/\*.pt'\] matches no file; make them first with "
                                                       r"`python -m monai.bundle run --config_file bundles/dwp_pretrain"):
            require_handoffs("x/*.pt")
        with self.assertRaisesRegex(FileNotFoundError, r"prior_ckpt file 'p.pt' does not exist; .* --prior_ckpt PATH"):
            require_handoff("p.pt", "prior_ckpt")


    def test_resume_with_other_settings(self):
        """A state the checkpoint lacks stops with its name, unless its window starts after the resumed epoch."""
        swag = types.SimpleNamespace(start_epoch=5, state_dict=dict)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = {"iteration": 12, "epoch_length": 3, "max_epochs": 4}  # epoch 4
            torch.save({"model": {}, "trainer": trainer}, Path(tmp) / "checkpoint_epoch=4.pt")
            (loader,) = resume_handlers(tmp, {"model": 1, "trainer": 2, "swag": swag}, resume=True)
            self.assertEqual(sorted(loader.load_dict), ["model", "trainer"])
            swag.start_epoch = 4  # its window began before the interruption: those moments are lost
            with self.assertRaisesRegex(ValueError, r"holds no 'swag' state, so the interrupted run was made without "
                                                    r"it \(checkpoint entries: \['model', 'trainer'\]\)"):
                resume_handlers(tmp, {"model": 1, "trainer": 2, "swag": swag}, resume=True)
            with self.assertRaisesRegex(ValueError, r"holds no 'lr_scheduler' state"):
                resume_handlers(tmp, {"model": 1, "trainer": 2, "lr_scheduler": 3}, resume=True)
            with self.assertRaisesRegex(ValueError, r"holds the state of \['trainer'\], which this run does not have"):
                resume_handlers(tmp, {"model": 1, "swag": swag}, resume=True)  # a schedule switched off, say
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(torch.optim.SGD([torch.zeros(1)], lr=1.0), T_max=9)
            torch.save({"model": {}, "lr_scheduler": {"T_max": 12}}, Path(tmp) / "checkpoint_epoch=5.pt")
            with self.assertRaisesRegex(ValueError, r"anneals over 12 iterations, this run over 9: resume with the "
                                                    r"--epochs"):
                resume_handlers(tmp, {"model": 1, "lr_scheduler": schedule}, resume=True)
            schedule.T_max = 12
            self.assertEqual(len(resume_handlers(tmp, {"model": 1, "lr_scheduler": schedule}, resume=True)), 1)
            torch.save(torch.nn.Linear(1, 1).state_dict(), Path(tmp) / "checkpoint_epoch=6.pt")  # one object, bare
            (loader,) = resume_handlers(tmp, {"model": 1}, resume=True)
            self.assertEqual(list(loader.load_dict), ["model"])
            torch.save([1], Path(tmp) / "checkpoint_epoch=7.pt")
            with self.assertRaisesRegex(ValueError, r"is not a training checkpoint"):
                resume_handlers(tmp, {"model": 1}, resume=True)

    def test_resume_accepts_command_line_words(self):
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({"model": torch.nn.Linear(1, 1).state_dict()}, Path(tmp) / "checkpoint_epoch=1.pt")
            self.assertEqual(resume_handlers(tmp, {"model": torch.nn.Linear(1, 1)}, resume="false"), [])
            self.assertEqual(len(resume_handlers(tmp, {"model": torch.nn.Linear(1, 1)}, resume="true")), 1)


# One rank of a two-rank DDP run whose gloo workers are starved: every thread on one core and the workers at
# SCHED_IDLE, so a worker that has just run the final barrier is still runnable when the main thread goes on (and,
# should it be released only while the interpreter is finalising, the process aborts). Prints how many workers
# there are before ``end_distributed`` and their states once it has returned.
_STARVED_RANK = """
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import torch
import torch.distributed as dist
from monai_dwp.bundle_utils import _gloo_workers, end_distributed
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=int(sys.argv[1]), world_size=2)
ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))  # keeps the group and its workers alive
ddp(torch.randn(2, 4)).sum().backward()
workers = _gloo_workers()
for tid in workers:
    os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
end_distributed()
print("workers:", len(workers), flush=True)
print("worker states:", " ".join(_gloo_workers().values()), flush=True)
"""


class TestEndDistributed(unittest.TestCase):
    def test_destroys_the_group_and_is_a_no_op_without_one(self):
        import torch.distributed as dist

        end_distributed()  # nothing initialised: nothing happens
        self.assertFalse(dist.is_initialized())
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
        try:
            end_distributed()
            self.assertFalse(dist.is_initialized())
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()

    @unittest.skipUnless(sys.platform.startswith("linux"), "thread states from /proc (Linux)")
    def test_no_gloo_worker_is_left_runnable(self):
        """A gloo worker still runnable after the last barrier may release its work (and the Python objects in it)
        while the interpreter is finalising, and abort the rank. Starved as in ``_STARVED_RANK``, a worker of rank
        0 was runnable right after a bare ``barrier(); destroy_process_group()`` in 6 of 6 runs."""
        with tempfile.TemporaryDirectory() as tmp:
            procs = [subprocess.Popen([sys.executable, "-c", _STARVED_RANK, str(rank), f"{tmp}/store"],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                     for rank in (0, 1)]
            outs = [proc.communicate(timeout=300)[0] for proc in procs]
        for proc, out in zip(procs, outs):
            self.assertEqual(proc.returncode, 0, out[-3000:])
            self.assertNotIn("workers: 0\n", out)  # there were workers to starve
            self.assertNotIn("R", out.split("worker states:")[1].split(), out)


class TestCheckKeys(unittest.TestCase):
    def test_converts_command_line_booleans(self):
        out = check_keys(amp="false", resume="True", dwp_init=0, train_encoder="1", epochs=3, learning_rate=1e-3,
                         log_scale_lr="null", num_train_cases="None", sw_overlap=0.25)
        self.assertEqual(out, {"amp": False, "resume": True, "dwp_init": False, "train_encoder": True, "epochs": 3,
                               "learning_rate": 1e-3, "log_scale_lr": None, "num_train_cases": None, "sw_overlap": 0.25})
        self.assertIs(checked("amp", "false"), False)

    def test_every_rule_rejects_a_word(self):
        for key in KEY_RULES:
            with self.assertRaisesRegex(InvalidKeyError, rf"^--{key} must .*got 'flase'.* Fix the override or the "
                                                         rf"config value of '{key}'\.$"):
                check_keys(**{key: "flase"})

    @staticmethod
    def _first(bad):
        try:
            check_keys(**bad)
        except InvalidKeyError as error:
            return str(error)
        return None

    def test_ranges(self):
        for bad in ({"epochs": 0}, {"epochs": 2.5}, {"seed": -1}, {"sw_overlap": 1.0}, {"cache_rate": 1.5},
                    {"learning_rate": 0}, {"val_fraction": 0.0}, {"out_channels": 1}, {"mc_samples": 0},
                    {"kl_temperature": -1.0}, {"num_train_cases": 0}, {"swag_start_epoch": 0}, {"split_seed": -1}):
            self.assertIsNotNone(self._first(bad), bad)
        self.assertIsInstance(InvalidKeyError("x"), ValueError)
        self.assertIsInstance(MissingHandoffError("x"), FileNotFoundError)
        with self.assertRaisesRegex(KeyError, "no rule for the bundle key 'colour'"):
            check_keys(colour="red")

    def test_command_line_prints_one_line(self):
        code = ("import monai_dwp.bundle_utils as b\n"
                "try:\n    b.check_keys(amp='maybe')\nexcept ValueError as e:\n    raise RuntimeError('wrapped') from e")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        self.assertEqual(proc.returncode, 1)
        self.assertEqual(proc.stderr.strip().splitlines(), [
            "monai_dwp: --amp must be true or false (true/false/True/False/1/0), got 'maybe'. Fix the override or the "
            "config value of 'amp'."])
        proc = subprocess.run([sys.executable, "-c", "import monai_dwp.bundle_utils\nraise KeyError('other')"],
                              capture_output=True, text=True)
        self.assertIn("Traceback", proc.stderr)  # anything else keeps its traceback
        self.assertTrue(issubclass(InvalidKeyError, BundleInputError))



class TestBundlePath(unittest.TestCase):
    def test_relative_to_the_working_directory(self):
        self.assertEqual(bundle_path("bundles/dwp_finetune", "../dwp_prior/models/dwp_prior.pt"),
                         "bundles/dwp_prior/models/dwp_prior.pt")
        self.assertEqual(bundle_path("bundles/dwp_finetune", "../../data/tumour"), "data/tumour")

    def test_linked_bundle_finds_its_siblings(self):
        """A bundle linked into a MONAI Label app resolves its defaults beside the real bundle, not the link."""
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp).resolve()
            (root / "repo" / "bundles" / "dwp_finetune").mkdir(parents=True)
            (root / "app" / "model").mkdir(parents=True)
            link = root / "app" / "model" / "dwp_finetune"
            link.symlink_to(root / "repo" / "bundles" / "dwp_finetune", target_is_directory=True)
            self.assertEqual(bundle_path(link, "../../data/tumour"), str(root / "repo" / "data" / "tumour"))


class TestRunName(unittest.TestCase):
    def test_the_one_rule(self):
        self.assertEqual(run_name("dwp", 5, 0), "dwp_n5_seed0")
        self.assertEqual(run_name("gaussian_prior", 10, 2), "gaussian_prior_n10_seed2")
        self.assertEqual(run_name(None, None, 1), "seed1")  # a dwp_pretrain source net
        self.assertEqual(run_name("dwp", None, 0), "dwp_seed0")
        self.assertEqual(run_name(None, 3, 0), "n3_seed0")

    def test_bad_arguments(self):
        with self.assertRaisesRegex(TypeError, "seed must be an integer, got '0'"):
            run_name("dwp", 5, "0")
        with self.assertRaisesRegex(ValueError, "seed must be ≥ 0, got -1"):
            run_name("dwp", 5, -1)
        with self.assertRaisesRegex(ValueError, "num_train_cases must be ≥ 1, got 0"):
            run_name("dwp", 0, 0)
        with self.assertRaisesRegex(TypeError, "num_train_cases must be an integer, got True"):
            run_name("dwp", True, 0)
        with self.assertRaisesRegex(ValueError, "method must be a non-empty name without path separators"):
            run_name("a/b", 5, 0)
        with self.assertRaisesRegex(ValueError, "method must be a non-empty name"):
            run_name("", 5, 0)
        with self.assertRaisesRegex(TypeError, "method must be a string or None"):
            run_name(3, 5, 0)


if __name__ == "__main__":
    unittest.main()
