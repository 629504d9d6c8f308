"""Installation script of monai_dwp (metadata lives here; exact pins in constraints.txt)."""

from setuptools import find_packages, setup

setup(
    name="monai_dwp",
    version="0.1.0",
    description=(
        "Deep Weight Prior transfer learning for 3D MRI segmentation: Bayesian U-Nets with a "
        "kernel-VAE prior, as MONAI components and bundles."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["monai_dwp", "monai_dwp.*"]),
    package_data={"monai_dwp": ["py.typed"]},
    install_requires=[
        "torch>=2.4",
        "monai>=1.4",
        "pytorch-ignite>=0.4.11",
        "nibabel>=5.0",
        "numpy>=1.24",
        "scipy>=1.10",
        "fire>=0.5",
        "tensorboard>=2.12",
        "tqdm>=4.60",
        "nilearn>=0.10",
        "matplotlib>=3.7",
        "jsonschema>=4",  # monai.bundle verify_metadata
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3.5", "parameterized>=0.9"],
        "monailabel": ["monailabel>=0.8.5,<0.9"],
    },
    entry_points={"console_scripts": ["monai-dwp=monai_dwp.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
