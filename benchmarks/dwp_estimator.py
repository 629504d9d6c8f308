"""Quality and cost of the Deep Weight Prior term's gradient: all kernels, an unbiased kernel subsample
(``max_kernels``), and a rotating refresh with cached expansions (``refresh_interval``).

Writes ``benchmarks/results/dwp_estimator.md`` and ``.csv``. For a fitted prior (the ``dwp_prior`` bundle's
checkpoint) and the Bayesian appendix-B ``DWPUNet`` initialised as the finetune bundle initialises it (DWP
initialisation, posterior scales at ``init_scale_ratio`` × each layer's weight RMS), each estimator
(``all``, ``max_kernels=m`` per group, ``refresh=R``) is drawn ``draws`` times and reports, for the gradient of the
bound with respect to all ``loc`` and all ``log_scale``:

- ``cos_pair``: mean cosine similarity between two draws (1 = no noise; for ``refresh`` the draws share the cached
  kernels, so this is not a noise measure there);
- ``cos_ref``: mean cosine to a reference, the mean of ``ref_draws`` all-kernel draws (how well one draw points
  the same way as the expected gradient);
- ``rel_sd_kl``: standard deviation of the KL value over draws relative to its mean;
- ``seconds``: forward + backward time of the term per draw (median; for ``refresh``, after its first call, which
  estimates every kernel), on this machine, with the load average.

A fixed posterior flatters a cache, whose gradients go stale only as the posterior moves. With ``--data_dir`` the
script also trains the network on target patches (data loss + the ELBO's KL weight × the training estimator,
Adam at the bundle's learning rate; one run per estimator of ``--train_with``, each from the same start on the same
batches, by default the first ``refresh`` estimator) and, every ``check_every`` steps, compares the gradient each
estimator gives at that step with the mean of ``ref_draws`` all-kernel draws at the same posterior: a table and a
panel of ``<name>_training.png`` per run.

Nothing is asserted; the numbers choose the bundle's defaults.

Usage::

    python -m monai_dwp make-data --disease tumour --num-cases 23 --num-test 20 --spacing 3 \
        --output-dir runs/phantoms_3mm/tumour
    python benchmarks/dwp_estimator.py --prior_ckpt bundles/dwp_prior/models/dwp_prior.pt \
        --data_dir runs/phantoms_3mm/tumour
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import device_name, estimator_kwargs  # noqa: E402

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


def _estimator(path: str, setting: str) -> DeepWeightPrior:
    """``all``, ``max_kernels=<m>`` or ``refresh=<R>`` as a prior loaded from ``path``."""
    return DeepWeightPrior.load(path, **estimator_kwargs(setting))


def _reference(prior: DeepWeightPrior, net: torch.nn.Module, draws: int) -> tuple[torch.Tensor, torch.Tensor]:
    ref_loc, ref_scale = torch.zeros(()), torch.zeros(())
    for _ in range(draws):
        gl, gs, _, _ = _grads(prior, net)
        ref_loc, ref_scale = ref_loc + gl / draws, ref_scale + gs / draws
    return ref_loc, ref_scale


def _patches(data_dir: str, num_cases: int, size: int, seed: int):
    """An endless stream of ``(image, label)`` batches of two random ``size``³ crops of the first ``num_cases``
    training cases, centred on tumour half of the time, as the finetune bundle samples them."""
    from monai.transforms import (Compose, EnsureChannelFirstd, LoadImaged, NormalizeIntensityd,
                                  RandCropByPosNegLabeld)

    import json

    from monai_dwp.data import validate_decathlon
    from monai_dwp.transforms import SelectModalityd

    split = validate_decathlon(data_dir, modality="FLAIR", num_train_cases=num_cases, num_val_cases=1, seed=seed)
    modalities = json.loads((Path(data_dir) / "dataset.json").read_text())["modality"]
    flair = next(int(k) for k, v in modalities.items() if v == "FLAIR")
    load = Compose([LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"]),
                    SelectModalityd("image", flair), NormalizeIntensityd("image", nonzero=True)])
    cases = [load(c) for c in split["train"]]
    crop = RandCropByPosNegLabeld(["image", "label"], "label", [size] * 3, pos=1, neg=1, num_samples=2)
    crop.set_random_state(seed)
    while True:
        for case in cases:
            out = crop(case)
            yield (torch.stack([torch.as_tensor(o["image"]) for o in out]).float(),
                   (torch.stack([torch.as_tensor(o["label"]) for o in out]) > 0).float())


def trained_with(args: argparse.Namespace) -> list[str]:
    """The estimators whose gradients train the network, one run each: ``--train_with``, else the first ``refresh``
    estimator of ``--estimators``, else the first estimator."""
    if args.train_with:
        return list(args.train_with)
    return [next((s for s in args.estimators if s.startswith("refresh=")), args.estimators[0])]


def along_training(args: argparse.Namespace, net: torch.nn.Module, settings: list[str], training: str) -> list[dict]:
    """Train ``net`` with the estimator ``training`` and, every ``check_every`` steps, compare the
    ``loc`` gradient each estimator gives at that step with the mean of ``ref_draws`` all-kernel draws (the rows
    of the second table). Every ``refresh`` estimator is called at every step, so its cache is as stale as it
    would be in a run of its own."""
    from monai.losses import DiceCELoss

    from monai_dwp.networks import stochastic_mode

    priors = {s: _estimator(args.prior_ckpt, s) for s in settings}
    reference = _estimator(args.prior_ckpt, "all")
    stochastic_mode(net, "local")
    locs = [m.loc for m in bayesian_modules(net).values()]
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate)
    kl_weight = 1.0 / (args.num_cases * args.voxels_per_case)
    batches = _patches(args.data_dir, args.num_cases, args.patch_size, args.seed)
    rows = []
    for step in range(1, args.train_steps + 1):
        check = step % args.check_every == 0
        image, label = next(batches)
        optimizer.zero_grad(set_to_none=True)
        data = loss_fn(net(image), label)
        kl = priors[training](net)
        grads = {training: torch.cat([g.flatten() for g in torch.autograd.grad(kl, locs, retain_graph=True)])}
        (data + kl_weight * kl).backward()
        for setting, prior in priors.items():
            if setting != training and (check or setting.startswith("refresh=")):
                grads[setting] = torch.cat([g.flatten() for g in torch.autograd.grad(prior(net), locs)])
        if check:
            ref_loc, _ = _reference(reference, net, args.ref_draws)
            row = {"trained_with": training, "step": step, "data_loss": float(data.detach()), "kl": float(kl.detach())}
            row.update({f"cos_ref_loc[{s}]": _cos(g, ref_loc) for s, g in grads.items()})
            rows.append(row)
            print(row, flush=True)
        optimizer.step()
    return rows


def plot_training(rows: list[dict], path: Path) -> None:
    """One panel per training run: the cosine to the many-draw all-kernel gradient of the estimator that trains and
    of a fresh float32 all-kernel draw at the same posterior, against the step; their gap is what training with the
    cheaper estimator gives up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(dict.fromkeys(r["trained_with"] for r in rows))
    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3.2), sharey=True, squeeze=False)
    for ax, run in zip(axes[0], runs):
        mine = [r for r in rows if r["trained_with"] == run]
        steps = [int(r["step"]) for r in mine]
        ax.plot(steps, [float(r[f"cos_ref_loc[{run}]"]) for r in mine], "o-", label=f"{run} (trains)")
        if run != "all":
            ax.plot(steps, [float(r["cos_ref_loc[all]"]) for r in mine], "s--", label="all (a fresh draw)")
        ax.set_title(f"trained with {run}", fontsize=9)
        ax.set_xlabel("training step")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("cosine to the expected gradient (loc)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior_ckpt", default="bundles/dwp_prior/models/dwp_prior.pt")
    parser.add_argument("--estimators", nargs="+",
                        default=["all", "max_kernels=2048", "refresh=4", "refresh=8", "refresh=16"],
                        help="'all', 'max_kernels=<m>' (per group) or 'refresh=<R>'")
    parser.add_argument("--train_with", nargs="+", default=None,
                        help="the estimators of --estimators that train the network along training, one run each from "
                             "the same start and batches (default: the first 'refresh=' one, else the first)")
    parser.add_argument("--draws", type=int, default=6)
    parser.add_argument("--ref_draws", type=int, default=12)
    parser.add_argument("--init_scale_ratio", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=None, help="tumour phantoms: also compare the gradients along training")
    parser.add_argument("--prior_note", default="", help="how the prior was made, for the report (default: its name)")
    parser.add_argument("--data_note", default="", help="what the data are, for the report (default: the folder name)")
    parser.add_argument("--train_steps", type=int, default=120)
    parser.add_argument("--check_every", type=int, default=30)
    parser.add_argument("--num_cases", type=int, default=5)
    parser.add_argument("--patch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--voxels_per_case", type=float, default=147012.0,
                        help="V̄ of the ELBO's KL weight 1 / (N V̄); the 3 mm tumour phantoms' value")
    parser.add_argument("--name", default="dwp_estimator",
                        help="the results' file stem: <name>.md, <name>.csv and <name>_training.csv")
    parser.add_argument("--plot_only", action="store_true",
                        help="redraw <name>_training.png from <name>_training.csv, nothing computed")
    args = parser.parse_args()
    if args.plot_only:
        with open(RESULTS / f"{args.name}_training.csv", newline="") as f:
            plot_training(list(csv.DictReader(f)), RESULTS / f"{args.name}_training.png")
        return
    for setting in args.estimators:
        estimator_kwargs(setting)  # a bad name stops here, not after the fixed-posterior table
    stray = [s for s in args.train_with or [] if s not in args.estimators]
    if stray:
        parser.error(f"--train_with {stray} must be among --estimators {args.estimators}.")

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

    ref_loc, ref_scale = _reference(base, net, args.ref_draws)

    rows = []
    for setting in args.estimators:
        prior = _estimator(args.prior_ckpt, setting)
        if setting.startswith("refresh="):
            _grads(prior, net)  # the first call estimates every kernel; the draws below are the rotating ones
        draws = [_grads(prior, net) for _ in range(args.draws)]
        pairs = [(i, j) for i in range(len(draws)) for j in range(i + 1, len(draws))]
        kls = [d[2] for d in draws]
        m = prior.max_kernels
        rows.append({
            "estimator": setting,
            "kernels_per_step": sum(math.ceil(k / prior.refresh_interval) if m is None else min(k, m)
                                    for k in group_sizes.values()),
            "cos_pair_loc": statistics.mean(_cos(draws[i][0], draws[j][0]) for i, j in pairs),
            "cos_pair_log_scale": statistics.mean(_cos(draws[i][1], draws[j][1]) for i, j in pairs),
            "cos_ref_loc": statistics.mean(_cos(d[0], ref_loc) for d in draws),
            "cos_ref_log_scale": statistics.mean(_cos(d[1], ref_scale) for d in draws),
            "rel_sd_kl": statistics.pstdev(kls) / abs(statistics.mean(kls)),
            "seconds": statistics.median(d[3] for d in draws),
        })
        print(rows[-1], flush=True)
    training: list[dict] = []
    if args.data_dir:
        start = copy.deepcopy(net.state_dict())
        for estimator in trained_with(args):
            net.load_state_dict(start)
            torch.manual_seed(args.seed + 1)  # every run starts the same random stream (the crops have their own)
            training += along_training(args, net, args.estimators, estimator)
    load_after = os.getloadavg()[0]

    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"{args.name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Deep Weight Prior term: all kernels, a per-group subsample, a rotating refresh",
        "",
        f"Prior: {args.prior_note or Path(args.prior_ckpt).name} ({len(base.vaes)} groups); Bayesian appendix-B DWPUNet, {num_kernels:,} kernels, "
        f"DWP-initialised, posterior scales {args.init_scale_ratio} × layer RMS. {args.draws} draws per estimator; "
        f"reference = mean of {args.ref_draws} all-kernel draws. Machine: {device_name('cpu')}, load average "
        f"{load_before:.2f} before, {load_after:.2f} after (`python benchmarks/dwp_estimator.py {shlex.join(sys.argv[1:])}`).",
        "",
        "## At a fixed posterior (the DWP-initialised network)",
        "",
        "| estimator | kernels per step | cos(draw, draw) loc | cos(draw, draw) log_scale | cos(draw, mean) loc "
        "| cos(draw, mean) log_scale | sd/mean of KL | seconds fwd+bwd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['estimator']}` | {r['kernels_per_step']:,} | {r['cos_pair_loc']:.3f} | {r['cos_pair_log_scale']:.3f} "
            f"| {r['cos_ref_loc']:.3f} | {r['cos_ref_log_scale']:.3f} | {r['rel_sd_kl']:.4f} | {r['seconds']:.2f} |"
        )
    if training:
        lines += ["", "## Along training", "",
                  f"The network above trained for {args.train_steps} steps on {args.num_cases} tumour phantoms "
                  f"({args.data_note or Path(args.data_dir).name}: batches of two {args.patch_size}³ crops, Dice + "
                  f"cross-entropy, Adam at {args.learning_rate}, `local` mode) plus the KL term at the ELBO's weight "
                  "1 / (N V̄), estimated by the estimator marked *trains*; one run per table, from the same start on "
                  f"the same batches. Every {args.check_every} steps: the data loss of that step's batch, the KL "
                  "estimate, and the cosine between the `loc` gradient each estimator gives at that step (the caches "
                  "of `refresh` estimators called at every step) and the mean of "
                  f"{args.ref_draws} float32 all-kernel draws at the same posterior."]
        for estimator in trained_with(args):
            lines += ["", f"Trained with `{estimator}`:", "",
                      "| step | data loss | KL | " + " | ".join(
                          f"`{s}`" + (" *trains*" if s == estimator else "") for s in args.estimators) + " |",
                      "|---|---|---|" + "---|" * len(args.estimators)]
            for r in (r for r in training if r["trained_with"] == estimator):
                lines.append(f"| {r['step']} | {r['data_loss']:.3f} | {r['kl']:,.0f} | "
                             + " | ".join(f"{r[f'cos_ref_loc[{s}]']:.3f}" for s in args.estimators) + " |")
        with open(RESULTS / f"{args.name}_training.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(training[0]))
            writer.writeheader()
            writer.writerows(training)
        plot_training(training, RESULTS / f"{args.name}_training.png")
        lines += ["", f"![cosine along training]({args.name}_training.png)"]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("wrote", RESULTS / f"{args.name}.md")


if __name__ == "__main__":
    main()
