"""Where does a ``sampled`` training step spend the time a deterministic step does not? Operator by operator.

``benchmarks/speed.py`` measures the ratio of a Bayesian ``sampled`` train step to a deterministic one; this
script says what the difference is made of. Both steps (the appendix-B ``DWPUNet``, Adam, Dice + cross-entropy,
``--batch`` patches of ``--size``³, as ``speed.py`` builds them) run under :mod:`torch.profiler`, interleaved:
``--rounds`` rounds of ``--steps`` profiled steps of each kind. Per operator it reports the self CPU time per step
of each kind and the difference, and groups the operators that only the ``sampled`` step runs more of:

- the weight draw: ``aten::normal_`` (one :math:`\\varepsilon` per weight per step);
- forming :math:`W = \\mu + e^{\\log\\sigma} \\odot \\varepsilon` and its backward (``exp``, ``mul``, ``add`` and
  their backward nodes);
- the optimizer over twice the parameters (``Adam.step``'s ``lerp_``, ``addcdiv_``, ``sqrt``, ... and
  ``AccumulateGrad``);
- the convolutions and everything else, which both steps run alike: their difference is the noise of the timing.

The profiler's own overhead inflates small operators; unprofiled step times of the same rounds are reported beside.
Writes ``benchmarks/results/step_profile.md``. Nothing asserts a timing.

Usage::

    python benchmarks/step_profile.py --size 32 --batch 4
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import describe_machine  # noqa: E402
from _stats import paired_interval  # noqa: E402
from speed import _build  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from monai_dwp.utils.io import atomic_write  # noqa: E402

__all__ = ["GROUPS", "group_of", "profile_steps", "render", "main"]

GROUPS: dict[str, tuple[str, ...]] = {
    "weight draw": ("aten::normal_",),
    "forming the weight (forward and backward)": (
        "aten::exp", "aten::mul", "aten::add", "ExpBackward0", "MulBackward0", "AddBackward0",
        "autograd::engine::evaluate_function: ExpBackward0", "autograd::engine::evaluate_function: MulBackward0",
        "autograd::engine::evaluate_function: AddBackward0", "aten::new_empty_strided"),
    "optimizer and gradient accumulation": (
        "Optimizer.step#Adam.step", "Optimizer.zero_grad#Adam.zero_grad", "aten::lerp_", "aten::addcdiv_",
        "aten::addcmul_", "aten::sqrt", "aten::mul_", "aten::add_", "aten::div", "aten::div_",
        "torch::autograd::AccumulateGrad", "aten::_foreach_add_", "aten::_fused_adam_"),
    "convolutions": ("aten::convolution_backward", "aten::mkldnn_convolution",
                     "autograd::engine::evaluate_function: ConvolutionBackward0"),
}
"""Operators by what they do; an operator not listed is ``other``."""


def group_of(op: str) -> str:
    """The group of :data:`GROUPS` that lists ``op``, else ``"other"``."""
    return next((g for g, ops in GROUPS.items() if op in ops), "other")


def profile_steps(size: int, batch: int, rounds: int, steps: int) -> tuple[dict, dict]:
    """Profile interleaved deterministic and sampled steps.

    Returns:
        ``({kind: {op: self ms per step}}, {kind: [unprofiled seconds per step, one per round]})``.
    """
    from torch.profiler import ProfilerActivity, profile

    dev = torch.device("cpu")
    fns = {k: _build(k, size, batch, dev)[1] for k in ("deterministic", "sampled")}
    for _ in range(2):
        for fn in fns.values():
            fn()
    self_ms = {k: collections.Counter() for k in fns}
    plain = {k: [] for k in fns}
    for _ in range(rounds):
        for kind, fn in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            plain[kind].append((time.perf_counter() - start) / steps)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(steps):
                    fn()
            for event in prof.key_averages():
                self_ms[kind][event.key] += event.self_cpu_time_total / 1000 / (steps * rounds)
    return {k: dict(v) for k, v in self_ms.items()}, plain


def render(self_ms: dict, plain: dict, size: int, batch: int, machine: str, threshold: float = 0.1) -> str:
    """The markdown of one profile: groups, then every operator whose per-step difference exceeds ``threshold`` ms."""
    det, samp = self_ms["deterministic"], self_ms["sampled"]
    ops = set(det) | set(samp)
    diff = {op: samp.get(op, 0.0) - det.get(op, 0.0) for op in ops}
    total_det = sum(det.values())
    ratio = paired_interval([s / d for s, d in zip(plain["sampled"], plain["deterministic"])])
    det_ms = statistics.median(plain["deterministic"]) * 1000
    lines = ["# A `sampled` train step against a deterministic one, operator by operator", "",
             f"Appendix-B `DWPUNet`, batch {batch} × {size}³, Adam (fused, as the bundles), Dice + cross-entropy, one PyTorch process; "
             f"{len(plain['sampled'])} interleaved rounds. Written by `benchmarks/step_profile.py`; {machine}.", "",
             f"Unprofiled: deterministic step {det_ms:.1f} ms (median), `sampled` / deterministic "
             f"{ratio[0]:.3f}× [{ratio[1]:.3f}–{ratio[2]:.3f}] (paired by round, 95 % interval).", "",
             "Self CPU time per step under the profiler (its overhead inflates small operators; the deterministic "
             f"step totals {total_det:.1f} ms here):", "",
             "| group | deterministic ms | `sampled` ms | difference ms | difference, % of the unprofiled "
             "deterministic step |", "|---|---|---|---|---|"]
    by_group: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for op in ops:
        g = by_group[group_of(op)]
        g[0] += det.get(op, 0.0)
        g[1] += samp.get(op, 0.0)
    for group in (*GROUPS, "other"):
        d, s = by_group[group]
        lines.append(f"| {group} | {d:.2f} | {s:.2f} | {s - d:+.2f} | {100 * (s - d) / det_ms:+.1f} % |")
    extra = sum(by_group[g][1] - by_group[g][0] for g in GROUPS if g != "convolutions")
    lines += ["", f"The work only a `sampled` step does (the three groups above the convolutions): {extra:+.2f} ms per "
                  f"step under the profiler, {100 * extra / det_ms:.1f} % of the unprofiled deterministic step.", "",
              f"Every operator whose time per step differs by more than {threshold} ms:", "",
              "| operator | group | deterministic ms | `sampled` ms | difference ms |", "|---|---|---|---|---|"]
    for op in sorted((op for op in ops if abs(diff[op]) > threshold), key=lambda op: -abs(diff[op])):
        lines.append(f"| `{op}` | {group_of(op)} | {det.get(op, 0.0):.2f} | {samp.get(op, 0.0):.2f} | "
                     f"{diff[op]:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=32, help="patch edge (voxels)")
    parser.add_argument("--batch", type=int, default=4, help="patches per step (the bundles train on 4)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=5, help="steps of each kind per round, profiled and not")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "step_profile.md")
    args = parser.parse_args(argv)
    for name in ("size", "batch", "rounds", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}.")
    from monai_dwp.utils import tune_allocator

    tuned = tune_allocator()  # as every bundle process does first
    machine = describe_machine("cpu", 1)
    self_ms, plain = profile_steps(args.size, args.batch, args.rounds, args.steps)
    machine += (f", {os.getloadavg()[0]:.1f} at the end; glibc's `malloc` tuned as in the bundles: "
                f"{'yes' if tuned else 'no'}")
    text = render(self_ms, plain, args.size, args.batch, machine)
    atomic_write(args.out, "w", lambda f: f.write(text))
    print(text)
    return args.out


if __name__ == "__main__":
    main()
