from setuptools import find_packages, setup

setup(
    name="lns_keras",
    version="0.1.0",
    description=(
        "Binary neural networks in Keras 3, trained with Learning with Noisy Supervision "
        "(Han et al., ICML 2020)"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["lns_keras", "lns_keras.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3",
        "tensorflow-datasets",
        "keras-tuner[bayesian]",
        "absl-py",
        "matplotlib",
        "tensorboard",
        # tfds needs it to prepare imagenet2012 but declares it only for Python < 3.9.
        "importlib_resources",
    ],
    extras_require={
        "dev": [
            "pytest",
            # Runs the suite on every CPU (README's `-n auto`): it halves CI's wall time on
            # 2 cores, where one pytest process leaves the second mostly idle.
            "pytest-xdist",
            "ruff",
            # The tests run the library on every Keras backend, on the CPU. JAX needs
            # numpy>=2; the test oracle, larq 0.14, needs numpy<2 and so lives in an
            # environment of its own (.venv-larq, made by scripts/setup.sh).
            "jax[cpu]",
            # A CPU build here. PyPI's Linux wheels of torch carry CUDA (several GB): elsewhere
            # install the CPU wheel first (docs/guide/installation.md says how).
            "torch==2.13.0",
            "larq-compute-engine",
            "mkdocs-material",
            "mkdocstrings[python]",
        ],
    },
)
