"""Reusable `model.fit` callbacks for long training runs (TensorFlow backend).

- `PeriodicCheckpoint`: a `tf.train.CheckpointManager` checkpoint of the model *and*
  the optimizer (step counter, moments, gradient accumulators) every N optimizer
  steps, plus `restore_latest()` to resume. This is the project's BackupAndRestore:
  Keras' `BackupAndRestore` only resumes at the start of the interrupted epoch and
  has every worker write the same file; this one resumes at the exact step (losing at
  most one checkpoint interval), writes atomically (the `checkpoint` index file is
  replaced only after the data is on disk, so a SIGKILL mid-save leaves the previous
  checkpoint valid), and under `MultiWorkerMirroredStrategy` has every worker take
  part while only the chief's copy is kept. It never saves non-finite weights.
- `NaNGuard`: stops at the first non-finite loss, with a message naming the step and
  the last good checkpoint (`TrainingDivergedError` via `raise_if_diverged()`).
- `StopAtStep`: ends `fit` when the optimizer reaches a step count, whatever the
  epoch bookkeeping (resumed runs start mid-epoch).
- `ThroughputLogger`: sequences/s and the learning rate, every N steps, to stdout
  and TensorBoard.
- `EpochSummaries`: each epoch's logs (train and `val_` metrics) as TensorBoard
  scalars, laid out as Keras' `TensorBoard` callback lays them out, without the
  tensorboard package.

Steps are optimizer updates (`optimizer.iterations`): with gradient accumulation
one step is several batches, and a checkpoint is only taken after a whole update.

Example:
    >>> ckpt = PeriodicCheckpoint("out/checkpoints", every_n_steps=1000)
    >>> ckpt.set_model(model); start = ckpt.restore_latest()
    >>> guard = NaNGuard(ckpt)
    >>> model.fit(ds, steps_per_epoch=1000, epochs=100,
    ...           callbacks=[guard, ckpt, StopAtStep(100000)])
    >>> guard.raise_if_diverged()
"""

import logging
import shutil
import time

import keras
import numpy as np
from keras import ops
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from keras_bert import distribute

logger = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; training stopped."""


def base_optimizer(optimizer):
    """The optimizer that holds the step counter (unwraps `LossScaleOptimizer`)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def build_optimizer(model):
    """Creates `model.optimizer`'s variables now, before `fit` traces its first step.

    Outside a `tf.distribute` strategy scope (the default strategy), Keras builds the
    optimizer (Adam's two moments per weight) inside the first trace of the train
    step, and a `tf.function` whose first trace creates variables is traced a second
    time without them: the whole forward and backward graph, twice. For the default
    task's 4-layer model the first epoch took 42-52 s with it and 30-32 s without.
    Call inside the strategy scope, after `compile`; building an optimizer twice
    is a no-op.
    """
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    return optimizer


def optimizer_step(model):
    """Optimizer updates applied so far (batches / gradient accumulation steps)."""
    return int(base_optimizer(model.optimizer).iterations.numpy())


def _batches_seen(model):
    return int(base_optimizer(model.optimizer)._iterations.numpy())


def _accumulation(model):
    return base_optimizer(model.optimizer).gradient_accumulation_steps or 1


def at_update_boundary(model):
    """True when no partial gradient accumulation is pending."""
    return _batches_seen(model) % _accumulation(model) == 0


def weights_are_finite(model):
    """Whether every weight of `model` is finite."""
    return all(bool(np.all(np.isfinite(np.asarray(w.numpy()))))
               for w in model.trainable_weights if "float" in str(w.dtype))


def write_scalar(name, value):
    """A TensorBoard scalar in the default summary writer, without the tensorboard package.

    `tf.summary.scalar` lives in the tensorboard package, which TensorFlow 2.21 no
    longer installs; this writes the same event (a float tensor tagged for the
    "scalars" plugin) with TensorFlow alone.
    """
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    return tf.summary.write(name, tf.constant(float(value), tf.float32), metadata=metadata)


def _finite(value):
    try:
        return bool(np.all(np.isfinite(np.asarray(value, dtype=np.float64))))
    except (TypeError, ValueError):
        return True


# Keras versions with the two multi-worker trainer bugs below: [first, first not checked).
KERAS_DISTRIBUTE_BUGS = ((3, 0), (3, 16))


def _keras_version():
    parts = []
    for part in keras.version().split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def work_around_keras_distribute_bugs(model, strategy):
    """Lets `fit`/`evaluate` of a built dict-input model run under `MultiWorkerMirroredStrategy`.

    Two Keras 3.15 TensorFlow-trainer bugs (keras-team/keras#20329, #20585) stop it:

    - before the first step, `fit` reduces one distributed input batch across
      replicas to build the model symbolically, which fails for dict inputs. That
      build is a no-op for a model whose layers and optimizer are built and which has
      no compiled loss/metrics, so it is skipped in that case.
    - every step's metric values are reduced with `strategy.reduce("MEAN", v,
      axis=0)`, which fails for scalars. The model's `compute_metrics` values are
      given a leading axis of 1 so that reduce returns the mean over workers: every
      worker then logs the same numbers (and a NaN guard stops them all together).

    Does nothing for other strategies, or on a Keras version outside
    `KERAS_DISTRIBUTE_BUGS` (the versions they were seen in, up to the one this
    project pins), where the private hooks patched here may have changed.

    Args:
        model: a compiled Keras model (TensorFlow backend).
        strategy: the strategy it was built under.
    """
    if not distribute.is_multi_worker(strategy):
        return model
    first, after = KERAS_DISTRIBUTE_BUGS
    if not first <= _keras_version() < after:
        return model

    original_build = model._maybe_symbolic_build
    original_metrics = model.compute_metrics

    def maybe_symbolic_build(iterator=None, data_batch=None):
        built = (all(layer.built for layer in model._flatten_layers())
                 and (model.optimizer is None or base_optimizer(model.optimizer).built)
                 and getattr(model, "_compile_loss", None) is None
                 and getattr(model, "_compile_metrics", None) is None)
        if built:
            return None
        return original_build(iterator=iterator, data_batch=data_batch)

    def compute_metrics(*args, **kwargs):
        values = original_metrics(*args, **kwargs)
        return {k: (ops.reshape(v, (1,)) if len(v.shape) == 0 else v) for k, v in values.items()}

    model._maybe_symbolic_build = maybe_symbolic_build
    model.compute_metrics = compute_metrics
    return model


class PeriodicCheckpoint(keras.callbacks.Callback):
    """Saves model + optimizer every `every_n_steps` optimizer steps; resumes from the last.

    Args:
        directory: checkpoint folder (`ckpt-<step>.index/.data-*` and `checkpoint`).
        every_n_steps: save interval in optimizer steps.
        max_to_keep: checkpoints kept. Defaults to 3.
        strategy: the `tf.distribute` strategy, so that non-chief workers save into
            throw-away folders. Defaults to the current strategy.
        save_on_train_end: also save when `fit` ends (if the step is new). Defaults
            to True.

    Example:
        >>> ckpt = PeriodicCheckpoint("out/checkpoints", every_n_steps=500)
        >>> ckpt.set_model(model)   # compiled, optimizer built
        >>> step = ckpt.restore_latest()
    """

    def __init__(self, directory, every_n_steps, max_to_keep=3, strategy=None,
                 save_on_train_end=True):
        super().__init__()
        if every_n_steps <= 0:
            raise ValueError(f"every_n_steps must be positive, got {every_n_steps}")
        self.directory = directory
        self.every_n_steps = every_n_steps
        self.max_to_keep = max_to_keep
        self.strategy = strategy
        self.save_on_train_end = save_on_train_end
        self._checkpoint = None
        self._manager = None
        self.last_saved_step = None
        self.skipped_non_finite = 0
        # Set (to a reason) by NaNGuard: no more saves in this run.
        self.blocked = None

    def _ensure(self):
        if self._manager is not None:
            return
        optimizer = self.model.optimizer
        if optimizer is None:
            raise ValueError("PeriodicCheckpoint needs a compiled model")
        if not base_optimizer(optimizer).built:
            base_optimizer(optimizer).build(self.model.trainable_variables)
        self._checkpoint = tf.train.Checkpoint(model=self.model, optimizer=optimizer)
        strategy = self.strategy or tf.distribute.get_strategy()
        self._write_dir = distribute.worker_dir(self.directory, strategy)
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, self._write_dir, max_to_keep=self.max_to_keep,
            checkpoint_name="ckpt")

    @property
    def latest_checkpoint(self):
        """Path prefix of the newest checkpoint in `directory`, or None."""
        return tf.train.latest_checkpoint(self.directory)

    def restore_latest(self):
        """Restores the newest checkpoint of `directory` if any; returns the optimizer step.

        Call after `compile` (and inside the strategy scope when there is one);
        the optimizer is built first so its state is restored too.
        """
        self._ensure()
        path = self.latest_checkpoint
        if path is None:
            return optimizer_step(self.model)
        status = self._checkpoint.restore(path)
        status.assert_existing_objects_matched()
        step = optimizer_step(self.model)
        self.last_saved_step = step
        logger.info("restored %s (step %d)", path, step)
        return step

    def save(self, step=None):
        """Saves now unless weights are non-finite; returns the path or None."""
        self._ensure()
        step = optimizer_step(self.model) if step is None else step
        if self.blocked:
            logger.error("not saving a checkpoint at step %d: %s", step, self.blocked)
            return None
        if not weights_are_finite(self.model):
            self.skipped_non_finite += 1
            logger.error("not saving a checkpoint at step %d: weights are not finite", step)
            return None
        path = self._manager.save(checkpoint_number=step)
        if self._write_dir != self.directory:
            # A non-chief's copy only existed so that it took part in the save.
            shutil.rmtree(self._write_dir, ignore_errors=True)
        self.last_saved_step = step
        return path

    def on_train_begin(self, logs=None):
        self._ensure()

    def on_train_batch_end(self, batch, logs=None):
        if not at_update_boundary(self.model):
            return
        step = optimizer_step(self.model)
        if step % self.every_n_steps or step == self.last_saved_step or self.blocked:
            return
        self.save(step)

    def on_train_end(self, logs=None):
        if not self.save_on_train_end or not at_update_boundary(self.model):
            return
        step = optimizer_step(self.model)
        if step != self.last_saved_step and not self.blocked:
            self.save(step)


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and says what to do.

    Place it before `PeriodicCheckpoint` in the callback list; it blocks that
    callback from saving once the loss is bad, so the last good checkpoint stays the
    newest. After `fit`, call `raise_if_diverged()`; the message names the step, the
    value and the last good checkpoint. Under `MultiWorkerMirroredStrategy` the
    logged loss must be the same on every worker (see `work_around_keras_distribute_bugs`),
    so that all stop at the same step (a worker that stopped alone would leave the
    others waiting in a collective).

    Args:
        checkpoint: the run's `PeriodicCheckpoint`. Defaults to None.
    """

    def __init__(self, checkpoint=None):
        super().__init__()
        self.checkpoint = checkpoint
        self.diverged_step = None
        self.message = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or _finite(loss):
            return
        self.diverged_step = optimizer_step(self.model)
        if self.checkpoint is not None:
            self.checkpoint.blocked = f"loss is not finite at step {self.diverged_step}"
        last = self.checkpoint.latest_checkpoint if self.checkpoint is not None else None
        value = float(np.asarray(loss).reshape(-1)[0])
        self.message = (
            f"training diverged: loss is {value} at step {self.diverged_step} "
            f"(batch {batch} of the epoch); stopped. "
            + (f"The last good checkpoint is {last}; " if last else
               "There is no checkpoint yet; ")
            + "lower the learning rate, lengthen the warm-up or check the input data, "
              "then run again to resume from it.")
        logger.error(self.message)
        print(f"NaNGuard: {self.message}", flush=True)
        self.model.stop_training = True

    def raise_if_diverged(self):
        """Raises `TrainingDivergedError` if training was stopped by this guard."""
        if self.diverged_step is not None:
            raise TrainingDivergedError(self.message)


def global_metrics(model):
    """{name: value} of `model.metrics`, aggregated over all replicas and workers.

    Inside `fit`/`evaluate` Keras reports each worker's own metric values under
    `MultiWorkerMirroredStrategy`; reading the (sync-on-read) metric variables here,
    outside a replica context, sums their totals and counts across workers first.
    Call on every worker (it is a collective there).
    """
    return {m.name: float(m.result()) for m in model.metrics}


class StopAtStep(keras.callbacks.Callback):
    """Ends `fit` once the optimizer has made `num_steps` updates.

    Args:
        num_steps: the run's total optimizer steps.
    """

    def __init__(self, num_steps):
        super().__init__()
        self.num_steps = num_steps

    def on_train_batch_end(self, batch, logs=None):
        if at_update_boundary(self.model) and optimizer_step(self.model) >= self.num_steps:
            self.model.stop_training = True


class ThroughputLogger(keras.callbacks.Callback):
    """Logs sequences/s and the learning rate every `every_n_steps` optimizer steps.

    The first window of every `fit` (tracing, warm-up) is reported but left out of
    `sequences_per_second`, the run's average. One logger can serve several `fit`
    calls in a row (the phases of a run); `tag`, when set, ends each line (which
    phase is running).

    Args:
        global_batch_size: sequences per batch, all replicas together.
        every_n_steps: logging interval in optimizer steps. Defaults to 100.
        log_dir: TensorBoard folder; None for stdout only. Defaults to None.
        write_summaries: write TensorBoard events (the chief only under a
            multi-worker strategy). Defaults to True.
    """

    def __init__(self, global_batch_size, every_n_steps=100, log_dir=None, write_summaries=True):
        super().__init__()
        self.global_batch_size = global_batch_size
        self.every_n_steps = every_n_steps
        self.log_dir = log_dir
        self.write_summaries = write_summaries
        self._writer = None
        self._window_start = None
        self._window_batches = 0
        self._windows = 0
        self.tag = ""
        self._timed_batches = 0
        self._timed_seconds = 0.0
        self.last = {}
        self.history = []  # one row per logging window: step, rate, learning rate, logs

    @property
    def sequences_per_second(self):
        """Average training sequences/s after the first window (None before)."""
        if not self._timed_seconds:
            return None
        return self._timed_batches * self.global_batch_size / self._timed_seconds

    def on_train_begin(self, logs=None):
        if self.log_dir and self.write_summaries and self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        self._window_start = time.perf_counter()
        self._window_batches = 0
        self._windows = 0

    def on_train_batch_end(self, batch, logs=None):
        self._window_batches += 1
        if not at_update_boundary(self.model):
            return
        step = optimizer_step(self.model)
        if step % self.every_n_steps:
            return
        self._flush_window(step, logs)

    def _flush_window(self, step, logs):
        elapsed = time.perf_counter() - self._window_start
        if self._window_batches == 0 or elapsed <= 0:
            return
        rate = self._window_batches * self.global_batch_size / elapsed
        if self._windows > 0:
            self._timed_batches += self._window_batches
            self._timed_seconds += elapsed
        self._windows += 1
        learning_rate = float(base_optimizer(self.model.optimizer).learning_rate)
        self.last = {"step": step, "sequences_per_second": rate, "learning_rate": learning_rate}
        self.history.append(dict(self.last, **{k: float(v) for k, v in (logs or {}).items()
                                               if _finite(v)}))
        loss = (logs or {}).get("loss")
        print(f"step {step}: {rate:.1f} sequences/s, learning rate {learning_rate:.3e}"
              + (f", loss {float(loss):.4f}" if loss is not None else "")
              + (f" [{self.tag}]" if self.tag else ""), flush=True)
        if self._writer is not None:
            with self._writer.as_default(step=step):
                write_scalar("sequences_per_second", rate)
                write_scalar("learning_rate", learning_rate)
                for key, value in (logs or {}).items():
                    if _finite(value):
                        write_scalar(f"train/{key}", float(value))
            self._writer.flush()
        self._window_start = time.perf_counter()
        self._window_batches = 0

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()


class EpochSummaries(keras.callbacks.Callback):
    """Writes each epoch's logs as TensorBoard scalars, without the tensorboard package.

    The layout is the one of `keras.callbacks.TensorBoard` (which needs the
    tensorboard package, no longer installed with TensorFlow): training values go to
    `log_dir/train`, `val_`-prefixed ones to `log_dir/validation`, both under the tag
    `epoch_<name>`, so TensorBoard draws train and validation on one chart.

    Args:
        log_dir: the TensorBoard folder.

    Example:
        >>> model.fit(x, y, validation_data=(x_dev, y_dev), epochs=3,
        ...           callbacks=[EpochSummaries("logs")])
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self._writers = {}

    def _writer(self, split):
        if split not in self._writers:
            self._writers[split] = tf.summary.create_file_writer(f"{self.log_dir}/{split}")
        return self._writers[split]

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            if not _finite(value):
                continue
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writer(split).as_default(step=epoch):
                write_scalar(f"epoch_{name}", float(value))

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.flush()
