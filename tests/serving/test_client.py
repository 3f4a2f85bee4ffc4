"""The client library's CLI against the shared server (in-process, no extra interpreter)."""

import json

import pytest

from serving import client
from tests.serving.toy_models import expected_text_outputs


def _run_cli(capsys, argv):
    code = client.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_grpc_predict(shared_server, capsys):
    code, out, _ = _run_cli(capsys, ["--server", shared_server.grpc_target, "--model", "toy",
                                     "--version", "1", "hello", "hi"])
    assert code == 0
    result = json.loads(out)
    assert result["label"] == expected_text_outputs(["hello", "hi"])["label"]
    assert result["model_version"] == [1, 1]


def test_cli_rest_pair_predict(shared_server, capsys):
    code, out, _ = _run_cli(capsys, ["--server", shared_server.rest_url, "--rest", "--model", "toy",
                                     "--signature", "pair", "ab", "--text_b", "cdef"])
    assert code == 0
    (prediction,) = json.loads(out)
    expected = expected_text_outputs(["abcdef"], weight=2.0)
    assert prediction["probabilities"] == pytest.approx(expected["probabilities"][0].tolist(), rel=1e-5)


def test_cli_status_metadata_and_error(shared_server, capsys):
    code, out, _ = _run_cli(capsys, ["--server", shared_server.grpc_target, "--model", "toy", "--status"])
    assert code == 0 and [s["version"] for s in json.loads(out)] == [2, 1]
    code, out, _ = _run_cli(capsys, ["--server", shared_server.grpc_target, "--model", "toy", "--metadata"])
    assert code == 0 and "serving_default" in json.loads(out)["signature_def"]
    code, _, err = _run_cli(capsys, ["--server", shared_server.grpc_target, "--model", "nope", "x"])
    assert code == 1 and "NOT_FOUND" in err
    code, _, err = _run_cli(capsys, ["--server", shared_server.rest_url, "--rest", "--model", "nope", "x"])
    assert code == 1 and "404" in err
