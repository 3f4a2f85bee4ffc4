"""Fixtures shared by the Beam job tests: a two-worker Dask cluster."""

import distributed
import pytest


@pytest.fixture(scope="session")
def dask_cluster():
    """A `dask.distributed.LocalCluster` of two one-thread worker processes, for the session.

    Jobs reach it as they would reach a real cluster, by its scheduler's TCP address.
    Workers are processes, as on a real cluster: Beam's DaskRunner gives wrong results
    on workers that are threads of the client's process (`processes=False`), so
    `components.runners` refuses `inproc://` addresses.
    """
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def dask_args(dask_cluster):
    """Beam arguments that run a job on `dask_cluster`, its input in three partitions."""
    return ["--runner=DaskRunner", "--dask_client_address", dask_cluster.scheduler_address,
            "--dask_npartitions=3"]
