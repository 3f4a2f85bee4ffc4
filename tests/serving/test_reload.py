"""Hot swap, broken versions, config reload and SIGTERM, on a server of their own."""

import os
import shutil
import threading

import grpc
import pytest
from tensorflow_serving.apis import model_service_pb2_grpc, model_management_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving import client
from serving.launcher import ServerProcess
from tests.serving import toy_models
from tests.serving.conftest import LEAN_FLAGS, install, wait_for


class _ClientLoop:
    """Background clients calling Predict (gRPC and REST) until stopped; counts outcomes."""

    def __init__(self, server, grpc_clients=2):
        self.server = server
        self.versions = []
        self.failures = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._grpc_loop) for _ in range(grpc_clients)]
        self._threads.append(threading.Thread(target=self._rest_loop))

    def _record(self, version=None, failure=None):
        with self._lock:
            if failure is not None:
                self.failures.append(failure)
            else:
                self.versions.append(version)

    def _grpc_loop(self):
        with grpc.insecure_channel(self.server.grpc_target) as channel:
            while not self._stop.is_set():
                try:
                    outputs, version = client.predict(channel, "toy", {"text": ["hello", "hi"]})
                    assert outputs["model_version"].tolist() == [version, version]
                    self._record(version)
                except Exception as exc:  # Any failure counts, not only RpcError.
                    self._record(failure=repr(exc))

    def _rest_loop(self):
        while not self._stop.is_set():
            try:
                (prediction,) = client.rest_predict(self.server.rest_url, "toy", ["hello"])
                self._record(prediction["model_version"])
            except Exception as exc:
                self._record(failure=repr(exc))

    def count(self):
        with self._lock:
            return len(self.versions)

    def latest(self):
        with self._lock:
            return self.versions[-1] if self.versions else None

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


@pytest.fixture(scope="module")
def reload_server(model_library, tmp_path_factory):
    root = tmp_path_factory.mktemp("reload")
    base = str(root / "toy")
    install(model_library["text_v1"], base, 1)
    server = ServerProcess(
        ["--model_name", "toy", "--model_base_path", base, "--file_system_poll_wait_seconds=0.2"]
        + LEAN_FLAGS, log_path=str(root / "server.log"))
    server.start()
    server.base_path = base
    server.root = root
    yield server
    server.stop()


@pytest.mark.slow
def test_hot_swap_and_broken_version_without_failed_requests(reload_server, model_library):
    base = reload_server.base_path
    target = reload_server.grpc_target
    with _ClientLoop(reload_server) as loop:
        wait_for(lambda: loop.count() >= 5, what="first answers")
        install(model_library["text_v2"], base, 2)
        wait_for(lambda: loop.latest() == 2, what="version 2 serving")
        seen = loop.count()
        wait_for(lambda: loop.count() >= seen + 10, what="answers from version 2")

        assert client.model_status(target, "toy") == [
            {"version": 2, "state": "AVAILABLE", "error_code": "OK", "error_message": ""},
            {"version": 1, "state": "END", "error_code": "OK", "error_message": ""}]

        # A broken version 3: reported, and version 2 keeps serving.
        staging = os.path.join(reload_server.root, "broken3")
        toy_models.write_broken_version(staging)
        os.rename(staging, os.path.join(base, "3"))
        status = wait_for(
            lambda: next((s for s in client.model_status(target, "toy") if s["version"] == 3 and
                          s["state"] == "END"), None), what="version 3 to fail")
        assert status["error_code"] != "OK" and status["error_message"]
        seen = loop.count()
        wait_for(lambda: loop.count() >= seen + 10, what="answers after the failed load")
        assert loop.latest() == 2

        # Fixing version 3's files makes the poller try it again.
        shutil.rmtree(os.path.join(base, "3"))
        install(model_library["text_v3"], base, 3)
        wait_for(lambda: loop.latest() == 3, what="fixed version 3 serving")
        seen = loop.count()
        wait_for(lambda: loop.count() >= seen + 10, what="answers from version 3")

    assert loop.failures == []
    assert {1, 2, 3} <= set(loop.versions)
    # A swap, not a flap: once a version answered, an older one answers at most
    # the requests already in flight (one per client thread).
    slack = 3
    first_v2, first_v3 = loop.versions.index(2), loop.versions.index(3)
    assert 1 not in loop.versions[first_v2 + slack:]
    assert set(loop.versions[first_v3 + slack:]) == {3}


@pytest.mark.slow
def test_reload_config_adds_and_removes_models(reload_server, model_library):
    examples_base = os.path.join(reload_server.root, "examples")
    install(model_library["examples"], examples_base, 1)
    config = model_server_config_pb2.ModelServerConfig()
    for name, base in (("toy", reload_server.base_path), ("examples", examples_base)):
        model = config.model_config_list.config.add(name=name, base_path=base, model_platform="tensorflow")
        if name == "toy":
            model.version_labels["stable"] = 3
    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(reload_server.grpc_target))
    response = stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config),
                                              timeout=120)
    assert response.status.error_code == 0
    assert client.classify(reload_server.grpc_target, "examples", [{"text": "hello"}])[0][1][0] == "positive"
    assert client.predict(reload_server.grpc_target, "toy", {"text": ["a"]}, label="stable")[1] == 3

    del config.model_config_list.config[1]
    stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config), timeout=120)
    with pytest.raises(grpc.RpcError) as info:
        client.classify(reload_server.grpc_target, "examples", [{"text": "hello"}])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    bad = model_server_config_pb2.ModelServerConfig()
    bad.model_config_list.config.add(name="toy", base_path="/x", model_platform="pytorch")
    with pytest.raises(grpc.RpcError) as info:
        stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=bad), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert client.predict_text(reload_server.grpc_target, "toy", ["still here"])["label"].shape == (1,)
