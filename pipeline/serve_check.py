"""End of `make run`: serve the pushed model, send one gRPC request, print, stop; then
say how to start the server on the pushed model and query it."""

import json
import os

from components import common

SAMPLE = "Return a new event loop and run the coroutine until it completes."
QUESTION = "What does it run?"  # span QA: asked about SAMPLE as the context


def sample_inputs(config, records):
    """(texts, texts_b or None) of the one request for this task's served model."""
    pair = records.get("Export", {}).get("outputs", {}).get("pair", config.task == "pair")
    if config.task in ("squad1", "squad2"):
        return [QUESTION], [SAMPLE]
    return [SAMPLE], ([SAMPLE] if pair else None)


def client_command(config, port, records=None):
    """The shell command a user runs to query the served model."""
    texts, texts_b = sample_inputs(config, records or {})
    second = f" --text_b \"{texts_b[0]}\"" if texts_b else ""
    return (f"python -m serving.client --server localhost:{port} --model {config.model_name} "
            f"\"{texts[0]}\"{second}")


def server_command(config, grpc_port=8500, rest_port=8501):
    """The shell command that serves the pushed model (all its versions' latest)."""
    base = os.path.abspath(os.path.join(config.serving_base_path, config.model_name))
    return (f"python -m serving.server --port {grpc_port} --rest_api_port {rest_port} "
            f"--model_name {config.model_name} --model_base_path {base}")


def how_to_serve(config, records, grpc_port=8500, rest_port=8501):
    """The closing lines of a run: how to start a server on the pushed model and query it.

    Returns:
        A list of lines (commands to run in a shell, each with a short lead-in).
    """
    texts, texts_b = sample_inputs(config, records)
    instance = {"text": texts[0]} if texts_b is None else {"text": texts[0], "text_b": texts_b[0]}
    rest = json.dumps({"instances": [instance]})
    return [f"serve the pushed model: {server_command(config, grpc_port, rest_port)}",
            f"then query it over gRPC: {client_command(config, grpc_port, records)}",
            f"or over REST: curl -d '{rest}' "
            f"localhost:{rest_port}/v1/models/{config.model_name}:predict"]


def query_once(config, records):
    """Starts `serving.server` on free ports, queries the model once over gRPC, stops it."""
    from serving import client
    from serving.launcher import ServerProcess
    base = os.path.abspath(os.path.join(config.serving_base_path, config.model_name))
    common.log_stage("serve", f"starting the model server for {config.model_name!r} from {base}")
    server = ServerProcess([f"--model_name={config.model_name}", f"--model_base_path={base}"])
    server.start(timeout_s=300)
    try:
        texts, texts_b = sample_inputs(config, records)
        result = client.predict_text(server.grpc_target, config.model_name, texts, texts_b)
        shown = texts[0] if texts_b is None else (texts[0], texts_b[0])
        common.log_stage("serve", f"gRPC Predict {shown!r} ->\n{json.dumps(client.to_json(result), indent=2)}")
        return client.to_json(result)
    finally:
        code = server.stop()
        common.log_stage("serve", f"server stopped (exit code {code})")
