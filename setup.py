"""keras-bert-pipeline: BERT on TensorFlow and Keras 3, from corpus to TF Serving."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tensorflow==2.21.*",
    "tensorflow-text==2.21.*",
    "keras>=3.15,<4",
    "apache-beam==2.77.*",
    "tensorflow-serving-api==2.21.*",
    "grpcio",
    # safetensors: the standard (Hugging Face) format for weight files; needed to
    # read and write HF checkpoints without torch.
    "safetensors>=0.4,<1",
    "numpy",
    # matplotlib: the standard plotting library, for the PNG curves in report.md.
    "matplotlib>=3.8,<4",
    # PyYAML: `--config pipeline.yaml` (already a dependency of apache-beam).
    "pyyaml>=6",
    # SciPy: the standard implementation of Pearson/Spearman correlation for the
    # regression metrics (already installed as a dependency of jax and transformers).
    "scipy>=1.11",
    # dask.distributed: the cluster behind Beam's own DaskRunner (what apache-beam's
    # `dask` extra installs), so that every Beam job runs on several machines too.
    "dask[distributed]==2026.8.*",
    # google-crc32c: the standard CRC32C for Python (Google's C library; the one
    # Beam's own TFRecord I/O looks for), so pre-training records are framed
    # without importing TensorFlow in every Beam worker.
    "google-crc32c>=1.5,<2",
]

EXTRAS_REQUIRE = {
    # nbclient + ipykernel + nbformat: Jupyter's own notebook runner, kernel and file
    # format, so that `make test` executes examples/finetune_classifier.ipynb on a
    # real kernel. pytest-xdist: pytest's own plugin for running test files in
    # parallel processes (`make test` uses two workers).
    "test": ["pytest>=8,<10", "pytest-timeout>=2.3", "pytest-xdist==3.8.*", "jax[cpu]==0.10.*",
             "nbclient>=0.10,<1", "ipykernel>=6.29,<8", "nbformat>=5.10,<6"],
    # Only for regenerating golden fixtures and running peer benchmarks; never
    # needed by `make test`.
    # tokenizers: Hugging Face's Rust tokenizers (what transformers' fast BERT
    # tokenizer runs on), the peer of benchmarks/tokenizer.py.
    "reference": ["torch==2.13.0", "transformers>=4.40,<6", "tokenizers==0.23.3"],
    "jax": ["jax[cpu]"],
}

setup(
    name="keras-bert-pipeline",
    version="0.1.0",
    description="BERT pre-training, fine-tuning and serving on TensorFlow and Keras 3",
    packages=find_packages(include=["keras_bert*", "components*", "pipeline*", "serving*"]),
    python_requires=">=3.10,<3.13",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
