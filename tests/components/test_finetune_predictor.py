"""`finetune.Predictor`: `model.predict`'s outputs with one trace for every batch shape."""

import keras
import numpy as np
import tensorflow as tf

from components import finetune
from tests.keras_bert.test_training import CountCalls


def _model():
    keras.utils.set_random_seed(2)
    ids = keras.Input((None,), dtype="int32", name="input_ids")
    mask = keras.Input((None,), dtype="int32", name="input_mask")
    counter = CountCalls()
    h = counter(keras.layers.Embedding(20, 8)(ids))
    m = keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    pooled = keras.ops.sum(h * m, axis=1)
    model = keras.Model({"input_ids": ids, "input_mask": mask},
                        {"logits": keras.layers.Dense(3)(pooled)})
    return model, counter


def _dataset(lengths, batch):
    """Batches cut to their longest row, as the trimmed prediction input."""
    def rows():
        for n in lengths:
            yield {"input_ids": np.arange(1, n + 1, dtype="int32") % 20,
                   "input_mask": np.ones(n, "int32")}
    spec = {k: tf.TensorSpec([None], tf.int32) for k in ("input_ids", "input_mask")}
    ds = tf.data.Dataset.from_generator(rows, output_signature=spec)
    return ds.padded_batch(batch)


def test_predictor_matches_model_predict_and_traces_once():
    model, counter = _model()
    predict = finetune.Predictor(model, tf.distribute.get_strategy())
    # Batch lengths 5, 9 and a short last batch: Keras' predict traces three times.
    dev = _dataset([3, 5, 2, 9, 4, 7, 6], batch=3)
    test = _dataset([8, 1, 2], batch=2)
    counter.calls = 0
    ours_dev, ours_test = predict(dev), predict(test)
    assert counter.calls == 1
    assert ours_dev["logits"].shape == (7, 3) and ours_test["logits"].shape == (3, 3)
    for ds, ours in ((dev, ours_dev), (test, ours_test)):
        np.testing.assert_allclose(ours["logits"], model.predict(ds, verbose=0)["logits"],
                                   rtol=1e-6)
