"""``python -m monai_dwp.apps.monailabel <command> [--flags]``: prepare MONAI Label serving (no MONAI Label needed).

Commands:
    package  copy a trained bundle to stand alone elsewhere (a bundle is served in place without it), e.g.
             ``package --bundle_dir bundles/dwp_finetune --dest apps/dwp/model/dwp_finetune
             --model bundles/dwp_finetune/models/model.pt
             --handoffs '{"prior_ckpt": "bundles/dwp_prior/models/dwp_prior.pt"}'
             --overrides '{"method": "dwp"}' --dataset_dir data/tumour``
    app      copy monai_dwp's MONAI Label app (main.py + lib/) to a folder: ``app --dest apps/dwp``
"""

from __future__ import annotations

from monai_dwp.apps.monailabel.packaging import make_app, package_bundle

__all__ = ["main"]


def _package(bundle_dir: str, dest: str, model: str | None = None, handoffs: dict | None = None,
             overrides: dict | None = None, dataset_dir: str | None = None, overwrite: bool = False,
             verify: bool = True) -> str:
    return str(package_bundle(bundle_dir, dest, model=model, handoffs=handoffs, overrides=overrides,
                              dataset_dir=dataset_dir, overwrite=overwrite, verify=verify))


def _app(dest: str, overwrite: bool = False) -> str:
    return str(make_app(dest, overwrite=overwrite))


_package.__doc__ = package_bundle.__doc__
_app.__doc__ = make_app.__doc__


def main() -> None:
    """Entry point (fire)."""
    import fire

    fire.Fire({"package": _package, "app": _app})


if __name__ == "__main__":
    main()
