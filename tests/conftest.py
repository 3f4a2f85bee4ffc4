"""Shared pytest set-up: quiet TensorFlow logs, fixture paths, slow files first on workers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pathlib  # noqa: E402

import pytest  # noqa: E402

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES


# The longest test files, longest first. On pytest-xdist workers (`make test`) they
# are handed out first (with --no-loadscope-reorder), so that no worker is left
# alone with a long file at the end; a serial run keeps pytest's order.
LONGEST_FILES = (
    "tests/pipeline/test_pipeline.py",
    "tests/pipeline/test_kill.py",
    "tests/pipeline/test_pipeline_tasks.py",
    "tests/components/test_finetune.py",
    "tests/components/test_pretrain.py",
    "tests/keras_bert/test_export.py",
    "tests/components/test_predict.py",
    "tests/components/test_evaluate.py",
    "tests/components/test_dask_runner.py",
    "tests/pipeline/test_disk_full.py",
    "tests/serving/test_faults.py",
    "tests/examples/test_finetune_classifier_notebook.py",
    "tests/components/test_finetune_reference.py",
)


def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):  # not an xdist worker
        return
    rank = {path: i for i, path in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
