"""The two-rank gloo helper of the DDP tests also works where CUDA is available (one GPU, or CUDA used before)."""

from __future__ import annotations

import os
import tempfile
import unittest
from unittest import mock

from tests._distributed import requires_fork, run_two_gloo_ranks


def _write_rank(local_rank: int, out_dir: str) -> None:
    import ignite.distributed as idist

    with open(os.path.join(out_dir, f"rank{idist.get_rank()}"), "w") as f:
        f.write(str(idist.get_world_size()))


def _one_gpu_set_device(device: object) -> None:
    raise RuntimeError(f"CUDA error: invalid device ordinal {device} (a one-GPU machine)")


@requires_fork
class TestRunTwoGlooRanks(unittest.TestCase):
    def test_ranks_run_on_a_machine_that_has_a_gpu(self):
        """As on a one-GPU machine: CUDA available, and ``set_device`` fails for any rank (the forked children may
        not use CUDA either). Without hiding CUDA from them, Ignite's setup calls it and both ranks fail."""
        with tempfile.TemporaryDirectory() as tmp, mock.patch("torch.cuda.is_available", return_value=True), \
                mock.patch("torch.cuda.set_device", side_effect=_one_gpu_set_device), \
                mock.patch("torch.cuda.current_device", side_effect=_one_gpu_set_device):
            run_two_gloo_ranks(_write_rank, tmp)
            self.assertEqual(sorted(os.listdir(tmp)), ["rank0", "rank1"])
            self.assertEqual({open(os.path.join(tmp, r)).read() for r in ("rank0", "rank1")}, {"2"})


if __name__ == "__main__":
    unittest.main()
