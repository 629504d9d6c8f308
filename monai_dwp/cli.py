"""Command line of monai_dwp: ``python -m monai_dwp <command> [--flags]`` (built with ``fire``).

Commands:
    pipeline   the whole chain on the built-in phantoms: data, source nets, prior, fine-tuning with every method,
               Monte Carlo inference and evaluation, ``report.md`` (the README's main job).
    demo       train a Bayesian DWPUNet with a Gaussian prior on a synthetic volume and print the ELBO terms.
    make-data  write a phantom dataset (``--disease ms|tumour``) in the Decathlon layout.
    make-datalist  write the ``dataset.json`` of a BraTS 2018–2021 training folder as downloaded.
    show-data  write a PNG montage of a Decathlon dataset.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["pipeline", "demo", "make_data", "make_datalist", "show_data", "main"]


def pipeline(output_dir: str = "outputs/pipeline", quick: bool = False, force: bool = False,
             device: str | None = None, methods: str | None = None, bundles_dir: str | None = None,
             data_dir: str | None = None) -> str:
    """Run the whole Deep Weight Prior chain on the built-in phantoms and write ``<output_dir>/report.md``.

    The hand-offs go to the bundles' own ``models/`` and the phantoms to ``data/`` beside ``bundles/``, so every
    bundle command runs afterwards with no path override.

    Args:
        output_dir: where the logs, the baselines' runs and the report go.
        quick: tiny settings (seconds per stage), for tests.
        force: redo stages whose outputs already exist.
        device: ``"cpu"`` or ``"cuda"``; default CUDA when available.
        methods: comma-separated fine-tuning methods (default the paper's six; ``all`` adds ``source_gaussian`` and
            ``swag_prior``).
        bundles_dir: the ``bundles/`` folder to train into (default: the repository's).
        data_dir: where the phantoms go (default: ``data/`` beside ``bundles_dir``).
    """
    import sys

    from monai_dwp.pipeline import PipelineStageError, run_pipeline

    selected = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else methods
    try:
        return str(run_pipeline(output_dir, quick=quick, force=force, device=device, methods=selected,
                                bundles_dir=bundles_dir, data_dir=data_dir))
    except PipelineStageError as err:
        print(f"\n{err}", file=sys.stderr)
        raise SystemExit(1) from None


def _synthetic_case(size: int, seed: int) -> tuple["torch.Tensor", "torch.Tensor"]:  # noqa: F821
    """One synthetic volume ``(1, 1, size, size, size)``: a bright noisy ellipsoid and its label."""
    import torch

    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, size)] * 3, indexing="ij"))
    centre = (torch.rand(3, 1, 1, 1, generator=g) - 0.5) * 0.6
    radii = 0.25 + 0.2 * torch.rand(3, 1, 1, 1, generator=g)
    label = ((((grid - centre) / radii) ** 2).sum(0) < 1).float()
    image = label * 0.6 + 0.2 + 0.15 * torch.randn(label.shape, generator=g)
    return image[None, None], label[None, None]


def demo(steps: int = 30, size: int = 32, prior_scale: float = 0.1, device: str | None = None, seed: int = 0) -> dict:
    """Train a Bayesian :class:`DWPUNet` with a Gaussian prior for a few steps and print the ELBO terms.

    Args:
        steps: number of optimisation steps.
        size: edge of the synthetic cubic volume (a multiple of 16).
        prior_scale: standard deviation of the N(0, scale²) prior.
        device: ``"cpu"``, ``"cuda"``; default CUDA when available.
        seed: random seed.

    Returns:
        The final ``{"data": ..., "kl": ..., "dice": ...}``.
    """
    import torch
    from monai.metrics import DiceMetric
    from tqdm import trange

    from monai_dwp.losses import ELBOLoss, GaussianPrior
    from monai_dwp.networks import DWPUNet, stochastic_mode

    torch.manual_seed(seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cases = [_synthetic_case(size, seed + i) for i in range(4)]
    net = DWPUNet(in_channels=1, out_channels=2, bayesian=True).to(dev)
    # whole-volume training: the ELBO's voxels per case are the volume's
    loss_fn = ELBOLoss(net, GaussianPrior(scale=prior_scale), dataset_size=len(cases), voxels_per_case=size**3)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    print(f"DWPUNet (Bayesian, {sum(p.numel() for p in net.parameters()):,} parameters) on {dev}, "
          f"{len(cases)} synthetic {size}^3 volumes, N(0, {prior_scale}^2) prior")
    bar = trange(steps, desc="ELBO", unit="step")
    for step in bar:
        image, label = cases[step % len(cases)]
        opt.zero_grad()
        loss = loss_fn(net(image.to(dev)), label.to(dev))
        loss.backward()
        opt.step()
        terms = {k: v.item() for k, v in loss_fn.last_terms.items()}
        bar.set_postfix(loss=f"{loss.item():.3f}", data=f"{terms['data']:.3f}", kl=f"{terms['kl']:.0f}")
    dice = DiceMetric(include_background=False)
    net.eval()
    with torch.no_grad(), stochastic_mode(net, "mean"):
        for image, label in cases:
            pred = net(image.to(dev)).argmax(1, keepdim=True)
            dice(torch.cat([1 - pred, pred], 1).float(), torch.cat([1 - label, label], 1).to(dev))
    result = {"data": terms["data"], "kl": terms["kl"], "kl_scaled": terms["kl_scaled"],
              "dice": dice.aggregate().item()}
    print(f"final: data term {result['data']:.4f}, KL {result['kl']:.1f} (÷N·V = {result['kl_scaled']:.4f}), "
          f"training Dice in 'mean' mode {result['dice']:.3f}")
    return result


def make_data(
    disease: str = "tumour",
    output_dir: str = "data/tumour",
    num_cases: int = 40,
    num_test: int = 10,
    spacing: float = 2.0,
    seed: int = 0,
) -> str:
    """Write a phantom dataset (``disease`` ``"ms"`` or ``"tumour"``) in the Decathlon layout; returns dataset.json."""
    from monai_dwp.data.phantoms import make_phantom_dataset

    path = make_phantom_dataset(
        output_dir, disease=disease, num_cases=num_cases, num_test=num_test, spacing=spacing, seed=seed
    )
    print(f"wrote {path}")
    return str(path)


def make_datalist(dataset_dir: str, output_file: str | None = None, num_test: int = 0, seed: int = 0,
                  overwrite: bool = False) -> str:
    """Write the Decathlon ``dataset.json`` of a BraTS 2018–2021 training folder; print it and the next command.

    Args:
        dataset_dir: the BraTS folder (case folders directly in it, or under ``HGG/`` and ``LGG/``).
        output_file: where to write; default ``<dataset_dir>/dataset.json``.
        num_test: labelled cases moved to ``test`` as the fixed held-out split (``0``: a seeded slice of training).
        seed: seed of the choice of the test cases.
        overwrite: replace an existing, different ``dataset.json``.

    Returns:
        the path of ``dataset.json``.
    """
    import shlex
    import sys

    from monai_dwp.data.brats import write_brats_datalist
    from monai_dwp.utils.validation import BundleInputError

    try:
        path = write_brats_datalist(dataset_dir, output_file, num_test=num_test, seed=seed, overwrite=overwrite)
    except (BundleInputError, FileExistsError) as err:
        print(f"monai_dwp: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    folder = shlex.quote(str(path.parent))
    print(f"wrote {path}")
    if path.name != "dataset.json":
        print(f"note: the bundles read dataset.json from --dataset_dir: rename {path.name} to dataset.json first")
    print("next: python -m monai.bundle run --config_file bundles/dwp_finetune/configs/train.json "
          f"--dataset_dir {folder} --modality FLAIR --in_channels 1")
    return str(path)


def show_data(dataset_dir: str = "data/tumour", output_file: str | None = None, num_subjects: int = 3,
              seed: int = 0) -> str:
    """Write a PNG montage (three planes, every modality, label overlay) of a Decathlon dataset."""
    from monai_dwp.data.visualize import save_data_montage

    out = Path(output_file) if output_file else Path(dataset_dir) / "montage.png"
    path = save_data_montage(dataset_dir, out, num_subjects=num_subjects, seed=seed)
    print(f"wrote {path}")
    return str(path)


def main() -> None:
    """Entry point of ``python -m monai_dwp`` and the ``monai-dwp`` script."""
    import fire

    from monai_dwp.pipeline import stop_stages_on_sigterm

    stop_stages_on_sigterm()  # `kill` stops the pipeline's running stages with it
    # the commands print what matters themselves; fire should not echo their return values
    fire.Fire({"pipeline": pipeline, "demo": demo, "make-data": make_data, "make-datalist": make_datalist,
               "show-data": show_data}, name="monai_dwp", serialize=lambda _: None)


if __name__ == "__main__":
    main()
