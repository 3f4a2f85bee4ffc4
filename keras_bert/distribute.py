"""A `tf.distribute` strategy from a flag value, and who writes files under it.

- "default": the default (no-op) strategy: one device.
- "mirrored": `MirroredStrategy`, all local GPUs (or the CPU).
- "multi_worker": `MultiWorkerMirroredStrategy`; the cluster comes from the
  `TF_CONFIG` environment variable (`{"cluster": {"worker": ["host:port", ...]},
  "task": {"type": "worker", "index": i}}`). Every worker runs the same program;
  worker 0 is the chief, which alone writes exports, metrics and summaries, while
  checkpoints are written by all (collectives), the others into throw-away folders.
- "tpu": `TPUStrategy` on the TPU named by `tpu` (or the local one).

Example:
    >>> strategy = get_strategy("mirrored")
    >>> with strategy.scope():
    ...     model = build_model(config, "pretraining")
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


class StrategyError(ValueError):
    """Unknown strategy name, or a cluster description that does not fit it."""


def get_strategy(name="default", tpu=None, communication="auto"):
    """Builds the strategy named by a flag.

    Args:
        name: one of `STRATEGIES`. Defaults to "default".
        tpu: TPU name or address for "tpu" (None: the local TPU). Defaults to None.
        communication: "auto", "ring" or "nccl" collectives for "multi_worker".
            Defaults to "auto".

    Raises:
        StrategyError: for an unknown name, or "multi_worker" without a valid TF_CONFIG.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        config = tf_config()
        if not config.get("cluster"):
            raise StrategyError("strategy 'multi_worker' needs TF_CONFIG with a 'cluster' "
                                "(e.g. {\"cluster\": {\"worker\": [\"host:port\", ...]}, "
                                "\"task\": {\"type\": \"worker\", \"index\": 0}})")
        implementation = {
            "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
            "ring": tf.distribute.experimental.CommunicationImplementation.RING,
            "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
        }[communication]
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=implementation))
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise StrategyError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")


def is_multi_worker(strategy):
    """Whether `strategy` spans several worker processes."""
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(in_multi_worker_mode and in_multi_worker_mode())


def tf_config():
    """The parsed `TF_CONFIG` environment variable ({} when unset)."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise StrategyError(f"TF_CONFIG is not valid JSON ({e})") from None


def task_info(strategy):
    """(task type, task index) of this process; ("worker", 0) outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return "worker", 0
    return resolver.task_type, resolver.task_id or 0


def is_chief(strategy):
    """Whether this process writes the run's files (exports, metrics, summaries).

    The chief is the task of type "chief", else worker 0 (the TF convention).
    """
    task_type, task_id = task_info(strategy)
    if task_type == "chief":
        return True
    cluster = {}
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None:
        try:
            cluster = resolver.cluster_spec().as_dict()
        except Exception:  # A resolver without a cluster (TPU, local): single writer.
            cluster = {}
    if "chief" in cluster:
        return False
    return task_type in ("worker", None) and task_id == 0


def worker_dir(directory, strategy):
    """`directory` for the chief; a per-task temporary sibling for other workers.

    Under `MultiWorkerMirroredStrategy` every worker must take part in a checkpoint
    save, but only the chief's copy is kept (as in the TF multi-worker guide).
    """
    if is_chief(strategy):
        return directory
    task_type, task_id = task_info(strategy)
    return os.path.join(directory, f".workertemp_{task_type}_{task_id}")
