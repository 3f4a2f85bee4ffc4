"""A small run of the load test (benchmarks/serving_load.py): zero failures."""

from benchmarks.serving_load import run_load


def test_small_load_has_no_failures(shared_server):
    result = run_load(shared_server.grpc_target, "toy", clients=4, requests=100)
    assert result.failures == 0, result.errors
    assert result.requests == 400 and result.versions == {2: 400}
    assert result.p50_ms <= result.p99_ms and result.throughput_rps > 0
