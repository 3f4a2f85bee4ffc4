"""Numerical parity with Hugging Face `BertForPreTraining` on random non-trivial weights.

Golden values come from tests/fixtures/make_parity_golden.py (transformers + torch);
the tests themselves need neither.
"""

import numpy as np
import pytest

from keras_bert import checkpoints, losses
from keras_bert.checkpoints import load_pretrained

TOL = 1e-4


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return dict(np.load(fixtures_dir / "parity" / "golden.npz"))


def _inputs(g, with_positions=True):
    x = {k: g[k].astype("int32") for k in ("input_ids", "segment_ids", "input_mask")}
    if with_positions:
        x["masked_lm_positions"] = g["masked_lm_positions"].astype("int32")
    return x


def _masked(value, mask):
    """Zeroes padded positions: HF and we differ only in what padded tokens hold."""
    return value * mask[..., None]


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
@pytest.mark.parametrize("folder", ["hf", "hf_bin", "original"])
def test_pretraining_outputs_match_hf(golden, fixtures_dir, folder, act):
    bert = load_pretrained(str(fixtures_dir / "parity" / folder), heads="pretraining")
    assert not bert.report.missing and not bert.report.unused, bert.report.summary()
    model = bert.model
    if act != "gelu":
        model = checkpoints.build_model(bert.config.replace(hidden_act=act), "pretraining")
        model.set_weights(bert.model.get_weights())
    out = model(_inputs(golden), training=False)
    enc = model.encoder(_inputs(golden, False), training=False)
    mask = golden["input_mask"].astype("float32")
    np.testing.assert_allclose(_masked(np.asarray(enc["sequence_output"]), mask),
                               _masked(golden[f"{act}/sequence_output"], mask), atol=TOL, rtol=0)
    np.testing.assert_allclose(enc["pooled_output"], golden[f"{act}/pooled_output"], atol=TOL, rtol=0)
    np.testing.assert_allclose(out["mlm_logits"], golden[f"{act}/mlm_logits"], atol=TOL, rtol=0)
    np.testing.assert_allclose(out["nsp_logits"], golden[f"{act}/nsp_logits"], atol=TOL, rtol=0)
    mlm_loss = losses.masked_lm_loss(golden["masked_lm_ids"], out["mlm_logits"],
                                     golden["masked_lm_weights"])
    nsp_loss = losses.next_sentence_loss(golden["next_sentence_labels"], out["nsp_logits"])
    assert abs(float(mlm_loss) - float(golden[f"{act}/mlm_loss"])) < TOL
    assert abs(float(nsp_loss) - float(golden[f"{act}/nsp_loss"])) < TOL


def test_every_hidden_state_matches_hf(golden, fixtures_dir):
    bert = load_pretrained(str(fixtures_dir / "parity" / "hf"))
    encoder = checkpoints.build_model(bert.config, "encoder")
    encoder = type(encoder).from_bert_config(bert.config, output_hidden_states=True)
    encoder.set_weights(bert.model.get_weights())
    hidden = encoder(_inputs(golden, False))["hidden_states"]
    mask = golden["input_mask"].astype("float32")
    assert len(hidden) == golden["gelu/hidden_states"].shape[0]
    for ours, theirs in zip(hidden, golden["gelu/hidden_states"]):
        np.testing.assert_allclose(_masked(np.asarray(ours), mask), _masked(theirs, mask), atol=TOL)


def test_padded_batch_equals_unpadded_runs(golden, fixtures_dir):
    encoder = load_pretrained(str(fixtures_dir / "parity" / "hf")).model
    x = _inputs(golden, False)
    padded = encoder(x)
    for b, n in enumerate(golden["lengths"]):
        single = {k: v[b:b + 1, :n] for k, v in x.items()}
        alone = encoder(single)
        np.testing.assert_allclose(np.asarray(padded["sequence_output"])[b, :n],
                                   np.asarray(alone["sequence_output"])[0], atol=1e-5)
        np.testing.assert_allclose(np.asarray(padded["pooled_output"])[b],
                                   np.asarray(alone["pooled_output"])[0], atol=1e-5)


def test_original_and_hf_checkpoints_give_the_same_outputs(golden, fixtures_dir):
    a = load_pretrained(str(fixtures_dir / "parity" / "hf"), heads="pretraining").model
    b = load_pretrained(str(fixtures_dir / "parity" / "original"), heads="pretraining")
    assert "global_step" in b.report.ignored
    assert any(n.endswith("adam_m") for n in b.report.ignored)
    x = _inputs(golden)
    np.testing.assert_array_equal(np.asarray(a(x)["mlm_logits"]), np.asarray(b.model(x)["mlm_logits"]))
