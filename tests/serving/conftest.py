"""Fixtures for the serving tests: toy SavedModels and real server subprocesses.

Models are built once per session (`model_library`) and copied into base paths
with an atomic rename, the way a deployment (components/push) should drop a
version in.
"""

import os
import shutil
import time
import uuid

import grpc
import pytest

from serving.launcher import ServerProcess
from tests.serving import toy_models

# Both cores are shared: keep each server to one TF thread pool thread.
LEAN_FLAGS = ["--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1",
              "--grpc_max_threads=8"]


def wait_for(condition, timeout_s=60.0, what="condition"):
    """Polls `condition()` every 0.1 s; returns its first truthy value, or fails the test."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def model_library(tmp_path_factory):
    """Builds every toy version once; returns dict key -> version folder."""
    root = tmp_path_factory.mktemp("model_library")
    library = {
        "text_v1": toy_models.build_text_model(str(root / "text_v1"), version=1, weight=1.0),
        "text_v2": toy_models.build_text_model(str(root / "text_v2"), version=2, weight=2.0),
        "text_v3": toy_models.build_text_model(str(root / "text_v3"), version=3, weight=3.0),
        "examples": toy_models.build_example_model(str(root / "examples"), weight=1.0),
    }
    # A good model whose warm-up request names an input the model does not have.
    bad = toy_models.build_text_model(str(root / "bad_warmup"), version=1, warmup_texts=None)
    from tensorflow_serving.apis import predict_pb2
    import tensorflow as tf

    request = predict_pb2.PredictRequest()
    request.inputs["not_an_input"].CopyFrom(tf.make_tensor_proto(["x"]))
    toy_models.write_warmup(bad, [request])
    library["bad_warmup"] = bad
    return library


def install(source, base_path, version):
    """Copies a version folder into `base_path/<version>` atomically (copy, then rename)."""
    os.makedirs(base_path, exist_ok=True)
    staging = os.path.join(base_path, f".staging-{uuid.uuid4().hex}")
    shutil.copytree(source, staging)
    os.rename(staging, os.path.join(base_path, str(version)))


@pytest.fixture(scope="session")
def shared_server(model_library, tmp_path_factory):
    """One server for the read-only tests.

    Models: `toy` (text model, versions 1 and 2, policy all, labels stable=1 and
    canary=2), `examples` (TF1 classify/regress model), `bad_warmup` (its only
    version fails warm-up). gRPC messages are capped at 1 MiB and REST bodies at
    256 KiB so the oversize tests stay small.
    """
    root = tmp_path_factory.mktemp("shared_models")
    install(model_library["text_v1"], str(root / "toy"), 1)
    install(model_library["text_v2"], str(root / "toy"), 2)
    install(model_library["examples"], str(root / "examples"), 1)
    install(model_library["bad_warmup"], str(root / "bad_warmup"), 1)
    config = root / "models.config"
    config.write_text(f"""
model_config_list {{
  config {{
    name: "toy" base_path: "{root / 'toy'}" model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{ name: "examples" base_path: "{root / 'examples'}" model_platform: "tensorflow" }}
  config {{ name: "bad_warmup" base_path: "{root / 'bad_warmup'}" model_platform: "tensorflow" }}
}}
""")
    server = ServerProcess(
        ["--model_config_file", str(config), "--monitoring", "--file_system_poll_wait_seconds=0",
         "--grpc_channel_arguments=grpc.max_receive_message_length=1048576",
         "--rest_api_max_body_bytes=262144"] + LEAN_FLAGS,
        log_path=str(root / "server.log"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def channel(shared_server):
    """A gRPC channel to `shared_server`."""
    with grpc.insecure_channel(shared_server.grpc_target) as ch:
        yield ch
