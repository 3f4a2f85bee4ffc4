"""A real raw-text BERT export served by our model server: gRPC Predict/Classify, REST.

When a stock `tensorflow_model_server` binary is on PATH, the same tests also run
against it (same model folder, same clients).
"""

import shutil
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

from keras_bert import checkpoints, export
from keras_bert.config import BertConfig
from serving import client
from serving.launcher import ServerProcess


class StockServer:
    """The stock tensorflow_model_server binary on free ports (same interface as ours)."""

    def __init__(self, args):
        from serving.launcher import free_port
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.args = args

    grpc_target = property(lambda self: f"localhost:{self.grpc_port}")
    rest_url = property(lambda self: f"http://localhost:{self.rest_port}")

    def start(self, timeout_s=300):
        self.process = subprocess.Popen(
            [shutil.which("tensorflow_model_server"), f"--port={self.grpc_port}",
             f"--rest_api_port={self.rest_port}", *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                if client.model_status(self.grpc_target, "bert", timeout=2)[0]["state"] == "AVAILABLE":
                    return self
            except Exception:
                time.sleep(1)
        raise RuntimeError("stock model server did not come up")

    def stop(self):
        self.process.terminate()
        return self.process.wait(60)


@pytest.fixture(scope="module", params=["ours", "stock"])
def served(request, fixtures_dir, tmp_path_factory):
    if request.param == "stock" and shutil.which("tensorflow_model_server") is None:
        pytest.skip("no tensorflow_model_server binary on PATH")
    vocab = str(fixtures_dir / "tokenizer" / "vocab_uncased.txt")
    size = sum(1 for _ in open(vocab, encoding="utf-8"))
    base = str(tmp_path_factory.mktemp("serving"))
    tf.keras.utils.set_random_seed(0)
    model = checkpoints.build_model(BertConfig.preset("tiny", vocab_size=size,
                                                      max_position_embeddings=64),
                                    "classifier", num_classes=2)
    result = export.export_saved_model(model, base, "bert", vocab, max_seq_length=32,
                                       labels=["no", "yes"])
    local = tf.saved_model.load(result.path)
    args = ["--model_name=bert", f"--model_base_path={base}/bert"]
    server = ServerProcess(args) if request.param == "ours" else StockServer(args)
    server.start(timeout_s=300)
    yield server, local
    assert server.stop() == 0


@pytest.mark.slow
def test_grpc_predict_classify_and_rest_match_the_savedmodel(served):
    server, local = served
    texts = ["Is this served?", "A second, longer sentence with more words in it."]
    expected = local.signatures["serving_default"](text=tf.constant(texts))
    got = client.predict_text(server.grpc_target, "bert", texts)
    np.testing.assert_allclose(got["probabilities"], expected["probabilities"].numpy(), atol=1e-6)
    assert list(got["label"]) == list(expected["label"].numpy())
    classified = client.classify(server.grpc_target, "bert", [{"text": t} for t in texts],
                                 signature="classify")
    assert [[label for label, _ in row] for row in classified] == [["no", "yes"]] * 2
    np.testing.assert_allclose([[score for _, score in row] for row in classified],
                               expected["probabilities"].numpy(), atol=1e-6)
    rest = client.rest_predict(server.rest_url, "bert", [{"text": t} for t in texts])
    np.testing.assert_allclose(np.array([p["probabilities"] for p in rest]),
                               expected["probabilities"].numpy(), atol=1e-5)
    status = client.model_status(server.grpc_target, "bert")
    assert status[0]["state"] == "AVAILABLE"


@pytest.mark.slow
def test_invalid_utf8_is_invalid_argument(served):
    import grpc
    server, _ = served
    with pytest.raises(grpc.RpcError) as info:
        client.predict(server.grpc_target, "bert", {"text": tf.constant([b"\xff\xfe bad"])})
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
