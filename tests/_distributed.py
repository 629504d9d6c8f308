"""Two gloo processes on this machine, for the tests of DDP reductions (no GPU needed)."""

from __future__ import annotations

import multiprocessing
import socket
import unittest
from collections.abc import Callable

FORK = "fork" in multiprocessing.get_all_start_methods()
requires_fork = unittest.skipUnless(FORK, "forking start method needed (spawn is slow)")


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_gloo_ranks(worker: Callable[..., None], *args: object) -> None:
    """Run ``worker(local_rank, *args)`` in two forked gloo processes (Ignite's ``idist.Parallel``). A worker that
    computes with tensors should call ``torch.set_num_threads(1)`` first: a forked child must not enter the OpenMP
    pool of its parent.

    The children see no GPU: where CUDA is available Ignite's native model calls ``torch.cuda.set_device(local_rank)``
    even for gloo, which fails for rank 1 on a one-GPU machine and in any child forked after its parent used CUDA.
    """
    from unittest import mock

    import ignite.distributed as idist

    with mock.patch("torch.cuda.is_available", return_value=False):  # inherited by the forked children
        with idist.Parallel(backend="gloo", nproc_per_node=2, start_method="fork", master_addr="127.0.0.1",
                            master_port=free_port()) as parallel:
            parallel.run(worker, *args)
