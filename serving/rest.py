"""The stock server's HTTP/REST API, on the standard library's `http.server`.

Routes (as tensorflow_model_server):

* `GET  /v1/models/NAME[/versions/N | /labels/L]`            model status
* `GET  /v1/models/NAME[/versions/N | /labels/L]/metadata`   signature metadata
* `POST /v1/models/NAME[/versions/N | /labels/L]:predict`    `{"instances": [...]}` (row)
  or `{"inputs": ...}` (columnar), optional `"signature_name"`
* `POST ...:classify`, `...:regress`                          `{"examples": [{...}], "context": {...}}`
* `GET  /monitoring/prometheus/metrics` (path configurable)   Prometheus text, when enabled

Binary strings travel as `{"b64": "..."}`, both ways (outputs whose name ends in
`_bytes`, or that are not valid UTF-8, are sent so). Errors are `{"error": "..."}`
with the HTTP status the stock server maps each gRPC code to, and the stock
messages of its JSON parser (tensorflow_serving/util/json_tensor.cc) and REST
handler (http_rest_api_handler.cc).

Example:
    $ curl -d '{"instances": ["a text"]}' localhost:8501/v1/models/bert:predict
    {"predictions": [{"label": "positive", ...}]}
"""

import base64
import http.server
import json
import logging
import re
import threading
import time

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    regression_pb2,
)

from serving.errors import ServingError, from_exception, http_status
from serving.inference import DEFAULT_SIGNATURE, invalid

log = logging.getLogger("serving")

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>predict|classify|regress))?/?$")


# ---- JSON <-> tensors --------------------------------------------------------


def _is_b64(value):
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _json_text(value, limit=1024):
    """A JSON value as the stock server quotes it in messages (compact JSON, cut at `limit`)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."


def _json_type(value):
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _type_name(dtype):
    """TensorFlow's `DataTypeString` of a `tf.DType`: "float", "int32", "string", ..."""
    return types_pb2.DataType.Name(dtype.as_datatype_enum)[len("DT_"):].lower()


def _fits(leaf, dtype):
    """Whether a JSON leaf is of a kind the numeric or bool `dtype` takes."""
    if isinstance(leaf, bool) or dtype == tf.bool:
        return isinstance(leaf, bool) and dtype == tf.bool
    if dtype.is_integer:
        return isinstance(leaf, int)
    return isinstance(leaf, (int, float))


def _type_error(value, dtype):
    return invalid(f"JSON Value: {_json_text(value)} Type: {_json_type(value)} is not of "
                   f"expected type: {_type_name(dtype)}")


def _format_error(value, what):
    return invalid(f"JSON Value: {_json_text(value)} {what}")


def _decode_b64(value, where):
    text = value["b64"]
    if not isinstance(text, str):
        raise _format_error(value, "not formatted correctly for base64 data")
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise invalid("Unable to base64 decode") from None


def _flatten(value, where):
    """Returns (leaves, shape) of nested JSON lists; raises on ragged nesting."""
    if isinstance(value, list):
        if not value:
            return [], (0,)
        parts = [_flatten(v, where) for v in value]
        shape = parts[0][1]
        if any(p[1] != shape for p in parts):
            raise invalid(f"{where}: nested lists are ragged; every row must have the same shape")
        return [leaf for p in parts for leaf in p[0]], (len(value),) + shape
    return [value], ()


def json_to_array(value, dtype, where):
    """Converts a JSON value (nested lists) to a numpy array of a TF dtype.

    Args:
        value: the decoded JSON value.
        dtype: the signature input's `tf.DType`.
        where: input name, for messages.

    Raises:
        ServingError: INVALID_ARGUMENT for a value of the wrong kind or shape.
    """
    leaves, shape = _flatten(value, where)
    if dtype == tf.string:
        out = []
        for leaf in leaves:
            if isinstance(leaf, str):
                out.append(leaf.encode("utf-8"))
            elif _is_b64(leaf):
                out.append(_decode_b64(leaf, where))
            else:
                raise _type_error(leaf, dtype)
        array = np.empty(len(out), dtype=object)
        array[:] = out
        return array.reshape(shape)
    if not (dtype == tf.bool or dtype.is_integer or dtype.is_floating):
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                           f"Conversion of JSON Value: {_json_text(value)} to type: "
                           f"{_type_name(dtype)}")
    for leaf in leaves:
        if not _fits(leaf, dtype):
            raise _type_error(leaf, dtype)
    try:
        return np.array(leaves, dtype=dtype.as_numpy_dtype).reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise invalid(f"{where}: value does not fit {dtype.name}: {exc}") from None


def _string_to_json(value, force_b64):
    if not force_b64:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def array_to_json(name, array):
    """Converts an output array to JSON-ready lists (`{"b64"}` for binary strings)."""
    if array.dtype == object or array.dtype.kind == "S":
        force = name.endswith("_bytes")
        flat = [_string_to_json(v, force) for v in array.reshape(-1)]
        return np.array(flat + [None], dtype=object)[:-1].reshape(array.shape).tolist()
    return array.tolist()


def _shape_text(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


def _instance_item(value, dtype, name, previous):
    """One row's value of an input; every row must have the first row's shape."""
    array = json_to_array(value, dtype, name)
    if previous:
        first = previous[0]
        if first.size != array.size:
            raise invalid(f"Expecting tensor size: {first.size} but got: {array.size}")
        if first.shape != array.shape:
            raise invalid(f"Expecting shape {_shape_text(first.shape)} but got: "
                          f"{_shape_text(array.shape)}")
    return array


def _stack(rows):
    if rows[0].dtype == object:
        out = np.empty((len(rows),) + rows[0].shape, dtype=object)
        for i, row in enumerate(rows):
            out[i, ...] = row
        return out
    return np.stack(rows)


def _examples_input(body):
    # The stock parser says "classify" for both methods.
    examples = body.get("examples")
    if "examples" not in body:
        raise _format_error(body, "When method is classify, key 'examples' is expected and was "
                                  "not found")
    if not isinstance(examples, list):
        raise _format_error(body, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(body, "'examples' value is an empty array")
    input_proto = input_pb2.Input()
    context = body.get("context")
    if context is not None:
        target = input_proto.example_list_with_context
        _fill_example(target.context, context, "context")
    else:
        target = input_proto.example_list
    for index, example in enumerate(examples):
        _fill_example(target.examples.add(), example, f"examples[{index}]")
    return input_proto


def _fill_example(example, features, where):
    if not isinstance(features, dict):
        raise invalid(f"Example must be JSON object but got JSON {_json_type(features)}")
    for key, value in features.items():
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[key]
        if not values:
            raise invalid(f"{where}.{key}: empty list; the feature type cannot be inferred")
        if all(isinstance(v, str) or _is_b64(v) for v in values):
            feature.bytes_list.value.extend(
                v.encode("utf-8") if isinstance(v, str) else _decode_b64(v, f"{where}.{key}")
                for v in values)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            feature.int64_list.value.extend(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            feature.float_list.value.extend(float(v) for v in values)
        else:
            raise invalid(f"{where}.{key}: values must be all strings, all integers or all numbers")


# ---- the HTTP server ---------------------------------------------------------


class RestServer(http.server.ThreadingHTTPServer):
    """The REST front end; one thread per connection.

    Args:
        port: TCP port (bound on all interfaces).
        core: the `serving.inference.InferenceCore`.
        metrics: `serving.metrics.Metrics`.
        monitoring_path: path of the Prometheus endpoint, or None to disable it.
            Defaults to None.
        max_body_bytes: largest accepted request body. Defaults to 64 MiB.
        timeout_s: socket timeout while reading a request. Defaults to 30.
    """

    daemon_threads = True  # Idle keep-alive connections must not block exit.
    allow_reuse_address = True

    def __init__(self, port, core, metrics, monitoring_path=None, max_body_bytes=64 << 20,
                 timeout_s=30.0):
        self.core = core
        self.metrics = metrics
        self.monitoring_path = monitoring_path
        self.max_body_bytes = max_body_bytes
        self.request_timeout_s = timeout_s
        self._in_flight = 0
        self._idle = threading.Condition()
        super().__init__(("0.0.0.0", port), _Handler)

    def enter(self):
        with self._idle:
            self._in_flight += 1

    def leave(self):
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def drain(self, timeout_s):
        """Waits until no request is being handled (after `shutdown()`); True if drained."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TensorFlowServing-py"

    def setup(self):
        self.timeout = self.server.request_timeout_s
        super().setup()

    def log_message(self, format, *args):  # noqa: A002 (stdlib signature)
        log.debug("REST %s - %s", self.address_string(), format % args)

    def do_GET(self):  # noqa: N802 (stdlib name)
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")

    def _unsupported(self):
        # Any other method on a /v1/ path is a malformed request (400), as the stock
        # server; the connection closes because a body may be left unread.
        self.close_connection = True
        self._handle(self.command)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _unsupported  # noqa: N815

    # -- plumbing --

    def _send(self, status, body, content_type="application/json"):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status, obj):
        self._send(status, json.dumps(obj, indent=None) + "\n")

    def _read_body(self):
        length = self.headers.get("Content-Length")
        if length is None:
            raise invalid("Missing Content-Length header")
        try:
            length = int(length)
        except ValueError:
            raise invalid(f"Bad Content-Length header: {length!r}") from None
        if length > self.server.max_body_bytes:
            self._too_large = True
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"Request body of {length} bytes exceeds the limit of "
                               f"{self.server.max_body_bytes} bytes")
        body = self.rfile.read(length)
        if not body.strip():
            raise invalid("JSON Parse error: The document is empty")
        try:
            parsed = json.loads(body)
        except UnicodeDecodeError as exc:
            raise invalid(f"JSON Parse error: Invalid encoding in string. at offset: {exc.start}") \
                from None
        except json.JSONDecodeError as exc:
            raise invalid(f"JSON Parse error: {exc.msg} at offset: {exc.pos}") from None
        if not isinstance(parsed, dict):
            raise _format_error(parsed, "Is not object")
        return parsed

    def _handle(self, method):
        server = self.server
        path = self.path.split("?", 1)[0]
        if method == "GET" and server.monitoring_path and path == server.monitoring_path:
            self._send(200, server.metrics.render(), "text/plain; version=0.0.4")
            return
        server.enter()
        self._too_large = False
        start = time.perf_counter()
        model_name, api, code = "", "other", grpc.StatusCode.OK
        try:
            match = _MODEL_PATH.match(path)
            if not path.startswith("/v1/"):
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Not found: {method} {path}")
            if match is None:
                raise invalid(f"Malformed request: {method} {path}")
            model_name = match["name"]
            version = int(match["version"]) if match["version"] is not None else None
            label = match["label"]
            verb = match["verb"]
            if method not in ("GET", "POST") or (method == "POST") != (verb is not None):
                raise invalid(f"Malformed request: {method} {path}")
            if verb is None:
                api = "metadata" if match["metadata"] else "status"
                if api == "metadata":
                    result = self._metadata(model_name, version, label)
                else:
                    result = self._status(model_name, version, label)
            else:
                api = verb
                # As the stock handler: the body is parsed and checked before the
                # model is looked up.
                body = self._read_body()
                result = getattr(self, "_" + verb)(model_name, version, label, body)
            self._send_json(200, result)
        except Exception as exc:
            error = from_exception(exc)
            code = error.code
            if code == grpc.StatusCode.INTERNAL:
                log.exception("REST %s %s failed", method, path)
            # Payload Too Large says it better than the stock mapping's 429.
            status = 413 if self._too_large else http_status(code)
            try:
                self._send_json(status, {"error": error.message})
            except OSError:
                pass  # The client went away.
            if status == 413:
                self.close_connection = True  # The unread body is still on the socket.
        finally:
            server.leave()
            if model_name:
                server.metrics.observe_request(model_name, api, "REST", code, time.perf_counter() - start)

    # -- APIs --

    def _status(self, name, version, label):
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        elif label:
            request.model_spec.version_label = label
        response = self.server.core.get_model_status(request)
        return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    def _metadata(self, name, version, label):
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        elif label:
            request.model_spec.version_label = label
        response = self.server.core.get_model_metadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        spec = json_format.MessageToDict(response.model_spec, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
        signature_json = json_format.MessageToDict(signature_map, preserving_proto_field_name=True)
        return {"model_spec": spec, "metadata": {"signature_def": signature_json}}

    def _resolve(self, name, version, label):
        return self.server.core.manager.resolve(name, version=version, label=label)

    def _predict(self, name, version, label, body):
        signature_name = self._signature_name(body)
        servable = self._resolve(name, version, label)
        if not servable.has_signature(signature_name):
            raise invalid(f'Serving signature name: "{signature_name}" not found in signature def')
        signature_def, _ = servable.signature(signature_name)
        specs = {name: tf.as_dtype(info.dtype) for name, info in signature_def.inputs.items()}
        if not specs:
            raise invalid(f"Failed to get input map for signature: {signature_name}")
        row_format = "instances" in body
        if row_format and "inputs" in body:
            raise _format_error(body, "Not formatted correctly expecting only one of 'inputs' or "
                                      "'instances' keys to exist ")
        if not row_format and "inputs" not in body:
            raise invalid("Missing 'inputs' or 'instances' key")
        arrays = self._row_inputs(body, specs) if row_format else \
            self._columnar_inputs(body["inputs"], specs)
        outputs = self.server.core.predict_arrays(servable, signature_name, arrays)
        json_outputs = {name: array_to_json(name, value) for name, value in outputs.items()}
        if not row_format:
            if len(json_outputs) == 1:
                return {"outputs": next(iter(json_outputs.values()))}
            return {"outputs": json_outputs}
        sizes = {name: (value.shape[0] if value.ndim else None) for name, value in outputs.items()}
        batch = set(sizes.values())
        if len(batch) != 1 or None in batch:
            raise invalid(f"Output tensors must share their first (batch) dimension to be returned "
                          f"in row format; got {sizes}. Use the columnar 'inputs' format.")
        (n,) = batch
        if len(json_outputs) == 1:
            return {"predictions": next(iter(json_outputs.values()))}
        return {"predictions": [{name: json_outputs[name][i] for name in json_outputs}
                                for i in range(n)]}

    @staticmethod
    def _row_inputs(body, specs):
        """The stock parser's row format: one value (or object of named values) per row."""
        instances = body["instances"]
        if not isinstance(instances, list):
            raise _format_error(body, "Expecting 'instances' to be an list/array")
        if not instances:
            raise _format_error(body, "No values in 'instances' array")
        if not isinstance(instances[0], dict) and len(specs) > 1:
            raise invalid("instances is a plain list, but expecting list of objects as multiple "
                          "input tensors required as per tensorinfo_map")
        named = isinstance(instances[0], dict) and not _is_b64(instances[0])
        names = sorted(specs)
        rows = {name: [] for name in names}
        for index, instance in enumerate(instances):
            is_named = isinstance(instance, dict) and not _is_b64(instance)
            if is_named != named:
                raise invalid(f"Expecting {'object' if named else 'value/list'} but got "
                              f"{'object' if is_named else 'list'} at item {index} of input list")
            items = instance.items() if named else [(names[0], instance)]
            for key, value in items:
                try:
                    if key not in specs:
                        raise invalid(f"JSON object: does not have named input: {key}")
                    rows[key].append(_instance_item(value, specs[key], key, rows[key]))
                except ServingError as exc:
                    raise invalid(f"Failed to process element: {index}"
                                  f"{f' key: {key}' if named else ''} of 'instances' list. "
                                  f"Error: {exc.code.name}: {exc.message}") from None
            if named and set(instance) != set(specs):
                raise invalid(f"Failed to process element: {index} of 'instances' list. JSON "
                              f"object: {_json_text(instance)} keys must be equal to: "
                              f"{','.join(names)}")
        return {name: _stack(values) for name, values in rows.items() if values}

    @staticmethod
    def _columnar_inputs(inputs, specs):
        """The stock parser's columnar format: one (batched) value per input name."""
        if not isinstance(inputs, dict) or _is_b64(inputs):
            if len(specs) > 1:
                raise invalid("inputs is a plain value/list, but expecting an object as multiple "
                              "input tensors required as per tensorinfo_map")
            (name,) = specs
            return {name: json_to_array(inputs, specs[name], name)}
        for name in sorted(specs):
            if name not in inputs:
                raise invalid(f"Missing named input: {name} in 'inputs' object.")
        # The stock parser ignores other keys; this server names the first one, with
        # the message the stock gRPC API gives for an extra input.
        unknown = sorted(set(inputs) - set(specs))
        if unknown:
            raise invalid(f"input tensor alias not found in signature: {unknown[0]}. Inputs "
                          f"expected to be in the set {{{','.join(sorted(specs))}}}.")
        return {name: json_to_array(value, specs[name], name) for name, value in inputs.items()}

    def _classify(self, name, version, label, body):
        request = classification_pb2.ClassificationRequest()
        request.model_spec.signature_name = self._signature_name(body)
        request.input.CopyFrom(_examples_input(body))
        response = self.server.core.classify(request, servable=self._resolve(name, version, label))
        return {"result": [[[c.label, c.score] for c in row.classes]
                           for row in response.result.classifications]}

    def _regress(self, name, version, label, body):
        request = regression_pb2.RegressionRequest()
        request.model_spec.signature_name = self._signature_name(body)
        request.input.CopyFrom(_examples_input(body))
        response = self.server.core.regress(request, servable=self._resolve(name, version, label))
        return {"result": [r.value for r in response.result.regressions]}

    @staticmethod
    def _signature_name(body):
        name = body.get("signature_name", DEFAULT_SIGNATURE)
        if not isinstance(name, str):
            raise _format_error(body, "not formatted correctly. 'signature_name' key must be a "
                                      "string value.")
        return name or DEFAULT_SIGNATURE
