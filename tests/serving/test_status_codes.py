"""Every request error answers with the stock tensorflow_model_server's status and message.

The expected codes and messages are those of tensorflow/serving's sources
(predict_util.cc, classifier.cc, regressor.cc, multi_inference.cc,
get_model_metadata_impl.cc, get_model_status_impl.cc, server_core.cc,
basic_manager.cc, util.cc; REST: http_rest_api_handler.cc, json_tensor.cc and
http_server.cc's code -> HTTP status map). Cases marked "this server" are checks the
stock server does not make; they keep its codes. One real server (`shared_server`)
answers all of them, and the README's table must list exactly these rows.
"""

import json
import os
import re
import urllib.error
import urllib.request

import grpc
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

from serving import client, errors

C = grpc.StatusCode
BAD_UTF8 = b"\xff\xfe not utf-8"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def _predict(model="toy", signature="", inputs=None, version=None, label=None, filters=(),
             spec=True):
    request = predict_pb2.PredictRequest()
    if spec:
        request.model_spec.name = model
        request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for name, value in ({"text": ["hello"]} if inputs is None else inputs).items():
        proto = value if hasattr(value, "tensor_shape") else tf.make_tensor_proto(value)
        request.inputs[name].CopyFrom(proto)
    request.output_filter.extend(filters)
    return "Predict", request


def _undecodable():
    proto = tf.make_tensor_proto([1, 2], tf.int32)
    proto.tensor_shape.dim[0].size = 3  # 2 values for 3 elements
    return proto


def _examples(kind, model="examples", signature="", examples=({"text": "a", "x": 1.0},)):
    request = (classification_pb2.ClassificationRequest() if kind == "Classify"
               else regression_pb2.RegressionRequest())
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if examples:
        request.input.example_list.examples.extend(client.make_examples(list(examples)))
    return kind, request


def _multi(tasks):
    request = inference_pb2.MultiInferenceRequest()
    request.input.example_list.examples.extend(client.make_examples([{"text": "a", "x": 1.0}]))
    for model, signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature
        task.method_name = method
    return "MultiInference", request


def _metadata(model="toy", fields=("signature_def",)):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    request.model_spec.name = model
    return "GetModelMetadata", request


def _status(model="toy", version=None, label=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    return "GetModelStatus", request


# (README row, request, code, message: the exact text, or a compiled pattern)
GRPC_CASES = [
    ("unknown model", _predict(model="nope"), C.NOT_FOUND,
     "Servable not found for request: Latest(nope)"),
    ("unknown version", _predict(version=9), C.NOT_FOUND,
     "Servable not found for request: Specific(toy, 9)"),
    ("model whose only version failed to load", _predict(model="bad_warmup"), C.NOT_FOUND,
     "Servable not found for request: Latest(bad_warmup)"),
    ("unknown version label", _predict(label="beta"), C.INVALID_ARGUMENT,
     "Unrecognized servable version label: beta"),
    ("no ModelSpec", _predict(spec=False), C.INVALID_ARGUMENT, "Missing ModelSpec"),
    ("ModelSpec without a name", _predict(model="", signature="serving_default"), C.INVALID_ARGUMENT,
     "ModelSpec has no name specified."),
    ("Predict: unknown signature", _predict(signature="nope"), C.FAILED_PRECONDITION,
     'Serving signature key "nope" not found.'),
    ("Predict: no inputs", _predict(inputs={}), C.INVALID_ARGUMENT,
     "input size does not match signature: 0!=1 len({}) != len({text}). Sent extra: {}. "
     "Missing but required: {text}."),
    ("Predict: extra input", _predict(inputs={"text": ["a"], "other": ["b"]}), C.INVALID_ARGUMENT,
     "input size does not match signature: 2!=1 len({other,text}) != len({text}). "
     "Sent extra: {other}. Missing but required: {}."),
    ("Predict: missing input", _predict(signature="pair", inputs={"text": ["a"]}),
     C.INVALID_ARGUMENT,
     "input size does not match signature: 1!=2 len({text}) != len({text,text_b}). "
     "Sent extra: {}. Missing but required: {text_b}."),
    ("Predict: misnamed input", _predict(inputs={"txt": ["a"]}), C.INVALID_ARGUMENT,
     "input tensor alias not found in signature: txt. Inputs expected to be in the set {text}."),
    ("Predict: undecodable tensor", _predict(signature="score_ids", inputs={"ids": _undecodable()}),
     C.INVALID_ARGUMENT, "tensor parsing error: ids"),
    ("Predict: wrong dtype", _predict(inputs={"text": tf.make_tensor_proto([1.5], tf.float32)}),
     C.INVALID_ARGUMENT, "Expected input text to be string but get float."),
    ("Predict: unknown output_filter", _predict(filters=["nope"]), C.INVALID_ARGUMENT,
     "output tensor alias not found in signature: nope Outputs expected to be in the set "
     "{label,model_version,probabilities}."),
    ("Predict: repeated output_filter", _predict(filters=["label", "label"]), C.INVALID_ARGUMENT,
     "duplicate output tensor alias: label"),
    ("Predict: wrong shape (this server)", _predict(inputs={"text": [["a", "b"]]}),
     C.INVALID_ARGUMENT, re.compile(r".*input 'text' expects shape \(None,\) but got \(1, 2\)")),
    ("Predict: empty batch (this server)",
     _predict(inputs={"text": tf.make_tensor_proto([], tf.string, shape=[0])}),
     C.INVALID_ARGUMENT, re.compile(r".*input 'text' is an empty batch \(0 rows\)")),
    ("Predict: text that is not UTF-8 (this server, --utf8_inputs)",
     _predict(inputs={"text": [BAD_UTF8]}), C.INVALID_ARGUMENT,
     re.compile(r".*input 'text' element 0 is not valid UTF-8 text: .*")),
    ("the model raises (its own code and message)",
     _predict(signature="decode", inputs={"data": [BAD_UTF8]}), C.INVALID_ARGUMENT,
     re.compile(r".*input string.*", re.S)),
    ("message over the size limit (gRPC library)", _predict(inputs={"text": ["x" * (2 << 20)]}),
     C.RESOURCE_EXHAUSTED, re.compile(r".*Received message larger than max.*")),
    ("Classify/Regress: unknown signature", _examples("Classify", signature="nope"),
     C.INVALID_ARGUMENT, "No signature was found with the name: nope"),
    ("Classify: not a classification signature", _examples("Classify", model="toy"),
     C.INVALID_ARGUMENT, "Expected classification signature method_name to be "
     "tensorflow/serving/classify. Was: tensorflow/serving/predict"),
    ("Regress: not a regression signature", _examples("Regress", signature="classify"),
     C.INVALID_ARGUMENT, "Expected regression signature method_name to be "
     "tensorflow/serving/regress. Was: tensorflow/serving/classify"),
    ("Classify/Regress: no examples", _examples("Regress", signature="regress", examples=()),
     C.INVALID_ARGUMENT, "Input is empty."),
    ("MultiInference: no tasks", _multi([]), C.INVALID_ARGUMENT, "ModelSpec has no name specified."),
    ("MultiInference: tasks on two models",
     _multi([("examples", "classify", CLASSIFY), ("toy", "regress", REGRESS)]), C.INVALID_ARGUMENT,
     "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
    ("MultiInference: a signature twice",
     _multi([("examples", "classify", CLASSIFY), ("examples", "classify", CLASSIFY)]),
     C.INVALID_ARGUMENT, "Duplicate evaluation of signature: classify"),
    ("MultiInference: unknown signature", _multi([("examples", "nope", CLASSIFY)]),
     C.INVALID_ARGUMENT, "Requested signature not found in model graph: nope"),
    ("MultiInference: unsupported method",
     _multi([("examples", "classify", "tensorflow/serving/predict")]), C.UNIMPLEMENTED,
     "Unsupported signature method_name: tensorflow/serving/predict"),
    ("GetModelMetadata: no metadata_field", _metadata(fields=()), C.INVALID_ARGUMENT,
     "GetModelMetadataRequest must specify at least one metadata_field"),
    ("GetModelMetadata: unsupported metadata_field", _metadata(fields=["signature_def", "x"]),
     C.INVALID_ARGUMENT, "Metadata field x is not supported"),
    ("GetModelStatus: unknown model", _status(model="nope"), C.NOT_FOUND,
     "Could not find any versions of model nope"),
    ("GetModelStatus: unknown version", _status(version=7), C.NOT_FOUND,
     "Could not find version 7 of model toy"),
    ("GetModelStatus: unknown version label (this server)", _status(label="beta"),
     C.INVALID_ARGUMENT, "Unrecognized servable version label: beta"),
]

_PAIR = {"signature_name": "pair"}
# (README row, HTTP method, path, JSON body or raw bytes, HTTP status, code, message)
REST_CASES = [
    ("unknown model", "POST", "/v1/models/nope:predict", {"instances": ["a"]}, 404, C.NOT_FOUND,
     "Servable not found for request: Latest(nope)"),
    ("unknown version", "POST", "/v1/models/toy/versions/9:predict", {"instances": ["a"]}, 404,
     C.NOT_FOUND, "Servable not found for request: Specific(toy, 9)"),
    ("unknown version label", "POST", "/v1/models/toy/labels/beta:predict", {"instances": ["a"]},
     400, C.INVALID_ARGUMENT, "Unrecognized servable version label: beta"),
    ("REST predict: unknown signature", "POST", "/v1/models/toy:predict",
     {"instances": ["a"], "signature_name": "x"}, 400, C.INVALID_ARGUMENT,
     'Serving signature name: "x" not found in signature def'),
    ("Classify/Regress: unknown signature", "POST", "/v1/models/examples:classify",
     {"examples": [{"text": "a"}], "signature_name": "nope"}, 400, C.INVALID_ARGUMENT,
     "No signature was found with the name: nope"),
    ("Classify: not a classification signature", "POST", "/v1/models/toy:classify",
     {"examples": [{"text": "a"}]}, 400, C.INVALID_ARGUMENT,
     "Expected classification signature method_name to be tensorflow/serving/classify. "
     "Was: tensorflow/serving/predict"),
    ("REST: body that is not JSON", "POST", "/v1/models/toy:predict", b"{not json", 400,
     C.INVALID_ARGUMENT, re.compile(r"JSON Parse error: .+ at offset: 1")),
    ("REST: empty body", "POST", "/v1/models/toy:predict", b"", 400, C.INVALID_ARGUMENT,
     "JSON Parse error: The document is empty"),
    ("REST: body that is not an object", "POST", "/v1/models/toy:predict", [1], 400,
     C.INVALID_ARGUMENT, "JSON Value: [1] Is not object"),
    ("REST: signature_name not a string", "POST", "/v1/models/toy:predict",
     {"signature_name": 1, "instances": ["a"]}, 400, C.INVALID_ARGUMENT,
     'JSON Value: {"signature_name":1,"instances":["a"]} not formatted correctly. '
     "'signature_name' key must be a string value."),
    ("REST predict: neither instances nor inputs", "POST", "/v1/models/toy:predict", {}, 400,
     C.INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key"),
    ("REST predict: both instances and inputs", "POST", "/v1/models/toy:predict",
     {"instances": ["a"], "inputs": ["a"]}, 400, C.INVALID_ARGUMENT,
     """JSON Value: {"instances":["a"],"inputs":["a"]} Not formatted correctly expecting only """
     """one of 'inputs' or 'instances' keys to exist """),
    ("REST predict: instances not a list", "POST", "/v1/models/toy:predict", {"instances": "a"},
     400, C.INVALID_ARGUMENT, """JSON Value: {"instances":"a"} Expecting 'instances' to be an """
     "list/array"),
    ("REST predict: empty instances", "POST", "/v1/models/toy:predict", {"instances": []}, 400,
     C.INVALID_ARGUMENT, """JSON Value: {"instances":[]} No values in 'instances' array"""),
    ("REST predict: plain instances for several inputs", "POST", "/v1/models/toy:predict",
     dict(_PAIR, instances=["a"]), 400, C.INVALID_ARGUMENT,
     "instances is a plain list, but expecting list of objects as multiple input tensors "
     "required as per tensorinfo_map"),
    ("REST predict: instance missing an input", "POST", "/v1/models/toy:predict",
     dict(_PAIR, instances=[{"text": "a"}]), 400, C.INVALID_ARGUMENT,
     """Failed to process element: 0 of 'instances' list. JSON object: {"text":"a"} keys must """
     "be equal to: text,text_b"),
    ("REST predict: instance with an unknown input", "POST", "/v1/models/toy:predict",
     {"instances": [{"text": "a", "other": "b"}]}, 400, C.INVALID_ARGUMENT,
     "Failed to process element: 0 key: other of 'instances' list. Error: INVALID_ARGUMENT: "
     "JSON object: does not have named input: other"),
    ("REST predict: value of the wrong type", "POST", "/v1/models/toy:predict",
     {"instances": ["a", 1.5]}, 400, C.INVALID_ARGUMENT,
     "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: "
     "1.5 Type: Number is not of expected type: string"),
    ("REST predict: value of the wrong type", "POST", "/v1/models/toy:predict",
     {"signature_name": "score_ids", "inputs": [[1, 2, 3, 4.5]]}, 400, C.INVALID_ARGUMENT,
     "JSON Value: 4.5 Type: Number is not of expected type: int32"),
    ("REST predict: instances of different shapes", "POST", "/v1/models/toy:predict",
     {"signature_name": "score_ids", "instances": [[1, 2, 3, 4], [1]]}, 400, C.INVALID_ARGUMENT,
     "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
     "Expecting tensor size: 4 but got: 1"),
    ("REST predict: bad base64", "POST", "/v1/models/toy:predict",
     {"instances": [{"b64": "@@@"}]}, 400, C.INVALID_ARGUMENT,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
     "Unable to base64 decode"),
    ("REST predict: missing named input", "POST", "/v1/models/toy:predict",
     dict(_PAIR, inputs={"text": ["a"]}), 400, C.INVALID_ARGUMENT,
     "Missing named input: text_b in 'inputs' object."),
    ("REST predict: plain inputs for several inputs", "POST", "/v1/models/toy:predict",
     dict(_PAIR, inputs=["a"]), 400, C.INVALID_ARGUMENT,
     "inputs is a plain value/list, but expecting an object as multiple input tensors required "
     "as per tensorinfo_map"),
    ("REST predict: extra named input (this server)", "POST", "/v1/models/toy:predict",
     {"inputs": {"text": ["a"], "other": ["b"]}}, 400, C.INVALID_ARGUMENT,
     "input tensor alias not found in signature: other. Inputs expected to be in the set {text}."),
    ("Predict: wrong shape (this server)", "POST", "/v1/models/toy:predict",
     {"signature_name": "score_ids", "inputs": [[1, 2]]}, 400, C.INVALID_ARGUMENT,
     re.compile(r".*input 'ids' expects shape \(None, 4\) but got \(1, 2\)")),
    ("Predict: text that is not UTF-8 (this server, --utf8_inputs)", "POST",
     "/v1/models/toy:predict", {"instances": [{"b64": "//4="}]}, 400, C.INVALID_ARGUMENT,
     re.compile(r".*input 'text' element 0 is not valid UTF-8 text: .*")),
    ("REST classify/regress: no examples key", "POST", "/v1/models/examples:regress", {}, 400,
     C.INVALID_ARGUMENT,
     "JSON Value: {} When method is classify, key 'examples' is expected and was not found"),
    ("REST classify/regress: empty examples", "POST", "/v1/models/examples:regress",
     {"examples": []}, 400, C.INVALID_ARGUMENT,
     """JSON Value: {"examples":[]} 'examples' value is an empty array"""),
    ("REST: unsupported verb or HTTP method", "POST", "/v1/models/toy:explode",
     {"instances": ["a"]}, 400, C.INVALID_ARGUMENT, "Malformed request: POST /v1/models/toy:explode"),
    ("REST: unsupported verb or HTTP method", "PUT", "/v1/models/toy:predict",
     {"instances": ["a"]}, 400, C.INVALID_ARGUMENT, "Malformed request: PUT /v1/models/toy:predict"),
    ("REST: unsupported verb or HTTP method", "GET", "/v1/models/toy:predict", None, 400,
     C.INVALID_ARGUMENT, "Malformed request: GET /v1/models/toy:predict"),
    ("GetModelStatus: unknown model", "GET", "/v1/models/nope", None, 404, C.NOT_FOUND,
     "Could not find any versions of model nope"),
    ("GetModelStatus: unknown version", "GET", "/v1/models/toy/versions/7", None, 404, C.NOT_FOUND,
     "Could not find version 7 of model toy"),
    ("GetModelStatus: unknown version label (this server)", "GET", "/v1/models/toy/labels/beta",
     None, 400, C.INVALID_ARGUMENT, "Unrecognized servable version label: beta"),
    ("unknown model", "GET", "/v1/models/nope/metadata", None, 404, C.NOT_FOUND,
     "Servable not found for request: Latest(nope)"),
    ("REST: path outside /v1/ (this server)", "GET", "/v2/models/toy", None, 404, C.NOT_FOUND,
     "Not found: GET /v2/models/toy"),
    ("REST: body over --rest_api_max_body_bytes (this server)", "POST", "/v1/models/toy:predict",
     {"instances": ["x" * 300_000]}, 413, C.RESOURCE_EXHAUSTED,
     re.compile(r"Request body of \d+ bytes exceeds the limit of 262144 bytes")),
]


def _matches(message, expected):
    if isinstance(expected, re.Pattern):
        return expected.fullmatch(message) is not None
    return message == expected


@pytest.mark.parametrize("call,code,message", [c[1:] for c in GRPC_CASES],
                         ids=[c[0] for c in GRPC_CASES])
def test_grpc_status_and_message(channel, call, code, message):
    method, request = call
    service = (model_service_pb2_grpc.ModelServiceStub(channel) if method == "GetModelStatus"
               else prediction_service_pb2_grpc.PredictionServiceStub(channel))
    with pytest.raises(grpc.RpcError) as info:
        getattr(service, method)(request, timeout=30)
    assert info.value.code() == code, info.value.details()
    assert _matches(info.value.details(), message), info.value.details()


def _rest(method, url, body):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("method,path,body,status,code,message", [c[1:] for c in REST_CASES],
                         ids=[f"{c[0]} [{c[1]} {c[2]}]" for c in REST_CASES])
def test_rest_status_and_message(shared_server, method, path, body, status, code, message):
    got, reply = _rest(method, shared_server.rest_url + path, body)
    assert (got, set(reply)) == (status, {"error"}), reply
    assert _matches(reply["error"], message), reply["error"]
    if status != 413:  # Payload Too Large: this server's own status for RESOURCE_EXHAUSTED
        assert errors.http_status(code) == status


def test_server_survives_and_long_messages_are_cut_as_the_stock_server(channel):
    long_name = "n" * 2000
    with pytest.raises(grpc.RpcError) as info:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            _predict(model=long_name)[1], timeout=30)
    details = info.value.details()
    assert details == f"Servable not found for request: Latest({long_name})"[:1024] + "...TRUNCATED"
    assert client.predict_text(channel, "toy", ["still alive"])["label"].shape == (1,)


def test_http_status_of_every_code_is_the_stock_mapping():
    stock = {"OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
             "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
             "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
             "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
             "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401}
    assert {code.name: errors.http_status(code) for code in grpc.StatusCode} == stock


def _readme_rows():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text.split("#### Error statuses", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("Request error", "---"):
            rows[cells[0]] = (cells[1], cells[2], cells[3])
    return rows


def test_readme_table_lists_every_tested_error():
    want = {}
    for name, _, code, _ in GRPC_CASES:
        want[name] = {"apis": {"gRPC"}, "code": code.name, "http": str(errors.http_status(code))}
    for name, _, _, _, status, code, _ in REST_CASES:
        row = want.setdefault(name, {"apis": set(), "code": code.name, "http": str(status)})
        assert row["code"] == code.name and row["http"] == str(status), name
        row["apis"].add("REST")
    table = {name: (" + ".join(a for a in ("gRPC", "REST") if a in r["apis"]), f"`{r['code']}`",
                    r["http"]) for name, r in want.items()}
    assert _readme_rows() == table
