"""Packaging for pysnn: a spiking neural network toolkit native to PyTorch."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

# The distribution is "pysnn-torch": the package index's "pysnn" (0.1.1, 2019) is the original PySNN
# project, which this one succeeds. The import name stays ``pysnn``.
setup(
    name="pysnn-torch",
    version="0.1.0",
    description="Spiking neural networks native to PyTorch: stateful neuron and connection modules, "
    "lossless synaptic delays, local learning rules and surrogate-gradient training.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["pysnn", "pysnn.*"]),
    package_data={"pysnn.datasets": ["data/*"], "pysnn": ["csrc/*.c"]},
    include_package_data=True,
    install_requires=["torch>=2.1", "numpy", "tqdm"],
    extras_require={
        "plot": ["matplotlib"],
        "events": ["tonic"],
        "nir": ["nir>=1.0.8"],
        "rl": ["gymnasium>=1.0"],
        "dev": ["pytest", "black", "matplotlib", "pre-commit"],
    },
)
