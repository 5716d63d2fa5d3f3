from setuptools import find_packages
from setuptools import setup

setup(
    name="keras-pbt",
    version="0.1.0",
    description="Population-Based Training for Keras 3 on TensorFlow, JAX and PyTorch",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # An SPDX expression (PEP 639), not a license classifier: setuptools >= 77
    # warns about the classifier on every install.
    license="Apache-2.0",
    license_files=["LICENSE"],
    classifiers=["Programming Language :: Python :: 3"],
    python_requires=">=3.11",
    packages=find_packages(include=["keras_pbt", "keras_pbt.*"])
    + find_packages(where="tensorboard_plugin", include=["keras_pbt_tensorboard"]),
    # The TensorBoard plugin lives under tensorboard_plugin/ (layout fixed by
    # the user) and ships its front end as package data.
    package_dir={"keras_pbt_tensorboard": "tensorboard_plugin/keras_pbt_tensorboard"},
    package_data={"keras_pbt_tensorboard": ["static/*"]},
    entry_points={
        "tensorboard_plugins": [
            "pbt_lineage = keras_pbt_tensorboard.plugin:PBTLineageLoader",
        ],
    },
    # No TensorFlow: Keras, keras-tuner and TensorBoard run without it, and
    # keras-pbt on JAX or PyTorch imports none. The `tensorflow` extra brings
    # it (Keras' default backend; MirroredStrategy, several devices per member).
    install_requires=[
        "keras>=3.0",
        "keras-tuner>=1.4",
        # keras-tuner imports `six` without declaring it (TensorFlow brings it).
        "six",
        "tensorboard>=2.16",
        "numpy",
    ],
    extras_require={
        "tensorflow": ["tensorflow>=2.16"],
        "test": ["pytest>=7", "hypothesis>=6", "scikit-learn"],
        # The browser test of the TensorBoard tab (Debian's chromium drives it).
        "browser": ["playwright"],
        "examples": ["scikit-learn"],
        # Keras' other backends: JAX's CPU wheel, and PyTorch's CPU build
        # (the pinned release is the CPU wheel; a newer one is a CUDA build).
        "backends": ["jax", "torch==2.13.0"],
        # benchmarks/ray_pbt.py compares against Ray Tune's PBT;
        # benchmarks/search_quality.py generates MNIST-1D offline with mnist1d,
        # and runs keras-tuner's BayesianOptimization, which needs scipy.
        "bench": ["scikit-learn", "ray[tune]", "mnist1d", "scipy"],
        # `make docs`: the reference site, built from the docstrings.
        "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26"],
    },
)
