"""Speed and memory of Bayesian training against deterministic training, and of the Deep Weight Prior term.

Writes ``benchmarks/results/speed.md``, ``speed.csv`` and ``speed.png``. Every ratio compares two figures measured
in the same process, interleaved (one repeat of every kind, then the next), so that load from elsewhere hits all
kinds alike; the load average before and after the run is written next to the figures. Nothing asserts a timing.

What is measured (the appendix-B ``DWPUNet``, 1 input and 2 output channels, Adam, Dice + cross-entropy):

- ``train step``: forward + backward + optimizer step on a batch of ``B`` patches of ``S³`` for the deterministic
  network, the Bayesian network in ``"local"`` mode (local reparameterization) and in ``"sampled"`` mode (one
  weight draw per step), data loss only; at every ``(S, B)`` of ``--sizes`` × ``--batches`` (the bundles train
  on batches of 2 volumes × 2 patches = 4 patches of 32³ and evaluate 4 windows per call);
- ``DWP term``: forward + backward of the Deep Weight Prior bound over the 3×3×3 kernels of the Bayesian network
  (7 layer groups, VAEs of the paper's size, random weights: the cost does not depend on them) by each estimator
  of ``--estimators`` (``all`` kernels, ``max_kernels=m`` per group, ``refresh=R``: a rotating ``1/R`` of the
  kernels per step, after the first call; ``+cv`` with the Gaussian control variate, ``+bf16`` with the VAE passes
  in bfloat16), as a fraction of the Bayesian ``"local"`` step at 64³, batch 2;
- peak memory of two steps at ``--memory_size``³, batch 2, in a fresh process per kind: on CUDA
  ``torch.cuda.max_memory_allocated``; on CPU the peak resident set size (``VmHWM``) above the process's size before
  the network was built, twice: with every block of 64 KiB or more in a mapping of its own, returned on ``free``
  (``exact``: the resident peak is the peak of the live tensors, the same to the MiB in every run; the target's
  measure), and with ``malloc`` tuned as the bundles tune it (``tuned``: the heap keeps freed blocks for reuse, so
  the peak also holds their fragmentation and varies by ~100 MiB from run to run).

Usage::

    python benchmarks/speed.py                   # CPU, and CUDA when present
    python benchmarks/speed.py --sizes 32 64 --batches 2 4 --repeats 5 --device cpu
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bundle_default, device_name, estimator_kwargs, find_row, run_child, sync  # noqa: E402
from _stats import paired_interval  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
KINDS = ("deterministic", "local", "sampled")
TARGETS = {"dwp": 0.10, "sampled": 1.05, "local": 2.0, "memory": 1.3}
"""The issue's targets: DWP term ≤ 10 % of a local step at 64³; ``sampled`` ≤ 1.05× and ``local`` ≤ 2.0× a
deterministic step; peak memory ≤ 1.3× the deterministic step's."""

DWP_QUALITY = {
    "the transfer benchmark's 4 mm prior, 16³ patches": ("dwp_estimator_4mm_scv", "dwp_estimator_4mm_scv_r16"),
    "`make demo`'s 3 mm prior, the bundles' 32³ patches": ("dwp_estimator_3mm_scv",),
}
"""What tells whether an estimator's gradient is as good as the all-kernel estimate along training (the DWP target's
second half): per prior and data, the results stems of its ``benchmarks/dwp_estimator.py`` runs."""


def _make_prior(net: torch.nn.Module, setting: str, num_groups: int = 7):
    """A Deep Weight Prior over ``net``'s 3×3×3 layers (consecutive groups, as the prior bundle makes them) with
    the estimator ``setting``: ``all``, ``max_kernels=<m>`` or ``refresh=<R>``."""
    from monai_dwp.data import group_layers
    from monai_dwp.losses import DeepWeightPrior
    from monai_dwp.networks import KernelVAE, bayesian_modules

    layers = [n for n, m in bayesian_modules(net).items() if tuple(m.kernel_size) == (3, 3, 3)]
    groups = group_layers(layers, num_groups)
    torch.manual_seed(0)
    vaes = [KernelVAE() for _ in range(num_groups)]
    device = next(net.parameters()).device
    return DeepWeightPrior(vaes, [0.05] * num_groups, groups, **estimator_kwargs(setting)).to(device)


def _train_step(net: torch.nn.Module, kind: str, x: torch.Tensor, y: torch.Tensor, loss_fn, optimizer):
    from monai_dwp.networks import resample_weights

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        if kind == "sampled":
            resample_weights(net)  # what the bundles' ResampleWeightsHandler calls before every step
        loss_fn(net(x), y).backward()
        optimizer.step()

    return step


def _build(kind: str, size: int, batch: int, dev: torch.device):
    from monai.losses import DiceCELoss

    from monai_dwp.networks import DWPUNet, stochastic_mode

    torch.manual_seed(0)
    net = DWPUNet(bayesian=kind != "deterministic").to(dev)
    if kind != "deterministic":
        stochastic_mode(net, kind)
    x = torch.randn(batch, 1, size, size, size, device=dev)
    y = (torch.rand(batch, 1, size, size, size, device=dev) > 0.7).float()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    return net, _train_step(net, kind, x, y, loss_fn, torch.optim.Adam(net.parameters(), lr=1e-4, fused=True))


def _interleaved(fns: dict[str, object], device: torch.device, repeats: int, warmup: int = 1) -> dict[str, list]:
    """Times of every function, one call of each per round (after ``warmup`` rounds)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + repeats):
        for k, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if r >= warmup:
                times[k].append(time.perf_counter() - start)
    return times


def _ratio(times: list[float], reference: list[float]) -> dict[str, float]:
    """The ratio ``times / reference`` of each round (both timed in it, side by side): its mean and 95 %
    t-interval over the rounds, so that load that hits a round hits both sides of its ratio."""
    mean, low, high = paired_interval([t / r for t, r in zip(times, reference)])
    return {"ratio": mean, "ratio_low": low, "ratio_high": high}


def measure_steps(size: int, batch: int, device: str, repeats: int) -> list[dict]:
    """The three train steps at one ``(size, batch)``, interleaved in this process; each kind's ratio to the
    deterministic step per round."""
    dev = torch.device(device)
    fns = {kind: _build(kind, size, batch, dev)[1] for kind in KINDS}
    times = _interleaved(fns, dev, repeats)
    return [{"what": "step", "kind": k, "size": size, "batch": batch, "device": device,
             "seconds": statistics.median(t), "min": min(t), "max": max(t), "repeats": repeats,
             **_ratio(t, times["deterministic"])}
            for k, t in times.items()]


def measure_prior(estimators: list[str], device: str, repeats: int) -> list[dict]:
    """Each estimator's forward + backward, interleaved with the ``local`` step at 64³, batch 2 it is a fraction of."""
    dev = torch.device(device)
    net, local_step = _build("local", 64, 2, dev)
    fns: dict[str, object] = {"local step 64³ b2": local_step}
    num_kernels = 0
    for setting in estimators:
        prior = _make_prior(net, setting)
        num_kernels = sum(m.kernels[0].shape[0] for m in prior.check_network(net)[0].values())

        def term(prior=prior) -> None:
            net.zero_grad(set_to_none=True)
            prior(net).backward()

        term()  # a refresh estimator's first call estimates every kernel
        fns[setting] = term
    times = _interleaved(fns, dev, repeats)
    return [{"what": "dwp" if k in estimators else "step", "kind": k, "size": 64, "batch": 2, "device": device,
             "seconds": statistics.median(t), "min": min(t), "max": max(t), "repeats": repeats,
             "num_kernels": num_kernels, **_ratio(t, times["local step 64³ b2"])} for k, t in times.items()]


def _proc_status_mib(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` (peak) of this process in MiB from ``/proc/self/status``; the peak of a process
    started by ``exec`` is its own there, while ``ru_maxrss`` keeps the parent's peak across ``execve``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB on Linux, bytes on macOS


def _map_every_block(threshold: int = 64 * 2**10) -> bool:
    """Make glibc's ``malloc`` serve every block of ``threshold`` bytes or more with a mapping of its own and unmap it
    on ``free`` (a fixed ``M_MMAP_THRESHOLD``, which also stops glibc from raising it), so that the resident set is the
    live tensors plus small blocks. ``False`` where the C library is not glibc."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it  # noqa: B018
    except (OSError, AttributeError):
        return False
    return libc.mallopt(-3, threshold) == 1  # M_MMAP_THRESHOLD


def measure_memory(kind: str, size: int, batch: int, device: str, allocator: str = "tuned") -> dict:
    """Two train steps in this (fresh) process: its peak memory, and the part above the runtime it started with
    (Python, PyTorch, MONAI imported; on CUDA the peak allocated). ``allocator``: ``"tuned"`` as every bundle
    process tunes ``malloc`` first, ``"exact"`` every large block mapped on its own (:func:`_map_every_block`)."""
    from monai_dwp.utils import tune_allocator

    applied = tune_allocator() if allocator == "tuned" else _map_every_block()
    dev = torch.device(device)
    from monai.losses import DiceCELoss  # noqa: F401  (imports first: the baseline holds the runtime)

    from monai_dwp.networks import DWPUNet  # noqa: F401

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    baseline = 0.0 if dev.type == "cuda" else _proc_status_mib("VmRSS")
    _, step = _build(kind, size, batch, dev)
    step()
    step()
    sync(dev)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _proc_status_mib("VmHWM")
    return {"what": "memory", "kind": kind, "size": size, "batch": batch, "device": device, "peak_mib": peak,
            "step_mib": peak - baseline, "allocator": "cuda" if dev.type == "cuda" else allocator,
            "allocator_applied": applied}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--estimators", nargs="+",
                        default=["all", "all+bf16", "all+cv+bf16", "max_kernels=2048", "refresh=4+cv+bf16",
                                 "refresh=8+cv+bf16", "refresh=16+bf16", "refresh=16+cv+bf16"])
    parser.add_argument("--memory_size", type=int, default=64)
    parser.add_argument("--device", choices=["cpu", "cuda"], nargs="+", default=None)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--render-only", action="store_true", help="rewrite speed.md/.png from speed.csv, no timing")
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure_memory(**json.loads(args.child))))
        return
    if args.render_only:
        rows = [_typed(r) for r in csv.DictReader(open(args.output_dir / "speed.csv"))]
        meta = json.loads((args.output_dir / "speed.json").read_text())
        _write(rows, meta, args.output_dir)
        return

    from tqdm import tqdm

    from monai_dwp.utils import native_bfloat16, tune_allocator

    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows: list[dict] = []
    meta = {"load_before": os.getloadavg(), "torch": torch.__version__, "repeats": args.repeats,
            "devices": {d: device_name(d) for d in devices}, "estimators": args.estimators,
            "allocator_tuned": tune_allocator(),  # as every bundle process does first
            "bf16_native": native_bfloat16("cpu")}
    plan: list[tuple] = [("memory", d, k, a) for d in devices for a in (("cuda",) if d == "cuda" else ("exact", "tuned"))
                         for k in KINDS]
    plan += [("steps", d, s, b) for d in devices for s in args.sizes for b in args.batches]
    plan += [("prior", d, 64, 2) for d in devices]
    for job in tqdm(plan, desc="speed", unit="measurement"):
        if job[0] == "steps":
            rows += measure_steps(job[2], job[3], job[1], args.repeats)
        elif job[0] == "prior":
            rows += measure_prior(args.estimators, job[1], args.repeats)
        else:
            rows.append(run_child(__file__, kind=job[2], size=args.memory_size, batch=2, device=job[1],
                                  **({} if job[3] == "cuda" else {"allocator": job[3]})))
    meta["load_after"] = os.getloadavg()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with open(args.output_dir / "speed.csv", "w", newline="") as f:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    (args.output_dir / "speed.json").write_text(json.dumps(meta, indent=1) + "\n")
    _write(rows, meta, args.output_dir)


def _typed(row: dict) -> dict:
    """A CSV row with its numbers parsed back (``""`` becomes ``None``)."""
    out: dict = {}
    for key, value in row.items():
        if value == "":
            out[key] = None
            continue
        try:
            number = float(value)
            out[key] = int(number) if number.is_integer() and key in ("size", "batch", "repeats", "num_kernels") \
                else number
        except ValueError:
            out[key] = value
    return out


def _ratio_of(row: dict, reference: dict) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean per-round ratio of ``row`` to ``reference`` and its 95 % interval; for rows of
    an older run without them, the ratio of the medians and no interval (``nan`` bounds)."""
    if row.get("ratio") is None:
        return row["seconds"] / reference["seconds"], math.nan, math.nan
    return row["ratio"], row["ratio_low"], row["ratio_high"]


def _fmt(x: float, unit: str, digits: int = 0) -> str:
    return f"{x:.{digits}%}" if unit == "%" else f"{x:.2f}×"


def _ratio_cell(ratio: tuple[float, float, float], unit: str = "×") -> str:
    """A table cell: the mean ratio in bold, with its 95 % interval when there is one."""
    mean, low, high = ratio
    cell = f"**{_fmt(mean, unit, 1)}**"
    if math.isnan(low):
        return cell
    low_text, high_text = (_fmt(x, unit, 1).rstrip("×") for x in (low, high))
    return f"{cell} [{low_text}–{high_text}]"


def _verdict(ratio: tuple[float, float, float], target: float, unit: str = "×") -> str:
    """A ratio ``(mean, low, high)`` against ``target``: met when its whole 95 % interval lies at or below the target,
    not met when it lies above, else not resolved; without an interval, the mean decides."""
    mean, low, high = ratio
    goal = f"target ≤ {_fmt(target, unit)}"
    if math.isnan(low):
        return f"{_fmt(mean, unit)} ({goal}: {'met' if mean <= target else 'not met'})"
    verdict = "met" if high <= target else "not met" if low > target else "not resolved, the interval spans it"
    return f"{_fmt(mean, unit)} [{_fmt(low, unit)}–{_fmt(high, unit)}] ({goal}: {verdict})"


def _write(rows: list[dict], meta: dict, out: Path) -> None:
    lines = ["# Speed and memory: Bayesian DWPUNet and the Deep Weight Prior term", "",
             "Written by `python benchmarks/speed.py`: "
             f"{meta['repeats']} rounds after one warm-up, every kind timed once per round in one process; seconds are "
             "medians over the rounds, and each ratio is the mean of the per-round ratios (both sides timed in the "
             f"same round) with its 95 % t-interval. PyTorch {meta['torch']}. Load average (1, 5, 15 min) "
             f"{', '.join(f'{x:.2f}' for x in meta['load_before'])} before, "
             f"{', '.join(f'{x:.2f}' for x in meta['load_after'])} after. glibc's `malloc` tuned first in every "
             f"process, as the bundles do (`monai_dwp.utils.tune_allocator`): "
             f"{'yes' if meta.get('allocator_tuned') else 'no'}.", ""]
    for device, name in meta["devices"].items():
        steps = [r for r in rows if r["what"] == "step" and r["device"] == device and r["kind"] in KINDS]
        shapes = sorted({(r["size"], r["batch"]) for r in steps})
        lines += [f"## {name}", "",
                  "Train step = forward + backward + Adam step of the appendix-B DWPUNet (1→2 channels), data loss "
                  "only; in seconds, median [min–max]; ratios to the deterministic step, mean [95 % interval].", "",
                  "| patch, batch | deterministic | Bayesian `local` | `local` / det. | Bayesian `sampled` | "
                  "`sampled` / det. |", "|---|---|---|---|---|---|"]

        def cell(r: dict) -> str:
            return f"{r['seconds']:.3f} [{r['min']:.3f}–{r['max']:.3f}]"

        for size, batch in shapes:
            d, lo, sa = (find_row(steps, kind=k, size=size, batch=batch) for k in KINDS)
            lines.append(f"| {size}³, {batch} | {cell(d)} | {cell(lo)} | {_ratio_cell(_ratio_of(lo, d))} | "
                         f"{cell(sa)} | {_ratio_cell(_ratio_of(sa, d))} |")
        prior_rows = [r for r in rows if r["what"] == "dwp" and r["device"] == device]
        ref = next(r for r in rows if r["what"] == "step" and r["device"] == device and r["kind"] == "local step 64³ b2")
        lines += ["", f"DWP term = forward + backward of the bound over all {prior_rows[0]['num_kernels']:,} 3×3×3 "
                  "kernels (7 groups, VAE latent 6, hidden 32/64/128, 1 Monte Carlo sample), against a Bayesian "
                  f"`local` step at 64³, batch 2 timed alongside ({cell(ref)} s).", "",
                  "| estimator | seconds | / `local` step at 64³, batch 2 |", "|---|---|---|"]
        for r in prior_rows:
            lines.append(f"| `{r['kind']}` | {cell(r)} | {_ratio_cell(_ratio_of(r, ref), '%')} |")
        memory_rows = [r for r in rows if r["what"] == "memory" and r["device"] == device]
        measures = list(dict.fromkeys(_allocator(r) for r in memory_rows))
        # the target's measure: the exact peak where it was measured (CPU runs before it had the tuned one only)
        target_measure = next((m for m in ("cuda", "exact", "tuned") if m in measures), None)
        memory = {r["kind"]: r["step_mib"] for r in memory_rows if _allocator(r) == target_measure}
        if memory_rows:
            size = memory_rows[0]["size"]
            lines += ["", f"Peak memory of two train steps at {size}³, batch 2, in a fresh process per kind (MiB"
                      + ("; CUDA: peak allocated" if "cuda" in measures else "; CPU: peak RSS above the RSS of the "
                         "runtime before the network was built, and in brackets the whole peak RSS") + "):", ""]
            for measure in measures:
                rows_m = [r for r in memory_rows if _allocator(r) == measure]
                lines.append(f"- {_MEASURE_LABEL[measure]}: "
                             + ", ".join(f"{r['kind']} {r['step_mib']:.0f}"
                                         + ("" if measure == "cuda" else f" ({r['peak_mib']:.0f})") for r in rows_m)
                             + ".")
        lines += ["", "Against the targets:", ""]
        for size, batch in shapes:
            if size != 64:
                continue
            d, lo, sa = (find_row(steps, kind=k, size=size, batch=batch) for k in KINDS)
            lines.append(f"- 64³, batch {batch}: `sampled` / deterministic "
                         f"{_verdict(_ratio_of(sa, d), TARGETS['sampled'])}; `local` / deterministic "
                         f"{_verdict(_ratio_of(lo, d), TARGETS['local'])}.")
        quality = {r["kind"]: _quality(r["kind"]) for r in prior_rows}  # the training tables, read once
        for r in prior_rows:
            lines.append(f"- DWP term, `{r['kind']}`: {_verdict(_ratio_of(r, ref), TARGETS['dwp'], '%')} "
                         f"of a `local` step at 64³, batch 2; {_quality_text(r['kind'], quality[r['kind']])}.")
        both = [f"`{r['kind']}`" for r in prior_rows
                if _ratio_of(r, ref)[2] <= TARGETS["dwp"] and _as_good(quality[r["kind"]])]
        lines.append(f"- DWP term, both halves of its target (≤ {TARGETS['dwp']:.0%} of the step, and a gradient "
                     "along training as good as a fresh all-kernel draw's at every check of every run): "
                     + (f"**met** by {', '.join(both)}." if both else "**not met** by any estimator timed here."))
        if memory:
            for kind in ("local", "sampled"):
                ratio = (memory[kind] / memory["deterministic"], math.nan, math.nan)  # one run: no interval
                lines.append(f"- Peak memory ({target_measure}), `{kind}` / deterministic: "
                             f"{_verdict(ratio, TARGETS['memory'])}.")
        lines.append("")
    if "cpu" in meta["devices"]:  # the reasons below were measured on CPUs; a GPU's steps are launch-bound instead
        lines += _CPU_REASONS + [_dwp_note(rows, meta.get("bf16_native")), ""]
    (out / "speed.md").write_text("\n".join(lines))
    _plot(rows, meta, out / "speed.png")
    print((out / "speed.md").read_text())


# the explanations of the misses, from CPU measurements (profiles and interleaved timings of the steps)
_CPU_REASONS = [
    "Why the misses are where they are:",
    "",
    "- `local` runs two convolutions per layer, `conv(x, W_loc)` and `conv(x², W_scale²)`, forward and backward, "
    "so ≈ 2× a deterministic step is its floor; on top come one Gaussian draw per output element and a few "
    "element-wise passes over the activations (`x²`, the square root, the products; its backward is one custom "
    "function that keeps `x` and `ξ / 2σ` only and recomputes `x²`; the two convolutions are one grouped "
    "convolution only for a single small sample, where PyTorch would otherwise leave oneDNN). These extras "
    "cost about as much wherever the convolutions are fast, so `local` moves further from 2× the faster the "
    "CPU's convolution kernels are (AVX-512 against AVX2). "
    "`sampled` runs one convolution per layer with `W = loc + scale·ε` formed once per step, which is why the "
    "bundles train in `sampled` mode by default (`benchmarks/train_modes.py`: the same validation Dice per "
    "second of training).",
    "- `local`'s peak memory: one activation-sized tensor per layer (`ξ / 2σ`) stays from the forward for the "
    "backward, except in a layer of at most 4 input channels per group (`BayesianConv(redraw_local_noise=None)`; "
    "here the first layer, 1 → 16 channels at full resolution, 32 MiB at 64³, batch 2), which keeps the random "
    "generator's state instead and draws the same ξ again in the backward, with σ recomputed by its 1-channel "
    "variance convolution (the same gradients; about 2 % of a `local` step: 1.018× [1.010–1.026] at 64³, batch 2, "
    "8 interleaved rounds, and 1.020× [1.006–1.034] at 32³, batch 2, 20 rounds); "
    "the backward of the variance convolution needs two activation-sized temporaries at a time "
    "(`g ⊙ ξ / 2σ` with `x²` for the weight gradient, then with the input gradient) where the deterministic "
    "layer needs none; the peak is at the start of the backward, where every saved activation is still alive. "
    "(Where a unit runs channels-last, `local`'s units on an AVX-512 CPU, the layout changes before the activation, "
    "so that the activation and the convolution save one tensor, not a contiguous one and a channels-last copy.)",
]


_MEASURE_LABEL = {
    "exact": "`exact` (every block of 64 KiB or more mapped on its own and returned on `free`: the peak of the live "
             "tensors, the same to the MiB from run to run; the target's measure)",
    "tuned": "`tuned` (`malloc` tuned as the bundles tune it: the heap also holds freed blocks and their "
             "fragmentation, ~100 MiB from run to run)",
    "cuda": "peak allocated",
}


def _allocator(row: dict) -> str:
    """How a memory row was measured; rows of runs before the ``allocator`` column were ``tuned`` on CPU."""
    return row.get("allocator") or ("cuda" if row["device"] == "cuda" else "tuned")


def _dwp_note(rows: list[dict], bf16_native: bool | None = None) -> str:
    """The bullet on the DWP term's estimators, its cost figures read from the CPU rows of this run;
    ``bf16_native``: whether that CPU has native bfloat16 (``None``: not recorded, a run before it was)."""
    prior_rows = {r["kind"]: r for r in rows if r["what"] == "dwp" and r["device"] == "cpu"}
    ref = next((r for r in rows if r["device"] == "cpu" and r["kind"] == "local step 64³ b2"), None)

    def share(kind: str) -> str:
        """The cost of ``kind`` (else of its float32 form, named so) as a share of the ``local`` step."""
        for name in dict.fromkeys((kind, kind.replace("+bf16", ""))):
            row = prior_rows.get(name)
            if row is not None and ref is not None:
                return f"{_ratio_of(row, ref)[0]:.1%} of a step" + ("" if name == kind else " in float32")
        return "not measured here"

    refresh, control = _bundle_estimator()
    bundle_kind = f"refresh={refresh}" + ("+cv" if control else "") + ("+bf16" if bf16_native is not False else "")
    speedup = ""
    if "all" in prior_rows and "all+bf16" in prior_rows:
        speedup = (f" (all kernels: {prior_rows['all']['seconds'] / prior_rows['all+bf16']['seconds']:.1f}× faster "
                   "by the medians above)")
    return (
        "- The DWP term over all kernels costs a VAE pass over 33,808 kernels per step, already evaluated as dense "
        "matrix products over all kernels of a group at once, so only less work cuts it: fewer kernels per step "
        "(the `max_kernels` subsample; the rotating refresh `refresh=R`, 1/R of the kernels per step, the others kept "
        "as first-order expansions) or cheaper arithmetic (`+bf16`: the VAE's wide layers in bfloat16, its heads and "
        "every log-density in float32, `DeepWeightPrior(compute_dtype=...)`, the finetune bundle's "
        f"`prior_compute_dtype: auto` on a CPU with native bfloat16{_bf16_here(bf16_native)}{speedup}; with the "
        "same draws the gradient's cosine to "
        "the float32 one is 1.0000). What a cheaper estimator gives up shows when it trains "
        "(`benchmarks/dwp_estimator.py`: one 240-step run per training estimator from the same start): a cache's stale "
        "noise steers the steps it drives. The Gaussian control variate (`+cv`) takes its residual at the same draws "
        "as the VAE's estimate (*Gaussian control variate* in `DeepWeightPrior`), so the part of each draw's noise "
        "that a Gaussian explains cancels, and a refresh with it can point better than an all-kernel draw without it "
        "(the target lines above, per run). With the residual taken against the Gaussian's closed form instead (the "
        f"control variate before), the same comparison at the last check was {_earlier_gaps()}. The finetune bundle "
        f"uses R = {refresh} {'with' if control else 'without'} the control variate "
        f"({share(bundle_kind)} with `auto`; at its 32³ patches the term weighs more against a step, "
        "`bundles/dwp_finetune/docs/README.md`)."
    )


def _training_gaps(kind: str, stems: Sequence[str]) -> list[float]:
    """At each check of the runs of ``stems`` that trained with the estimator ``kind``: the cosine of ``kind``'s
    ``loc`` gradient to the mean of many all-kernel draws minus that of a fresh all-kernel draw at the same
    posterior (``dwp_estimator.py``'s training table); empty when no such run is on record."""
    gaps: list[float] = []
    for stem in stems:
        path = RESULTS / f"{stem}_training.csv"
        if path.exists():
            with open(path, newline="") as f:
                gaps += [float(r[f"cos_ref_loc[{kind}]"]) - float(r["cos_ref_loc[all]"])
                         for r in csv.DictReader(f) if r["trained_with"] == kind]
    return gaps


def _quality(kind: str) -> dict[str, list[float]]:
    """:func:`_training_gaps` of ``kind`` per prior of :data:`DWP_QUALITY` that has them."""
    gaps = {prior: _training_gaps(kind, stems) for prior, stems in DWP_QUALITY.items()}
    return {prior: g for prior, g in gaps.items() if g}


def _as_good(gaps: dict[str, list[float]]) -> bool:
    """Whether the gradient was as good as a fresh all-kernel draw's: measured on every prior of
    :data:`DWP_QUALITY` and not below it at any check."""
    return len(gaps) == len(DWP_QUALITY) and all(g >= 0 for run in gaps.values() for g in run)


def _quality_text(kind: str, gaps: dict[str, list[float]]) -> str:
    """The second half of a DWP target line: the training gaps of ``kind`` per prior (:func:`_quality`), or that none
    was measured."""
    if kind == "all":
        return "the all-kernel estimate itself"
    if not gaps:
        return "its gradient along training not measured"
    runs = "; ".join(f"{min(g):+.3f} to {max(g):+.3f} ({prior})" for prior, g in gaps.items())
    below = any(g < 0 for run in gaps.values() for g in run)
    verdict = "worse" if below else "as good" if _as_good(gaps) else "not shown as good: not measured on every prior"
    return (f"its cosine along training minus a fresh all-kernel draw's, over {sum(map(len, gaps.values()))} checks: "
            f"{runs}: {verdict}")


def _earlier_gaps() -> str:
    """The last-check training gaps of the control variate before it took its residual at the same draws."""
    parts = []
    for stem, kind in _EARLIER_CV:
        gaps = _training_gaps(kind, (stem,))
        if gaps:
            parts.append(f"{gaps[-1]:+.3f} for `{kind}` (`{stem}.md`)")
    return ", ".join(parts) if parts else "not on record"


_EARLIER_CV = (("dwp_estimator_4mm_bf16", "refresh=4+cv+bf16"), ("dwp_estimator_4mm_bf16_r8", "refresh=8+cv+bf16"),
               ("dwp_estimator_4mm_bf16", "refresh=16+cv+bf16"))
"""Runs of ``dwp_estimator.py`` with the earlier control variate (residual against the closed form)."""


def _bf16_here(bf16_native: bool | None) -> str:
    """Whether the CPU of the run has native bfloat16, as a parenthetical for the DWP-term bullet."""
    if bf16_native is None:
        return ""
    return " (this one has it)" if bf16_native else " (this one has not: `auto` computes in float32 here)"


def _bundle_estimator() -> tuple[int, bool]:
    """The finetune bundle's default ``prior_refresh_interval`` and ``prior_control_variate``."""
    return (int(bundle_default("dwp_finetune", "prior_refresh_interval")),
            bool(bundle_default("dwp_finetune", "prior_control_variate")))


def _plot(rows: list[dict], meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = list(meta["devices"])
    fig, axes = plt.subplots(1, len(devices), figsize=(6 * len(devices), 3.5), squeeze=False)
    for ax, device in zip(axes[0], devices):
        steps = [r for r in rows if r["what"] == "step" and r["device"] == device and r["kind"] in KINDS]
        shapes = sorted({(r["size"], r["batch"]) for r in steps})
        width = 0.25
        for i, kind in enumerate(KINDS):
            vals = [find_row(steps, kind=kind, size=s, batch=b)["seconds"] for s, b in shapes]
            ax.bar([j + (i - 1) * width for j in range(len(shapes))], vals, width, label=kind)
        ax.set_xticks(range(len(shapes)), [f"{s}³ × {b}" for s, b in shapes])
        ax.set_ylabel("seconds per train step")
        ax.set_title(meta["devices"][device], fontsize=9)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
