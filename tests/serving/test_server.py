"""The server's gRPC and REST APIs against known answers (errors: test_status_codes.py).

One real server subprocess (`shared_server`) answers all of these.
"""

import base64
import json
import math
import re
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import client
from tests.serving.toy_models import expected_example_logit, expected_text_outputs

TEXTS = ["hello", "hi", "a longer sentence", "héllo wörld"]


def _predict_request(model="toy", texts=("hello",), label=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if label:
        request.model_spec.version_label = label
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(list(texts)))
    return request


def _rest(url, body=None, raw=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ---- Predict -------------------------------------------------------------------


def test_predict_grpc_latest_version_known_answers(channel):
    outputs, version = client.predict(channel, "toy", {"text": TEXTS})
    expected = expected_text_outputs(TEXTS, weight=2.0, version=2)
    assert version == 2  # `all` policy: the latest serves unversioned requests
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-6)
    assert [s.decode() for s in outputs["label"]] == expected["label"]
    assert outputs["model_version"].tolist() == [2] * len(TEXTS)


@pytest.mark.parametrize("version,label,expected_version", [
    (1, None, 1), (2, None, 2), (None, "stable", 1), (None, "canary", 2)])
def test_predict_by_version_and_label(channel, version, label, expected_version):
    outputs, served = client.predict(channel, "toy", {"text": ["hello"]}, version=version, label=label)
    assert served == expected_version
    assert outputs["model_version"].tolist() == [expected_version]
    expected = expected_text_outputs(["hello"], weight=float(expected_version), version=expected_version)
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-6)


def test_predict_response_carries_model_spec(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(_predict_request(label="stable"), timeout=30)
    assert response.model_spec.name == "toy"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def test_predict_text_pair_and_output_filter(channel):
    outputs = client.predict_text(channel, "toy", ["ab"], texts_b=["cdef"], signature="pair")
    expected = expected_text_outputs(["abcdef"], weight=2.0)
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-6)
    filtered, _ = client.predict(channel, "toy", {"text": ["hello"]}, output_filter=["label"])
    assert list(filtered) == ["label"]


def test_predict_numeric_signature(channel):
    outputs, _ = client.predict(channel, "toy", {"ids": np.array([[1, 2, 3, 4], [0, 0, 0, 7]], np.int32)},
                                signature="score_ids")
    assert outputs["total"].tolist() == [10, 7]
    assert outputs["scaled"].tolist() == [20.0, 14.0]


def test_rest_predict_row_columnar_and_b64(shared_server):
    url = shared_server.rest_url + "/v1/models/toy"
    expected = expected_text_outputs(TEXTS, weight=2.0, version=2)
    status, row = _rest(url + ":predict", {"instances": TEXTS})
    assert status == 200
    assert [p["label"] for p in row["predictions"]] == expected["label"]
    np.testing.assert_allclose([p["probabilities"] for p in row["predictions"]],
                               expected["probabilities"], rtol=1e-5, atol=1e-6)
    status, columnar = _rest(url + ":predict", {"inputs": {"text": TEXTS}})
    assert status == 200 and columnar["outputs"]["label"] == expected["label"]
    b64 = [{"b64": base64.b64encode(t.encode()).decode()} for t in TEXTS]
    status, decoded = _rest(url + ":predict", {"instances": b64})
    assert status == 200 and decoded == row
    # Named row instances for a two-input signature; version in the path.
    status, pair = _rest(url + "/versions/1:predict",
                         {"signature_name": "pair", "instances": [{"text": "ab", "text_b": "cdef"}]})
    assert status == 200
    np.testing.assert_allclose(pair["predictions"][0]["probabilities"],
                               expected_text_outputs(["abcdef"])["probabilities"][0], rtol=1e-5, atol=1e-6)
    # Columnar numeric input; several outputs come back as an object.
    status, ids = _rest(url + ":predict", {"signature_name": "score_ids", "inputs": [[1, 2, 3, 4]]})
    assert status == 200 and ids["outputs"] == {"total": [10], "scaled": [20.0]}


def test_rest_predict_label_path_and_client(shared_server):
    predictions = client.rest_predict(shared_server.rest_url, "toy", ["hello"], label="stable")
    assert predictions[0]["model_version"] == 1


# ---- Classify / Regress / MultiInference -------------------------------------------


EXAMPLES = [{"text": "hello", "x": 0.5}, {"text": "hi", "x": -1.0}]


def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def test_classify_grpc(channel):
    result = client.classify(channel, "examples", EXAMPLES)
    for example, classes in zip(EXAMPLES, result):
        p1 = _sigmoid(expected_example_logit(example["text"], example["x"]))
        assert [c[0] for c in classes] == ["negative", "positive"]
        assert classes[1][1] == pytest.approx(p1, rel=1e-5)
        assert classes[0][1] == pytest.approx(1 - p1, rel=1e-5)


def test_regress_grpc(channel):
    values = client.regress(channel, "examples", EXAMPLES, signature="regress")
    assert values == pytest.approx([expected_example_logit(e["text"], e["x"]) for e in EXAMPLES])


def test_classify_with_context(channel):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "examples"
    ctx = request.input.example_list_with_context
    ctx.context.CopyFrom(client.make_examples([{"x": 2.0}])[0])
    ctx.examples.extend(client.make_examples([{"text": "hello"}, {"text": "hello", "x": 0.0}]))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify(request, timeout=30)
    scores = [row.classes[1].score for row in response.result.classifications]
    # The context's x applies unless the example sets its own.
    assert scores == pytest.approx([_sigmoid(1 + 2.0), _sigmoid(1 + 0.0)], rel=1e-5)
    assert response.model_spec.version.value == 1


def test_multi_inference(channel):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify", "tensorflow/serving/classify"),
                              ("regress", "tensorflow/serving/regress")):
        task = request.tasks.add(method_name=method)
        task.model_spec.name = "examples"
        task.model_spec.signature_name = signature
    request.input.example_list.examples.extend(client.make_examples(EXAMPLES))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).MultiInference(request, timeout=30)
    assert len(response.results) == 2
    assert response.results[1].regression_result.regressions[0].value == pytest.approx(1.5)
    assert len(response.results[0].classification_result.classifications) == 2


def test_rest_classify_and_regress(shared_server):
    url = shared_server.rest_url + "/v1/models/examples"
    status, body = _rest(url + ":classify", {"examples": EXAMPLES})
    assert status == 200
    assert body["result"][0][1][0] == "positive"
    assert body["result"][0][1][1] == pytest.approx(_sigmoid(1.5), rel=1e-5)
    status, body = _rest(url + ":regress", {"signature_name": "regress", "examples": EXAMPLES,
                                            "context": {"x": 100.0}})
    assert status == 200 and body["result"] == pytest.approx([1.5, -3.0])


# ---- Metadata / Status ---------------------------------------------------------


def test_metadata_grpc(channel):
    version, signatures = client.metadata(channel, "toy", version=1)
    assert version == 1
    assert {"serving_default", "pair", "decode", "score_ids"} <= set(signatures)
    text = signatures["serving_default"].inputs["text"]
    assert text.dtype == tf.string.as_datatype_enum and [d.size for d in text.tensor_shape.dim] == [-1]
    assert signatures["serving_default"].method_name == "tensorflow/serving/predict"
    _, example_signatures = client.metadata(channel, "examples")
    assert example_signatures["classify"].method_name == "tensorflow/serving/classify"
    assert example_signatures["regress"].method_name == "tensorflow/serving/regress"


def test_metadata_rest(shared_server):
    status, body = _rest(shared_server.rest_url + "/v1/models/toy/labels/stable/metadata")
    assert status == 200
    assert body["model_spec"]["name"] == "toy" and body["model_spec"]["version"] == "1"
    outputs = body["metadata"]["signature_def"]["signature_def"]["serving_default"]["outputs"]
    assert outputs["probabilities"]["dtype"] == "DT_FLOAT"


def test_status_grpc_and_rest(channel, shared_server):
    assert client.model_status(channel, "toy") == [
        {"version": 2, "state": "AVAILABLE", "error_code": "OK", "error_message": ""},
        {"version": 1, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}]
    assert [s["version"] for s in client.model_status(channel, "toy", label="stable")] == [1]
    status, body = _rest(shared_server.rest_url + "/v1/models/toy/versions/2")
    assert status == 200
    assert body == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


def test_server_applies_thread_flags(shared_server):
    # The server reads the pool sizes back from tf.config.threading in its own process.
    assert "TensorFlow threads: intra-op 1, inter-op 1 (" in shared_server.log_text()


def test_warmup_replayed_and_failed_warmup_reported(channel, shared_server):
    log = shared_server.log_text()
    assert re.search(r"Finished reading warmup data for model at \S+/toy/1/\S+\. "
                     r"Number of warmup records read: 1\.", log)
    assert re.search(r"Finished reading warmup data for model at \S+/examples/1/\S+\. "
                     r"Number of warmup records read: 2\.", log)
    (status,) = client.model_status(channel, "bad_warmup")
    assert status["state"] == "END"
    assert status["error_code"] == "INVALID_ARGUMENT"
    assert "warm-up" in status["error_message"] and "not_an_input" in status["error_message"]
    with pytest.raises(grpc.RpcError) as info:
        client.predict_text(channel, "bad_warmup", ["x"])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_prometheus_metrics(shared_server, channel):
    client.predict_text(channel, "toy", ["count me"])
    with urllib.request.urlopen(shared_server.rest_url + "/monitoring/prometheus/metrics", timeout=30) as r:
        text = r.read().decode()
    count = re.search(r':tensorflow:serving:request_count\{model_name="toy",status="OK"\} (\d+)', text)
    assert count and int(count.group(1)) >= 1
    assert ':tensorflow:serving:request_latency_bucket{model_name="toy",API="predict",entrypoint="GRPC"' in text
