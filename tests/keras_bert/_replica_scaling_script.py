"""Helper run in a subprocess by test_encoder: two logical CPUs must be set before TF starts."""
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np, keras
from keras_bert.config import BertConfig
from keras_bert.encoder import BertEncoder
from keras_bert.heads import BertPretrainingModel
def step(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        m = BertPretrainingModel(BertEncoder.from_bert_config(BertConfig.preset("tiny", vocab_size=50, max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)))
        m.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [w.numpy().copy() for w in m.weights]
    rng = np.random.default_rng(0); ids = rng.integers(5, 50, (8, 8)).astype("int32")
    x = {"input_ids": ids, "segment_ids": np.zeros_like(ids), "input_mask": np.ones_like(ids), "masked_lm_positions": np.tile([1, 2], (8, 1)).astype("int32")}
    y = {"masked_lm_ids": ids[:, 1:3], "masked_lm_weights": np.ones((8, 2), "float32"), "next_sentence_labels": np.zeros((8, 1), "int32")}
    m.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    return sum(float(np.abs(w.numpy() - b).sum()) for w, b in zip(m.weights, before))
a = step(tf.distribute.get_strategy()); b = step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print("ratio mirrored/default update size:", b / a)
