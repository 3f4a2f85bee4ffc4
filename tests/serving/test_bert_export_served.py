"""A real raw-text BERT export served by our model server: gRPC Predict/Classify, REST."""

import numpy as np
import pytest
import tensorflow as tf

from keras_bert import checkpoints, export
from keras_bert.config import BertConfig
from serving import client
from serving.launcher import ServerProcess


@pytest.fixture(scope="module")
def served(fixtures_dir, tmp_path_factory):
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
    server = ServerProcess(["--model_name=bert", f"--model_base_path={base}/bert"])
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
