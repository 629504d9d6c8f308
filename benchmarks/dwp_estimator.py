"""Quality and cost of the Deep Weight Prior term's gradient: all kernels against an unbiased kernel subsample.

Writes ``benchmarks/results/dwp_estimator.md`` and ``.csv``. For a fitted prior (the ``dwp_prior`` bundle's
checkpoint) and the Bayesian appendix-B ``DWPUNet`` initialised as the finetune bundle initialises it (DWP
initialisation, posterior scales at ``init_scale_ratio`` × each layer's weight RMS), each estimator
(``max_kernels`` = all, or m kernels per group) is drawn ``draws`` times and reports, for the gradient of the
bound with respect to all ``loc`` and all ``log_scale``:

- ``cos_pair``: mean cosine similarity between two independent draws (1 = no noise);
- ``cos_ref``: mean cosine to a reference, the mean of ``ref_draws`` all-kernel draws (how well one draw points
  the same way as the expected gradient);
- ``rel_sd_kl``: standard deviation of the KL value over draws relative to its mean;
- ``seconds``: forward + backward time of the term per draw (median), on this machine, with the load average.

Nothing is asserted; the numbers choose the bundle's ``max_kernels`` default.

Usage::

    python benchmarks/dwp_estimator.py --prior_ckpt bundles/dwp_prior/models/dwp_prior.pt
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_name  # noqa: E402

from monai_dwp.losses import DeepWeightPrior  # noqa: E402
from monai_dwp.networks.nets import DWPUNet  # noqa: E402
from monai_dwp.networks.utils import bayesian_modules  # noqa: E402
from monai_dwp.transfer import prepare_network  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _grads(prior: DeepWeightPrior, net: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    layers = list(bayesian_modules(net).values())
    locs = [m.loc for m in layers]
    scales = [m.log_scale for m in layers]
    start = time.perf_counter()
    kl = prior(net)
    g = torch.autograd.grad(kl, locs + scales)
    seconds = time.perf_counter() - start
    n = len(locs)
    return torch.cat([x.flatten() for x in g[:n]]), torch.cat([x.flatten() for x in g[n:]]), float(kl.detach()), seconds


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior_ckpt", default="bundles/dwp_prior/models/dwp_prior.pt")
    parser.add_argument("--max_kernels", nargs="+", default=["all", "4096", "2048", "1024"])
    parser.add_argument("--draws", type=int, default=6)
    parser.add_argument("--ref_draws", type=int, default=12)
    parser.add_argument("--init_scale_ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    load_before = os.getloadavg()[0]
    base = DeepWeightPrior.load(args.prior_ckpt)
    net = DWPUNet(bayesian=True)
    prepare_network(net, "dwp", prior=base, init_scale_ratio=args.init_scale_ratio,
                    generator=torch.Generator().manual_seed(args.seed))
    layers = bayesian_modules(net)
    num_kernels = sum(m.kernels[0].shape[0] for m in layers.values())
    group_sizes: dict[int, int] = {}
    for name, group in base.layer_groups.items():
        group_sizes[group] = group_sizes.get(group, 0) + layers[name].kernels[0].shape[0]

    ref_loc, ref_scale = torch.zeros(()), torch.zeros(())
    for _ in range(args.ref_draws):
        gl, gs, _, _ = _grads(base, net)
        ref_loc, ref_scale = ref_loc + gl / args.ref_draws, ref_scale + gs / args.ref_draws

    rows = []
    for setting in args.max_kernels:
        m = None if setting == "all" else int(setting)
        prior = DeepWeightPrior.load(args.prior_ckpt, max_kernels=m)
        draws = [_grads(prior, net) for _ in range(args.draws)]
        pairs = [(i, j) for i in range(len(draws)) for j in range(i + 1, len(draws))]
        kls = [d[2] for d in draws]
        rows.append({
            "max_kernels": setting,
            "kernels_per_step": sum(k if m is None else min(k, m) for k in group_sizes.values()),
            "cos_pair_loc": statistics.mean(_cos(draws[i][0], draws[j][0]) for i, j in pairs),
            "cos_pair_log_scale": statistics.mean(_cos(draws[i][1], draws[j][1]) for i, j in pairs),
            "cos_ref_loc": statistics.mean(_cos(d[0], ref_loc) for d in draws),
            "cos_ref_log_scale": statistics.mean(_cos(d[1], ref_scale) for d in draws),
            "rel_sd_kl": statistics.pstdev(kls) / abs(statistics.mean(kls)),
            "seconds": statistics.median(d[3] for d in draws),
        })
        print(rows[-1], flush=True)
    load_after = os.getloadavg()[0]

    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "dwp_estimator.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Deep Weight Prior term: all kernels against a per-group subsample",
        "",
        f"Prior `{args.prior_ckpt}` ({len(base.vaes)} groups); Bayesian appendix-B DWPUNet, {num_kernels:,} kernels, "
        f"DWP-initialised, posterior scales {args.init_scale_ratio} × layer RMS. {args.draws} draws per estimator; "
        f"reference = mean of {args.ref_draws} all-kernel draws. Machine: {device_name('cpu')}, load average "
        f"{load_before:.2f} before, {load_after:.2f} after (`python benchmarks/dwp_estimator.py`).",
        "",
        "| max_kernels | kernels per step | cos(draw, draw) loc | cos(draw, draw) log_scale | cos(draw, mean) loc "
        "| cos(draw, mean) log_scale | sd/mean of KL | seconds fwd+bwd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['max_kernels']} | {r['kernels_per_step']:,} | {r['cos_pair_loc']:.3f} | {r['cos_pair_log_scale']:.3f} "
            f"| {r['cos_ref_loc']:.3f} | {r['cos_ref_log_scale']:.3f} | {r['rel_sd_kl']:.4f} | {r['seconds']:.2f} |"
        )
    (RESULTS / "dwp_estimator.md").write_text("\n".join(lines) + "\n")
    print("wrote", RESULTS / "dwp_estimator.md")


if __name__ == "__main__":
    main()
