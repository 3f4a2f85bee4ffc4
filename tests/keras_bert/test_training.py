"""Callbacks of `keras_bert.training` that need no BERT model."""

import glob

import keras
import numpy as np
import tensorflow as tf

from keras_bert import optimization, training


def _scalars(folder):
    values = {}
    for path in glob.glob(f"{folder}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                values.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor))))
    return values


def test_epoch_summaries_write_train_and_validation_scalars_as_keras_does(tmp_path):
    keras.utils.set_random_seed(3)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(x, y, validation_data=(x[:8], y[:8]), epochs=3, batch_size=8, verbose=0,
                        callbacks=[training.EpochSummaries(str(tmp_path))]).history

    train, validation = _scalars(tmp_path / "train"), _scalars(tmp_path / "validation")
    assert sorted(train) == ["epoch_accuracy", "epoch_loss"]
    assert sorted(validation) == ["epoch_accuracy", "epoch_loss"]
    for name in ("loss", "accuracy"):
        assert [s for s, _ in train[f"epoch_{name}"]] == [0, 1, 2]
        np.testing.assert_allclose([v for _, v in train[f"epoch_{name}"]], history[name], rtol=1e-6)
        np.testing.assert_allclose([v for _, v in validation[f"epoch_{name}"]],
                                   history[f"val_{name}"], rtol=1e-6)


def test_throughput_logger_serves_several_fits_and_names_the_phase(capsys):
    # Two fits in a row (the phases of a two-phase run), 4 steps each, a line every 2:
    # the first window of each fit (tracing) is logged but left out of the average.
    keras.utils.set_random_seed(3)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logger = training.ThroughputLogger(global_batch_size=8, every_n_steps=2)
    for tag in ("phase 1/2", "phase 2/2"):
        logger.tag = tag
        model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False, callbacks=[logger])
    assert [row["step"] for row in logger.history] == [2, 4, 6, 8]
    assert logger._timed_batches == 4  # steps 3-4 and 7-8
    assert logger.sequences_per_second > 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.rsplit("[", 1)[1] for line in lines] == ["phase 1/2]"] * 2 + ["phase 2/2]"] * 2


class CountCalls(keras.layers.Layer):
    """Identity that counts how often its Python `call` runs (once per trace)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def call(self, x):
        self.calls += 1
        return x


def _fit_once(build_first):
    keras.utils.set_random_seed(5)
    x = np.random.default_rng(1).normal(size=(16, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    counter = CountCalls()
    model = keras.Sequential([keras.Input((4,)), counter, keras.layers.Dense(2)])
    model.compile(optimization.create_optimizer("adamw", 1e-2, num_train_steps=2,
                                                num_warmup_steps=0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if build_first:
        training.build_optimizer(model)
    created = []

    def creator(next_creator, **kwargs):
        if not tf.executing_eagerly():
            created.append(kwargs.get("name"))
        return next_creator(**kwargs)

    counter.calls = 0
    with tf.variable_creator_scope(creator):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    return counter.calls, created, [w.numpy() for w in model.weights]


def test_build_optimizer_lets_fit_trace_its_train_step_once():
    # Without it Keras creates Adam's moments inside the first trace of the train
    # step, and TensorFlow traces a function that created variables a second time.
    calls, created, weights = _fit_once(build_first=False)
    assert calls == 2 and any("momentum" in str(name) for name in created)
    calls_built, created_built, weights_built = _fit_once(build_first=True)
    assert calls_built == 1 and created_built == []
    for a, b in zip(weights, weights_built):  # the same training either way
        np.testing.assert_allclose(a, b, rtol=1e-6)
