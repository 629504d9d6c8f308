"""Test-session settings.

Under pytest-xdist (``make test`` runs two workers), each worker and every process it starts (the bundles run as
``python -m monai.bundle run``) compute on ``cpu_count // workers`` threads, so that the workers together use the
machine's cores once instead of oversubscribing them (two workers of two OpenMP threads each on two cores wait on
each other's threads at every parallel region). An ``OMP_NUM_THREADS`` set by the caller is kept.
"""

from __future__ import annotations

import os

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if not os.environ.get("PYTEST_XDIST_WORKER") or workers < 1:
        return
    threads = int(os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers))))
    torch.set_num_threads(threads)
