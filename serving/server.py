"""A TF-Serving-compatible model server: gRPC (PredictionService, ModelService) + REST.

Drop-in for `tensorflow_model_server` for this project's models: the same flags,
the same gRPC services and REST routes, the same model folder layout
(`BASE/<version>/` SavedModels), warm-up files and version policies. It needs
TensorFlow, tensorflow-serving-api and grpcio only; the served SavedModels need
no project code.

Usage:
    python -m serving.server --port 8500 --rest_api_port 8501 \\
        --model_name bert --model_base_path /models/bert
    python -m serving.server --port 8500 --model_config_file models.config \\
        --enable_batching --batching_parameters_file batching.config --monitoring

It logs `Running gRPC ModelServer at 0.0.0.0:PORT ...` and
`Exporting HTTP/REST API at:localhost:PORT ...` once it accepts requests (like
the stock server), and on SIGTERM stops accepting, finishes the requests in
flight and exits 0.

Module layout: `model_manager` (versions on disk -> loaded servables),
`inference` (request logic), `batching` (request merging), `rest` (HTTP front
end), `metrics` (Prometheus), `errors` (status codes), this file (flags, gRPC
front end, process lifecycle).
"""

import argparse
import concurrent.futures
import dataclasses
import logging
import re
import signal
import sys
import threading
import time

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    model_management_pb2,
    prediction_service_pb2_grpc,
)

from serving import batching, model_manager
from serving.errors import ServingError, from_exception, number_of
from serving.inference import InferenceCore
from serving.metrics import Metrics
from serving.rest import RestServer

log = logging.getLogger("serving")

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
DEFAULT_MONITORING_PATH = "/monitoring/prometheus/metrics"


def _bool_flag(text):
    if isinstance(text, bool):
        return text
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_arg_parser():
    """Returns the argparse parser of the stock server's flags (plus a few)."""
    p = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__.split("\n\n")[0])

    def boolean(name, default, help_text):
        p.add_argument(name, type=_bool_flag, nargs="?", const=True, default=default, help=help_text)

    p.add_argument("--port", type=int, default=8500,
                   help="gRPC port (0 picks a free one; the log line tells which).")
    p.add_argument("--grpc_channel_arguments", default="",
                   help="Comma-separated gRPC server options, e.g. "
                        "grpc.max_receive_message_length=1048576.")
    p.add_argument("--grpc_max_threads", type=int, default=16,
                   help="Threads serving gRPC requests (the most requests in flight).")
    p.add_argument("--rest_api_port", type=int, default=0,
                   help="HTTP/REST port; 0 disables the REST API (as the stock server).")
    p.add_argument("--rest_api_num_threads", type=int, default=0,
                   help="Accepted for compatibility; REST uses one thread per connection.")
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                   help="Socket timeout while reading a REST request.")
    p.add_argument("--rest_api_max_body_bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                   help="Largest REST request body; larger ones get 413.")
    p.add_argument("--model_name", default="default", help="Name of the model (with --model_base_path).")
    p.add_argument("--model_base_path", default="",
                   help="Folder holding the model's integer version folders.")
    p.add_argument("--model_config_file", default="",
                   help="A text ModelServerConfig (model_config_list); overrides --model_name/"
                        "--model_base_path.")
    p.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0,
                   help="Re-read --model_config_file this often (0: never).")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1,
                   help="Scan the base paths for new versions this often (0: only at start).")
    p.add_argument("--saved_model_tags", default="serve",
                   help="Comma-separated meta graph tags to load.")
    boolean("--enable_batching", False, "Merge concurrent Predict requests.")
    p.add_argument("--batching_parameters_file", default="",
                   help="Text BatchingParameters (max_batch_size { value: 32 } ...).")
    p.add_argument("--max_batch_size", type=int, default=None, help="Overrides the batching file.")
    p.add_argument("--batch_timeout_micros", type=int, default=None, help="Overrides the batching file.")
    p.add_argument("--num_batch_threads", type=int, default=None, help="Overrides the batching file.")
    p.add_argument("--max_enqueued_batches", type=int, default=None, help="Overrides the batching file.")
    boolean("--enable_model_warmup", True, "Replay assets.extra/tf_serving_warmup_requests on load.")
    p.add_argument("--num_request_iterations_for_warmup", type=int, default=1,
                   help="Times each warm-up record is replayed.")
    boolean("--monitoring", False, f"Serve Prometheus metrics at {DEFAULT_MONITORING_PATH} on the REST port.")
    p.add_argument("--monitoring_config_file", default="",
                   help="Text MonitoringConfig: prometheus_config { enable: true path: \"...\" }.")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="TF intra-op threads (0: TF default).")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="TF inter-op threads (0: TF default).")
    p.add_argument("--utf8_inputs", default="text,text_b",
                   help="String inputs that must be valid UTF-8 text (INVALID_ARGUMENT otherwise).")
    p.add_argument("--shutdown_grace_seconds", type=float, default=30,
                   help="How long SIGTERM waits for in-flight requests.")
    return p


def parse_channel_arguments(text):
    """Parses `--grpc_channel_arguments` (`k=v,k2=v2`) into gRPC option tuples."""
    options = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise ValueError(f"--grpc_channel_arguments: {item!r} is not key=value")
        key, value = item.split("=", 1)
        options.append((key.strip(), int(value) if re.fullmatch(r"-?\d+", value.strip()) else value.strip()))
    return options


def grpc_options(channel_arguments):
    """Returns the gRPC server options: 64 MiB messages unless overridden, no port sharing."""
    options = {
        "grpc.max_receive_message_length": DEFAULT_MAX_MESSAGE_BYTES,
        "grpc.max_send_message_length": DEFAULT_MAX_MESSAGE_BYTES,
        # Without this, a second server on a taken port starts silently.
        "grpc.so_reuseport": 0,
    }
    options.update(parse_channel_arguments(channel_arguments))
    return list(options.items())


def monitoring_path(args):
    """Returns the Prometheus endpoint path the flags ask for, or None."""
    path = DEFAULT_MONITORING_PATH if args.monitoring else None
    if args.monitoring_config_file:
        with tf.io.gfile.GFile(args.monitoring_config_file, "r") as f:
            text = f.read()
        enable = re.search(r"enable\s*:\s*(\w+)", text)
        custom = re.search(r'path\s*:\s*"([^"]*)"', text)
        if enable and enable.group(1).lower() == "true":
            path = custom.group(1) if custom else DEFAULT_MONITORING_PATH
    return path


def batching_parameters(args):
    """Returns the `BatchingParameters` of the flags (file, then single-value overrides)."""
    params = batching.BatchingParameters()
    if args.batching_parameters_file:
        with tf.io.gfile.GFile(args.batching_parameters_file, "r") as f:
            params = batching.parse_batching_parameters(f.read(), args.batching_parameters_file)
    overrides = {name: getattr(args, name) for name in
                 ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches")
                 if getattr(args, name) is not None}
    return dataclasses.replace(params, **overrides)


# ---- gRPC front end ------------------------------------------------------------


def _serve(api, request, context, handler, metrics, model_name):
    """Runs one gRPC handler: maps every failure to a status, records metrics."""
    start = time.perf_counter()
    code, response, error = grpc.StatusCode.OK, None, None
    try:
        response = handler(request)
    except Exception as exc:  # The server never dies of a request.
        error = from_exception(exc)
        code = error.code
        if code == grpc.StatusCode.INTERNAL:
            log.exception("%s failed", api)
    metrics.observe_request(model_name, api, "GRPC", code, time.perf_counter() - start)
    if error is not None:
        context.abort(error.code, error.message)
    return response


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService over an `InferenceCore`."""

    def __init__(self, core, metrics):
        self._core = core
        self._metrics = metrics

    def Predict(self, request, context):  # noqa: N802 (gRPC names)
        return _serve("predict", request, context, self._core.predict, self._metrics,
                      request.model_spec.name)

    def Classify(self, request, context):  # noqa: N802
        return _serve("classify", request, context, self._core.classify, self._metrics,
                      request.model_spec.name)

    def Regress(self, request, context):  # noqa: N802
        return _serve("regress", request, context, self._core.regress, self._metrics,
                      request.model_spec.name)

    def MultiInference(self, request, context):  # noqa: N802
        name = request.tasks[0].model_spec.name if request.tasks else ""
        return _serve("multi_inference", request, context, self._core.multi_inference,
                      self._metrics, name)

    def GetModelMetadata(self, request, context):  # noqa: N802
        return _serve("metadata", request, context, self._core.get_model_metadata, self._metrics,
                      request.model_spec.name)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService: status and config reload."""

    def __init__(self, core, metrics):
        self._core = core
        self._metrics = metrics

    def GetModelStatus(self, request, context):  # noqa: N802
        return _serve("status", request, context, self._core.get_model_status, self._metrics,
                      request.model_spec.name)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self._core.manager.reload_config(request.config)
        except Exception as exc:
            error = from_exception(exc)
            log.error("Reload of the model config failed: %s", error)
            response.status.error_code = number_of(error.code)
            response.status.error_message = error.message
            context.abort(error.code, error.message)
        log.info("Reloaded the model config: %s", [m.name for m in request.config.model_config_list.config])
        return response


# ---- the server ----------------------------------------------------------------


class ModelServer:
    """The whole server: model manager, optional batcher, gRPC and REST front ends.

    Args:
        args: parsed flags (`build_arg_parser().parse_args(...)`).
    """

    def __init__(self, args):
        self.args = args
        self.metrics = Metrics()
        if args.model_config_file:
            config = model_manager.read_model_config_file(args.model_config_file)
        elif args.model_base_path:
            config = model_manager.single_model_config(args.model_name, args.model_base_path)
        else:
            raise ValueError("Give --model_base_path (with --model_name) or --model_config_file")
        self.batcher = None
        if args.enable_batching:
            params = batching_parameters(args)
            log.info("Batching enabled: %s", params)
            self.batcher = batching.BatchScheduler(params, self.metrics)
        warmup = self._warmup if args.enable_model_warmup else None
        self.manager = model_manager.ModelManager(
            config, tags=[t for t in args.saved_model_tags.split(",") if t], warmup=warmup,
            metrics=self.metrics)
        self.core = InferenceCore(
            self.manager, self.batcher,
            utf8_inputs=[n for n in args.utf8_inputs.split(",") if n],
            warmup_iterations=args.num_request_iterations_for_warmup)
        self.grpc_server = None
        self.rest_server = None
        self.grpc_port = None
        self.rest_port = None
        self._rest_thread = None

    def _warmup(self, servable):
        count = self.core.warmup(servable)
        if count:
            self.metrics.warmup_records.inc(count, model_name=servable.name)

    def start(self):
        """Loads the models, then starts listening (as the stock server, models first)."""
        args = self.args
        self.manager.poll_once()
        self.manager.start_polling(args.file_system_poll_wait_seconds, args.model_config_file or None,
                                   args.model_config_file_poll_wait_seconds)
        self.grpc_server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=args.grpc_max_threads,
                                                  thread_name_prefix="grpc"),
            options=grpc_options(args.grpc_channel_arguments))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.core, self.metrics), self.grpc_server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.core, self.metrics), self.grpc_server)
        self.grpc_port = self.grpc_server.add_insecure_port(f"0.0.0.0:{args.port}")
        if not self.grpc_port:
            raise OSError(f"Cannot bind the gRPC port {args.port}")
        self.grpc_server.start()
        log.info("Running gRPC ModelServer at 0.0.0.0:%d ...", self.grpc_port)
        if args.rest_api_port:
            self.rest_server = RestServer(
                args.rest_api_port, self.core, self.metrics, monitoring_path(args),
                max_body_bytes=args.rest_api_max_body_bytes,
                timeout_s=args.rest_api_timeout_in_ms / 1000)
            self.rest_port = self.rest_server.server_address[1]
            self._rest_thread = threading.Thread(target=self.rest_server.serve_forever,
                                                 name="rest", daemon=True)
            self._rest_thread.start()
            log.info("Exporting HTTP/REST API at:localhost:%d ...", self.rest_port)

    def stop(self, grace_s=30.0):
        """Stops accepting requests, finishes those in flight, then stops the rest."""
        self.manager.stop()
        grpc_done = self.grpc_server.stop(grace_s) if self.grpc_server else None
        if self.rest_server is not None:
            self.rest_server.shutdown()  # No new connections.
            if not self.rest_server.drain(grace_s):
                log.warning("REST requests still running after %.0f s; exiting anyway", grace_s)
            self.rest_server.server_close()
        if grpc_done is not None:
            grpc_done.wait(grace_s + 5)
        if self.batcher is not None:
            self.batcher.stop()


def main(argv=None):
    """Runs the server until SIGTERM/SIGINT; returns the process exit code."""
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d: %(levelname).1s %(module)s.py:%(lineno)d] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S")
    stop_requested = threading.Event()

    def on_signal(signum, _frame):
        log.info("Received %s; shutting down", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    if args.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    server = None
    try:
        server = ModelServer(args)
        server.start()
    except (ServingError, ValueError, OSError, RuntimeError) as exc:
        log.error("Cannot start the model server: %s", exc)
        if server is not None:
            server.stop(0)
        return 1
    while not stop_requested.wait(0.5):
        pass
    server.stop(args.shutdown_grace_seconds)
    log.info("Model server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
