"""``monai_dwp.utils.allocator``: freed tensors' memory is reused instead of being page-faulted in again."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import unittest

PROBE = textwrap.dedent(
    """
    import resource, sys
    import torch
    from monai_dwp.utils.allocator import tune_allocator

    applied = tune_allocator() if sys.argv[1] == "tuned" else None
    from monai_dwp.networks.nets import DWPUNet

    torch.set_num_threads(1)
    net, x = DWPUNet(), torch.randn(2, 1, 32, 32, 32)
    for _ in range(3):  # the heap grows to a step's needs
        net(x).sum().backward()
    faults = []
    for _ in range(5):  # training steps: the same activations allocated and freed again
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(x).sum().backward()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
    print(applied, sorted(faults)[2])  # the median step
    """
)

LARGE_PROBE = textwrap.dedent(
    """
    import resource, sys
    import torch
    from monai_dwp.utils.allocator import tune_allocator

    applied = tune_allocator() if sys.argv[1] == "tuned" else None
    for _ in range(10):  # 64 MiB blocks, above glibc's largest mmap threshold (32 MiB); the heap grows until the
        torch.empty(2**24).fill_(1.0)  # aligned requests fit freed chunks (about 7 blocks)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):  # allocated, written and freed again, as an activation of a 64³ step
        torch.empty(2**24).fill_(1.0)
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
    """
)

PEAK_PROBE = textwrap.dedent(
    """
    import resource, sys
    import torch
    from monai_dwp.utils.allocator import tune_allocator

    applied = tune_allocator() if sys.argv[1] == "tuned" else None
    def step():  # a step that needs 1.5 GiB at its peak (24 blocks of 64 MiB alive together), then frees it all,
        blocks = [torch.empty(2**24).fill_(1.0) for _ in range(24)]  # as a 64³ batch-4 `local` step does
        del blocks

    for _ in range(4):  # the heap grows over the first steps, as freed blocks land in different places
        step()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        step()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
    """
)


def _probe(mode: str, probe: str = PROBE) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True).stdout
    applied, faults = out.split()
    return applied, int(faults)


@unittest.skipUnless(sys.platform.startswith("linux"), "glibc's malloc (Linux) is what it tunes")
class TestTuneAllocator(unittest.TestCase):
    def test_freed_tensors_are_reused_not_faulted_in_again(self):
        applied, tuned = _probe("tuned")
        if applied == "False":
            self.skipTest("the C library is not glibc")
        self.assertEqual(applied, "True")
        _, default = _probe("default")
        # page faults of the median step. default: the large activations are fresh mmaps, faulted in page by page at
        # every step (2,000-12,000 faults a step in 36 runs); tuned: they come from the heap, whose pages the warm-up
        # steps faulted in already (0-4 faults). The heap may still grow late into pages never touched, 1,024-4,096
        # faults in one or two of the five steps (a CI run failed on the five steps' total: 4,102 against 20,325
        # default), hence the median.
        self.assertGreater(default, 1_000)
        self.assertLess(tuned, 64)

    def test_blocks_above_the_mmap_threshold_are_reused_too(self):
        applied, tuned = _probe("tuned", LARGE_PROBE)
        if applied == "False":
            self.skipTest("the C library is not glibc")
        _, default = _probe("default", LARGE_PROBE)
        # default (and with the raised threshold alone): each 64 MiB block is a fresh mmap, 16,384 pages faulted in
        # five times; tuned: the heap's pages, faulted in while it grew
        self.assertGreater(default, 5 * 16_000)
        self.assertLess(tuned, 1_000)

    def test_the_heap_is_not_trimmed_after_a_large_peak(self):
        applied, tuned = _probe("tuned", PEAK_PROBE)
        if applied == "False":
            self.skipTest("the C library is not glibc")
        # a trim threshold (1 GiB, say) would hand the freed top of the heap back after every step and fault it in
        # again at the next (622,592 pages of 4 KiB over the three steps, ~13 blocks a step); untrimmed, the pages
        # stay. The heap may still grow into its untouched pad late (in 3 of 20 runs with two warm-up steps the
        # second measured step faulted one new block, 16,384 pages), so the bound is three blocks over three steps.
        self.assertLess(tuned, 3 * 16_384)


if __name__ == "__main__":
    unittest.main()
