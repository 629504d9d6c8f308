"""Cost of Monte Carlo inference (``MCInferer``) per weight sample against one deterministic forward pass.

Writes ``benchmarks/results/mc_inference.md`` and ``mc_inference.csv``. Nothing here asserts a timing.

What is measured, for the appendix-B DWPUNet (1 input, 2 output channels), batch 1, at the whole-volume size of the
3 mm target phantoms (64×80×64), with the whole volume at once and with the sliding window the finetune bundle
evaluates with (``roi_size`` = the 32³ training patch, ``sw_batch_size`` 4 windows per call, constant blending) at
overlaps 0.25 (the bundle's default) and 0.5:

- ``mean pass``: one forward pass of the Bayesian DWPUNet in ``"mean"`` mode (posterior locations: the same
  convolutions as a deterministic network) through the same sliding window, the average of ``T`` passes timed
  together, interleaved with the MC runs (``T`` mean passes, MC run of ``T`` samples, ``T`` mean passes), so that
  load from other processes hits both alike and both sides of the ratio average as many network passes;
- ``MC per sample``: the time of ``MCInferer(num_samples=T, return_uncertainty=True)`` divided by ``T``: per
  sample one weight draw formed once for all windows (``hold_weights``), the windows in batches, softmax, per-sample
  entropy and the running sums, plus (amortised) the final entropy and mutual information maps;
- the *measured ratio* MC per sample / mean pass, per repeat, reported as the mean over repeats with its 95 %
  t-interval; repeats continue (up to ``--max-repeats``) until that interval is narrower than ``--spread`` (3 %) of
  the mean (the range of the ratios, (max − min) / median, is reported too: it grows with repeats, so it cannot be
  what repeating settles);
- ``det. pass``: the deterministic DWPUNet through the same inferer, in its own process, with its peak memory;
- the components of a sample's overhead timed alone (drawing ε, forming ``loc + scale·ε``, the maps), labelled as
  an estimate;
- the cost of one volume: the whole ``MCInferer`` call with ``T`` samples, as the bundle's evaluation runs it.

Usage::

    python benchmarks/mc_inference.py                        # CPU, and CUDA when present
    python benchmarks/mc_inference.py --sizes 64x80x64 --num-samples 10 --device cpu
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
from _stats import paired_interval  # noqa: E402

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


def interval_width(ratios: list[float]) -> float:
    """The width of the 95 % t-interval of the mean of ``ratios``, relative to the mean (``inf`` for one ratio): the
    spread of the measured figure, which shrinks as repeats accumulate (the range of the ratios only grows)."""
    mean, low, high = paired_interval(ratios)
    return (high - low) / mean if len(ratios) > 1 else float("inf")


def measure(kind: str, size: list[int], roi: int | None, device: str, num_samples: int, repeats: int,
            threads: int | None, overlap: float = 0.25, sw_batch_size: int = 4, max_repeats: int = 60,
            spread: float = 0.03) -> dict:
    """One configuration, run in its own process so that its peak memory is its own."""
    from monai.inferers import SimpleInferer, SlidingWindowInferer

    from monai_dwp.inferers import MCInferer
    from monai_dwp.networks import DWPUNet, bayesian_modules, stochastic_mode
    from monai_dwp.utils import tune_allocator

    tuned = tune_allocator()  # as every bundle process does first
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    net = DWPUNet(bayesian=kind == "mc").to(dev).eval()
    x = torch.randn(1, 1, *size, device=dev)
    inferer = SimpleInferer() if roi is None else SlidingWindowInferer(roi_size=roi, overlap=overlap,
                                                                       sw_batch_size=sw_batch_size)
    calls = [0]
    net.register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    row: dict = {"kind": kind, "size": "x".join(map(str, size)), "roi": roi or "", "overlap": overlap if roi else "",
                 "sw_batch_size": sw_batch_size if roi else "", "batch": 1, "device": device,
                 "threads": torch.get_num_threads(), "allocator_tuned": tuned}

    with torch.no_grad():
        if kind == "deterministic":
            inferer(x, net)  # warm-up
            calls[0] = 0
            times = [_timed(lambda: inferer(x, net), dev) for _ in range(repeats)]
            row.update(batches=calls[0] // repeats, det_pass_s=statistics.median(times), peak_mib=_peak_mib(dev))
            return row

        mc = MCInferer(num_samples=num_samples, roi_size=roi, overlap=overlap, sw_batch_size=sw_batch_size,
                       return_uncertainty=True, seed=0)

        def mean_pass() -> None:
            with stochastic_mode(net, "mean"):
                inferer(x, net)

        def mean_passes() -> None:  # as many passes as the MC run has samples: both sides average as many
            for _ in range(num_samples):
                mean_pass()

        mean_pass()  # warm-up
        calls[0] = 0
        mean_times, mc_times, ratios = [], [], []
        # interleaved, so that load from other processes hits both alike; repeated until the 95 % interval of the
        # mean ratio is narrower than ``spread`` (relative to the mean), which more repeats make it
        while len(ratios) < repeats or (len(ratios) < max_repeats and interval_width(ratios) >= spread):
            before = _timed(mean_passes, dev) / num_samples
            mc_times.append(_timed(lambda: mc(x, net), dev))
            after = _timed(mean_passes, dev) / num_samples
            mean_times += [before, after]
            ratios.append(mc_times[-1] / num_samples / ((before + after) / 2))
        windows = calls[0] // (len(ratios) * 3 * num_samples)  # network calls per pass: window batches
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
    overhead_s = draw_s + form_s + post_s  # MCInferer forms each sample's weights once for all windows
    row.update(
        batches=windows,
        repeats=len(ratios),
        **dict(zip(("ratio_mean", "ratio_low", "ratio_high"), paired_interval(ratios))),
        ratio_spread=interval_width(ratios),
        ratio_median=statistics.median(ratios),
        ratio_range=(max(ratios) - min(ratios)) / statistics.median(ratios),
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
    parser.add_argument("--sizes", type=_size, nargs="+", default=[[64, 80, 64]])
    parser.add_argument("--roi", type=int, default=32, help="sliding-window edge (cube); 0 skips the window runs")
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--sw-batch-size", type=int, default=4)
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="least MC runs per configuration (each between passes)")
    parser.add_argument("--max-repeats", type=int, default=60)
    parser.add_argument("--spread", type=float, default=0.03,
                        help="repeat until the 95%% interval of the mean ratio is narrower than this (relative)")
    parser.add_argument("--device", choices=["cpu", "cuda"], nargs="+", default=None)
    parser.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (default: PyTorch's)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(**json.loads(args.child))))
        return

    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    windows = [(None, 0.0)] + ([(args.roi, o) for o in args.overlaps] if args.roi else [])
    load_before = os.getloadavg()
    start = time.perf_counter()
    rows = []
    for device in devices:
        for size in args.sizes:
            for roi, overlap in windows:
                for kind in ("deterministic", "mc"):
                    job = dict(kind=kind, size=size, roi=roi, device=device, num_samples=args.num_samples,
                               repeats=args.repeats, threads=args.threads, overlap=overlap,
                               sw_batch_size=args.sw_batch_size, max_repeats=args.max_repeats, spread=args.spread)
                    print(f"{device} {'x'.join(map(str, size))} roi={roi} overlap={overlap} {kind} ...", flush=True)
                    rows.append(run_child(__file__, **job))
    wall = time.perf_counter() - start
    load_after = os.getloadavg()

    args.output_dir.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(args.output_dir / "mc_inference.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    _write_markdown(rows, devices, windows, args, wall, load_before, load_after)
    print((args.output_dir / "mc_inference.md").read_text())




def _verdict(row: dict, spread: float) -> str:
    """Whether a configuration meets the target (the whole 95 % interval of the ratio ≤ 1.05×, the interval narrower
    than ``spread``), and if not, why."""
    if row["ratio_low"] > 1.05:
        return f"not met ({row['ratio_mean']:.3f}×)"
    if row["ratio_spread"] >= spread:
        return f"not settled (interval {row['ratio_spread']:.1%} wide after {row['repeats']} repeats)"
    return "**met**" if row["ratio_high"] <= 1.05 else f"not settled (interval reaches {row['ratio_high']:.3f}×)"


def _write_markdown(rows, devices, windows, args, wall, load_before, load_after) -> None:
    from monai_dwp.networks import DWPUNet, bayesian_modules

    net = DWPUNet(bayesian=True)
    layers = len(bayesian_modules(net))
    t = args.num_samples
    lines = [
        "# Monte Carlo inference cost: `MCInferer` per weight sample vs one deterministic pass",
        "",
        f"Written by `python benchmarks/mc_inference.py`; PyTorch {torch.__version__}, the appendix-B DWPUNet "
        f"(1→2 channels, {layers} Bayesian layers), batch 1, T = {t} samples with all three uncertainty maps. "
        + (f"Sliding window: roi {args.roi}³ (the training patch), `sw_batch_size={args.sw_batch_size}`, constant "
           "blending, one weight draw per sample for all windows. " if args.roi else
           "The whole volume only (`--roi 0`: no sliding window). ")
        + "Every process tunes glibc's `malloc` first, as the "
        f"bundles do (`monai_dwp.utils.tune_allocator`: "
        f"{'applied' if all(r.get('allocator_tuned') for r in rows) else 'not applied everywhere'}). Each MC run "
        f"sits between two blocks of T mean-mode passes; runs "
        f"repeat ({args.repeats} at least, {args.max_repeats} at most) until the 95 % interval of the mean ratio is "
        f"narrower than {args.spread:.0%} of it. Load average (1, 5, 15 min) "
        f"{', '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{', '.join(f'{x:.2f}' for x in load_after)} after, on {os.cpu_count()} cores. Total wall time {wall:.0f} s.",
        "",
        "- *measured ratio*: MC time per sample ÷ the mean time of the 2T mean-mode passes around it (the same "
        "convolutions as a deterministic network): the mean over repeats with its 95 % t-interval, the interval's "
        "width relative to the mean (the *spread* the target bounds), the number of repeats and the range of the "
        "ratios, (max − min) / median;",
        "- *per volume*: one whole `MCInferer` call with T samples, as the finetune bundle's evaluation runs it;",
        "- *det. pass*: the deterministic DWPUNet through the same inferer, in its own process at another moment "
        "(for the peak memory; not the baseline of the ratio);",
        "- *estimate from components* (not a measurement of the whole): what a sample adds to a forward pass, each "
        "part timed alone (minimum of 5–10 timings, one thread): drawing ε + forming `loc + scale·ε` once + the "
        "probability and entropy maps, over the fastest mean pass.",
        "",
    ]
    for device in devices:
        lines += [
            f"## {device_name(device)}",
            "",
            "| volume | window | network calls per pass | mean pass (s) | MC / sample (s) | **measured ratio** "
            "[95 % interval] | spread, repeats, range | per volume, T samples (s) | estimate from components | "
            "det. pass (s) | "
            "peak MiB det. / MC | target ≤ 1.05×, spread < 3 % |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for size in args.sizes:
            name = "x".join(map(str, size))
            for roi, overlap in windows:
                d = find_row(rows, kind="deterministic", size=name, roi=roi or "", overlap=overlap if roi else "",
                             device=device)
                m = find_row(rows, kind="mc", size=name, roi=roi or "", overlap=overlap if roi else "",
                             device=device)
                window = "whole volume" if roi is None else f"{roi}³, overlap {overlap}"
                lines.append(
                    f"| {name.replace('x', '×')} | {window} | {m['batches']} | {m['mean_pass_s']:.2f} | "
                    f"{m['mc_per_sample_s']:.2f} | **{m['ratio_mean']:.3f}×** "
                    f"[{m['ratio_low']:.3f}–{m['ratio_high']:.3f}] | {m['ratio_spread']:.1%}, {m['repeats']}, "
                    f"{m['ratio_range']:.1%} | {m['mc_total_s']:.1f} | {m['ratio_from_components']:.3f}× | "
                    f"{d['det_pass_s']:.2f} | {d['peak_mib']:.0f} / {m['peak_mib']:.0f} | {_verdict(m, args.spread)} |"
                )
        lines.append("")
    lines += ["Target: MC cost per sample ≤ 1.05× one deterministic pass of the same network, measured end to end on a "
              "quiet machine, the spread below 3 %: met where the whole 95 % interval of the ratio lies at or below "
              "1.05× and is narrower than 3 % of it.", ""]
    (args.output_dir / "mc_inference.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
