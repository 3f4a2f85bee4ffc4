"""The server's gRPC and REST APIs against known answers, and its error statuses.

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
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
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


# ---- errors --------------------------------------------------------------------

_BAD_UTF8 = b"\xff\xfe not utf-8"


def _undecodable():
    proto = tf.make_tensor_proto([1.0, 2.0], tf.float32)
    proto.tensor_shape.dim[0].size = 3  # 2 floats for 3 elements
    return proto


def _wrong_dtype():
    return tf.make_tensor_proto([1.0], tf.float32)


GRPC_ERRORS = [
    # (id, request fields, expected code, a word of the message)
    ("unknown model", dict(model="nope"), grpc.StatusCode.NOT_FOUND, "nope"),
    ("unknown version", dict(version=9), grpc.StatusCode.NOT_FOUND, "9"),
    ("unknown label", dict(label="beta"), grpc.StatusCode.NOT_FOUND, "beta"),
    ("unknown signature", dict(signature="nope"), grpc.StatusCode.NOT_FOUND, "nope"),
    ("wrong dtype", dict(inputs={"text": _wrong_dtype()}), grpc.StatusCode.INVALID_ARGUMENT, "dtype"),
    ("wrong shape", dict(inputs={"text": [["a", "b"]]}), grpc.StatusCode.INVALID_ARGUMENT, "shape"),
    ("missing input", dict(signature="pair", inputs={"text": ["a"]}), grpc.StatusCode.INVALID_ARGUMENT,
     "text_b"),
    ("extra input", dict(inputs={"text": ["a"], "other": ["b"]}), grpc.StatusCode.INVALID_ARGUMENT, "other"),
    ("empty batch", dict(inputs={"text": tf.make_tensor_proto([], tf.string, shape=[0])}),
     grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ("invalid utf-8 text", dict(inputs={"text": [_BAD_UTF8]}), grpc.StatusCode.INVALID_ARGUMENT, "UTF-8"),
    ("model raises", dict(signature="decode", inputs={"data": [_BAD_UTF8]}),
     grpc.StatusCode.INVALID_ARGUMENT, "input string"),
    ("undecodable tensor", dict(signature="score_ids", inputs={"ids": _undecodable()}),
     grpc.StatusCode.INVALID_ARGUMENT, "decode"),
    ("oversize payload", dict(inputs={"text": ["x" * (2 << 20)]}), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
]


@pytest.mark.parametrize("fields,code,word", [e[1:] for e in GRPC_ERRORS], ids=[e[0] for e in GRPC_ERRORS])
def test_predict_errors(channel, fields, code, word):
    fields = dict(fields)
    inputs = fields.pop("inputs", {"text": ["hello"]})
    request = predict_pb2.PredictRequest()
    request.model_spec.name = fields.get("model", "toy")
    request.model_spec.signature_name = fields.get("signature", "")
    if "version" in fields:
        request.model_spec.version.value = fields["version"]
    if "label" in fields:
        request.model_spec.version_label = fields["label"]
    for name, value in inputs.items():
        proto = value if hasattr(value, "tensor_shape") else tf.make_tensor_proto(value)
        request.inputs[name].CopyFrom(proto)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=30)
    assert info.value.code() == code, info.value.details()
    assert word in info.value.details()


def test_other_api_errors(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    cases = []
    # Classify on a predict signature.
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "toy"
    request.input.example_list.examples.extend(client.make_examples([{"text": "a"}]))
    cases.append((stub.Classify, request, grpc.StatusCode.INVALID_ARGUMENT, "method_name"))
    # Regress without examples.
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "examples"
    request.model_spec.signature_name = "regress"
    cases.append((stub.Regress, request, grpc.StatusCode.INVALID_ARGUMENT, "empty"))
    # Metadata without a field, and for an unknown model.
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "toy"
    cases.append((stub.GetModelMetadata, request, grpc.StatusCode.INVALID_ARGUMENT, "metadata_field"))
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "nope"
    cases.append((stub.GetModelMetadata, request, grpc.StatusCode.NOT_FOUND, "nope"))
    # Status of an unknown model and version.
    status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "nope"
    cases.append((status_stub.GetModelStatus, request, grpc.StatusCode.NOT_FOUND, "nope"))
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "toy"
    request.model_spec.version.value = 7
    cases.append((status_stub.GetModelStatus, request, grpc.StatusCode.NOT_FOUND, "7"))
    for method, request, code, word in cases:
        with pytest.raises(grpc.RpcError) as info:
            method(request, timeout=30)
        assert info.value.code() == code, (request, info.value.details())
        assert word in info.value.details()
    # The server is still up after every error above.
    assert client.predict_text(channel, "toy", ["still alive"])["label"].shape == (1,)


REST_ERRORS = [
    ("unknown model", "/v1/models/nope:predict", {"instances": ["a"]}, None, 404),
    ("unknown version", "/v1/models/toy/versions/9:predict", {"instances": ["a"]}, None, 404),
    ("unknown signature", "/v1/models/toy:predict", {"instances": ["a"], "signature_name": "x"}, None, 404),
    ("unknown status", "/v1/models/nope", None, None, 404),
    ("bad json", "/v1/models/toy:predict", None, b"{not json", 400),
    ("no instances", "/v1/models/toy:predict", {"signature_name": "serving_default"}, None, 400),
    ("empty instances", "/v1/models/toy:predict", {"instances": []}, None, 400),
    ("wrong type", "/v1/models/toy:predict", {"instances": [1.5]}, None, 400),
    ("ragged", "/v1/models/toy:predict", {"signature_name": "score_ids", "inputs": [[1, 2, 3, 4], [1]]},
     None, 400),
    ("wrong shape", "/v1/models/toy:predict", {"signature_name": "score_ids", "inputs": [[1, 2]]}, None, 400),
    ("float for int", "/v1/models/toy:predict", {"signature_name": "score_ids", "inputs": [[1, 2, 3, 4.5]]},
     None, 400),
    ("bad b64", "/v1/models/toy:predict", {"instances": [{"b64": "@@@"}]}, None, 400),
    ("invalid utf-8", "/v1/models/toy:predict",
     {"instances": [{"b64": base64.b64encode(_BAD_UTF8).decode()}]}, None, 400),
    ("missing input", "/v1/models/toy:predict", {"signature_name": "pair", "instances": [{"text": "a"}]},
     None, 400),
    ("malformed path", "/v1/models/toy:explode", {"instances": ["a"]}, None, 400),
    ("not classify", "/v1/models/toy:classify", {"examples": [{"text": "a"}]}, None, 400),
    ("oversize body", "/v1/models/toy:predict", {"instances": ["x" * 300_000]}, None, 413),
]


@pytest.mark.parametrize("path,body,raw,status", [e[1:] for e in REST_ERRORS], ids=[e[0] for e in REST_ERRORS])
def test_rest_errors(shared_server, path, body, raw, status):
    got, reply = _rest(shared_server.rest_url + path, body, raw)
    assert got == status, reply
    assert isinstance(reply.get("error"), str) and reply["error"]
