"""Cost of Monte Carlo inference (``MCInferer``) per weight sample against one deterministic forward pass.

Writes ``benchmarks/results/mc_inference.md`` and ``mc_inference.csv``. Nothing here asserts a timing.

What is measured, for the paper's DWPUNet (1 input, 2 output channels, widths 16/32/64/128), batch 1, at the
whole-volume sizes of the target data (64×80×64 at 3 mm, 96×112×96 at 2 mm), each with the whole volume at once
and with a sliding window (``roi_size`` 64³, overlap 0.25, constant blending):

- ``det. pass``: one forward pass of the deterministic DWPUNet (``SimpleInferer`` / ``SlidingWindowInferer``),
  in its own process, with that process's peak memory;
- ``mean pass``: one forward pass of the Bayesian DWPUNet in ``"mean"`` mode (posterior locations: the same
  convolutions as the deterministic network) through the same inferer, measured in the MC process, interleaved
  with the MC runs (mean pass, MC run, mean pass), so that load from other processes hits both alike;
- ``MC per sample``: the time of ``MCInferer(num_samples=T, return_uncertainty=True)`` divided by ``T``: per
  sample one weight draw, the forward pass(es) in ``"sampled"`` mode, softmax, per-sample entropy and the running
  sums, plus (amortised) the final entropy and mutual information maps;
- ``weight sampling``: the part of a sample spent forming ``W = loc + scale·ε`` (``BayesianConv`` does it in every
  forward, i.e. once per window) and drawing ``ε``, timed separately on the same weights;
- peak memory: on CPU the peak resident set size of a fresh process per configuration (``ru_maxrss``), on CUDA
  ``torch.cuda.max_memory_allocated``.

The ratio to watch is ``MC per sample / mean pass`` (target ≤ 1.05×).

Usage::

    python benchmarks/mc_inference.py                        # CPU, and CUDA when present
    python benchmarks/mc_inference.py --sizes 64x80x64 --num-samples 5 --device cpu
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_name, find_row, run_child, sync  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"




def _timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def _least(fn, device: torch.device, n: int = 5) -> float:
    """Minimum of ``n`` timings of ``fn()``: the least-contended figure for a short operation."""
    fn()
    return min(_timed(fn, device) for _ in range(n))


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class _Replay(torch.nn.Module):
    """Returns fixed logits; holds one unused BayesianConv so that MCInferer samples it (its own overhead only)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        from monai_dwp.networks import BayesianConv

        self.dummy = BayesianConv(3, 1, 1, kernel_size=1).to(logits.device)
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def measure(kind: str, size: list[int], roi: int | None, device: str, num_samples: int, repeats: int,
            threads: int | None) -> dict:
    """One configuration, run in its own process so that its peak memory is its own."""
    from monai.inferers import SimpleInferer, SlidingWindowInferer

    from monai_dwp.inferers import MCInferer
    from monai_dwp.networks import DWPUNet, bayesian_modules, stochastic_mode

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    net = DWPUNet(bayesian=kind == "mc").to(dev).eval()
    x = torch.randn(1, 1, *size, device=dev)
    inferer = SimpleInferer() if roi is None else SlidingWindowInferer(roi_size=roi, overlap=0.25)
    calls = [0]
    net.register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    row: dict = {"kind": kind, "size": "x".join(map(str, size)), "roi": roi or "", "batch": 1, "device": device,
                 "threads": torch.get_num_threads()}

    with torch.no_grad():
        if kind == "deterministic":
            inferer(x, net)  # warm-up
            calls[0] = 0
            times = [_timed(lambda: inferer(x, net), dev) for _ in range(repeats)]
            row.update(windows=calls[0] // repeats, det_pass_s=statistics.median(times), peak_mib=_peak_mib(dev))
            return row

        mc = MCInferer(num_samples=num_samples, roi_size=roi, overlap=0.25, return_uncertainty=True, seed=0)

        def mean_pass() -> None:
            with stochastic_mode(net, "mean"):
                inferer(x, net)

        mean_pass()  # warm-up
        calls[0] = 0
        mean_times, mc_times = [], []
        for _ in range(repeats):  # interleaved, so that load from other processes hits both alike
            mean_times.append(_timed(mean_pass, dev))
            mc_times.append(_timed(lambda: mc(x, net), dev))
            mean_times.append(_timed(mean_pass, dev))
        windows = calls[0] // (repeats * (2 + num_samples))
        peak = _peak_mib(dev)

        # what a sample adds to a forward pass, each part timed alone (minimum of several timings); on CPU with
        # one thread, an upper bound of the uncontended cost with more threads that other processes hardly disturb
        threads_before = torch.get_num_threads()
        if dev.type == "cpu":
            torch.set_num_threads(1)
        layers = list(bayesian_modules(net).values())
        draw_s = _least(lambda: [layer.resample() for layer in layers], dev, n=10)  # one draw of epsilon
        form_s = _least(lambda: [layer.sample_weight() for layer in layers], dev, n=10)  # loc + scale*eps
        replay = _Replay(torch.randn(1, net.out_channels, *size, device=dev))
        replay_mc = MCInferer(num_samples=num_samples, return_uncertainty=True, seed=0)
        post_s = _least(lambda: replay_mc(x, replay), dev, n=5) / num_samples  # probabilities, sums, maps
        torch.set_num_threads(threads_before)

    per_sample = statistics.median(mc_times) / num_samples
    mean_s = statistics.median(mean_times)
    overhead_s = draw_s + windows * form_s + post_s
    row.update(
        windows=windows,
        num_samples=num_samples,
        mean_pass_s=mean_s,
        mean_pass_min_s=min(mean_times),
        mc_total_s=statistics.median(mc_times),
        mc_per_sample_s=per_sample,
        ratio_to_mean_pass=per_sample / mean_s,
        draw_ms=1e3 * draw_s,
        form_ms_per_forward=1e3 * form_s,
        post_ms=1e3 * post_s,
        overhead_ms_per_sample=1e3 * overhead_s,
        ratio_from_components=(min(mean_times) + overhead_s) / min(mean_times),
        peak_mib=peak,
    )
    return row






def _size(text: str) -> list[int]:
    return [int(v) for v in text.lower().split("x")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=_size, nargs="+", default=[[64, 80, 64], [96, 112, 96]])
    parser.add_argument("--roi", type=int, default=64, help="sliding-window edge (cube); 0 skips the window runs")
    parser.add_argument("--num-samples", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="MC runs per configuration (each bracketed by passes)")
    parser.add_argument("--device", choices=["cpu", "cuda"], nargs="+", default=None)
    parser.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (default: PyTorch's)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(**json.loads(args.child))))
        return

    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rois = [None] + ([args.roi] if args.roi else [])
    load_before = os.getloadavg()
    start = time.perf_counter()
    rows = []
    for device in devices:
        for size in args.sizes:
            for roi in rois:
                for kind in ("deterministic", "mc"):
                    job = dict(kind=kind, size=size, roi=roi, device=device, num_samples=args.num_samples,
                               repeats=args.repeats, threads=args.threads)
                    print(f"{device} {'x'.join(map(str, size))} roi={roi} {kind} ...", flush=True)
                    rows.append(run_child(__file__, **job))
    wall = time.perf_counter() - start
    load_after = os.getloadavg()

    args.output_dir.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(args.output_dir / "mc_inference.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    _write_markdown(rows, devices, rois, args, wall, load_before, load_after)
    print((args.output_dir / "mc_inference.md").read_text())




def _write_markdown(rows, devices, rois, args, wall, load_before, load_after) -> None:
    t = args.num_samples
    lines = [
        "# Monte Carlo inference cost: `MCInferer` per weight sample vs one deterministic pass",
        "",
        f"Written by `python benchmarks/mc_inference.py`; PyTorch {torch.__version__}, DWPUNet (1→2 channels, "
        f"widths 16/32/64/128, 19 Bayesian 3×3×3 layers), **batch 1**, T = {t} samples with all three uncertainty "
        f"maps, {args.repeats} MC run(s) per configuration, each between two mean-mode passes (medians). "
        f"Sliding window: roi {args.roi}³, overlap 0.25, constant blending, `sw_batch_size=1`. "
        f"Total wall time {wall:.0f} s.",
        "",
        "- *det. pass*: one forward pass of the deterministic DWPUNet, in its own process;",
        "- *mean pass*: one forward pass of the Bayesian DWPUNet in `\"mean\"` mode (the same convolutions) through "
        "the same inferer, in the MC process, interleaved with the MC run;",
        "- *MC / sample*: wall time of `MCInferer(num_samples=T, return_uncertainty=True)` / T;",
        "- *measured ratio*: MC / sample ÷ mean pass;",
        "- *overhead / sample*: what a sample adds to a forward pass, each part timed alone (minimum of 5–10 "
        "timings; on CPU with one thread, an upper bound of the uncontended multi-threaded cost that other "
        "processes hardly disturb): drawing ε once + forming `loc + scale·ε` once per window (`BayesianConv` does "
        "it in every forward) + probabilities, entropies and running sums (MCInferer on a network that replays fixed "
        "logits); *ratio from components* = (fastest mean pass + overhead) ÷ fastest mean pass;",
        "- peak memory: CPU, peak RSS of the configuration's own fresh process; CUDA, `max_memory_allocated`.",
        "",
    ]
    for device in devices:
        lines += [
            f"## {device_name(device)}",
            "",
            "| volume (batch 1) | window | windows | det. pass (s) | mean pass (s) | MC / sample (s) | "
            "**measured ratio** | **ratio from components** | overhead / sample, ms: draw ε + form W × windows + "
            "maps | peak MiB det. / MC |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for size in args.sizes:
            name = "x".join(map(str, size))
            for roi in rois:
                d = find_row(rows, kind="deterministic", size=name, roi=roi or "", device=device)
                m = find_row(rows, kind="mc", size=name, roi=roi or "", device=device)
                window = "whole volume" if roi is None else f"roi {roi}³"
                lines.append(
                    f"| {name.replace('x', '×')} | {window} | {m['windows']} | {d['det_pass_s']:.2f} | "
                    f"{m['mean_pass_s']:.2f} | {m['mc_per_sample_s']:.2f} | **{m['ratio_to_mean_pass']:.3f}×** | "
                    f"**{m['ratio_from_components']:.3f}×** | {m['overhead_ms_per_sample']:.1f} = "
                    f"{m['draw_ms']:.1f} + {m['form_ms_per_forward']:.1f} × {m['windows']} + {m['post_ms']:.1f} | "
                    f"{d['peak_mib']:.0f} / {m['peak_mib']:.0f} |"
                )
        lines.append("")
    lines += [
        "Target: MC cost per sample ≤ 1.05× one deterministic pass of the same network.",
        "",
        f"**Machine load.** This machine is shared and other processes were running during the run (load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after, on {os.cpu_count()} cores). Under such load the "
        "wall times of single passes vary by tens of per cent, and every small multi-threaded operation waits for "
        "a descheduled thread, so the *measured ratio* mostly shows the noise; the *ratio from components* (parts "
        "timed alone, minimum of several timings) is the better estimate of the MC overhead. The *det. pass* comes "
        "from another process at another moment, so it is not the baseline of the ratios.",
        "",
    ]
    (args.output_dir / "mc_inference.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
