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
            "ruff",
            # larq 0.14 is the test oracle; it needs numpy<2 and runs under tf-keras.
            "larq==0.14.0",
            "numpy<2",
            "tf-keras",
            "larq-compute-engine",
            "mkdocs-material",
            "mkdocstrings[python]",
        ],
    },
)
