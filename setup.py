"""SlimBench: pretrain slimmable self-supervised networks once, benchmark every sub-network."""
from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path(__file__).with_name("pretrain").joinpath("version.py").read_text(), version)

setup(
    name="slimbench",
    version=version["__version__"],
    description="Pretrain slimmable self-supervised networks once and benchmark every sub-network.",
    python_requires=">=3.10",
    packages=find_packages(include=["pretrain", "pretrain.*", "transfer", "transfer.*",
                                    "benchmarks", "benchmarks.*"]),
    # SimCLR's ImageNet 1% / 10% lists, read by transfer/protocols/semi.py from beside the module
    package_data={"transfer.protocols": ["imagenet_subsets/*.txt", "imagenet_subsets/SOURCE.md"]},
    install_requires=["torch>=2.4", "torchvision", "numpy", "pillow", "PyYAML", "tqdm", "matplotlib"],
    extras_require={"seg": ["mmengine", "mmcv-lite", "mmsegmentation", "ftfy", "regex"],
                    "det": ["pycocotools"], "import": ["safetensors"],
                    "cluster": ["submitit"], "tensorboard": ["tensorboard"],
                    # data.backend: dali (GPU JPEG decoding and augmentation); the CUDA 12 wheel runs on CPU too
                    "dali": ["nvidia-dali-cuda120"], "test": ["pytest", "hypothesis"]},
    entry_points={"console_scripts": ["bench = benchmarks.cli:main"]},
)
