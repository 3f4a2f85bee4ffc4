"""Checkpoint reading/writing: exact round trips, name handling, loud failures."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from keras_bert import checkpoints, convert
from keras_bert.checkpoints import CheckpointError, load_pretrained, save_pretrained
from keras_bert.config import BertConfig


@pytest.fixture(scope="module")
def hf_dir(fixtures_dir):
    return str(fixtures_dir / "parity" / "hf")


def _weights_equal(a, b):
    ta, tb = checkpoints.model_tensors(a), checkpoints.model_tensors(b)
    assert sorted(ta) == sorted(tb)
    for name in ta:
        np.testing.assert_array_equal(ta[name], tb[name], err_msg=name)


@pytest.mark.parametrize("fmt", ["keras", "hf", "original"])
def test_round_trip_is_exact(hf_dir, tmp_path, fmt):
    src = load_pretrained(hf_dir, heads="pretraining")
    out = save_pretrained(src.model, str(tmp_path / fmt), format=fmt, vocab_path=src.vocab_path)
    assert checkpoints.detect_format(out) == fmt
    back = load_pretrained(out, heads="pretraining")
    assert not back.report.missing and not back.report.unused
    assert back.config == src.config
    _weights_equal(src.model, back.model)
    assert open(back.vocab_path).read() == open(src.vocab_path).read()


def test_our_format_remembers_heads(tmp_path):
    config = BertConfig.preset("tiny", vocab_size=64, max_position_embeddings=32)
    model = checkpoints.build_model(config, "classifier", num_classes=3)
    save_pretrained(model, str(tmp_path / "clf"))
    back = load_pretrained(str(tmp_path / "clf"))
    assert back.heads == "classifier" and back.model.num_classes == 3
    _weights_equal(model, back.model)


def test_torch_bin_reads_like_safetensors(fixtures_dir):
    st = checkpoints.read_checkpoint(str(fixtures_dir / "parity" / "hf"))[1]
    pt = checkpoints.read_checkpoint(str(fixtures_dir / "parity" / "hf_bin"))[1]
    assert sorted(st) == sorted(pt)
    for k in st:
        np.testing.assert_array_equal(st[k], pt[k])


def test_hf_names_without_prefix_and_gamma_beta(hf_dir, tmp_path):
    raw = load_file(os.path.join(hf_dir, "model.safetensors"))
    renamed = {}
    for k, v in raw.items():
        if not k.startswith("bert."):
            continue  # an encoder-only (BertModel) checkpoint
        k = k[len("bert."):].replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta")
        renamed[k] = v
    out = tmp_path / "legacy"
    out.mkdir()
    save_file(renamed, str(out / "model.safetensors"))
    shutil.copy(os.path.join(hf_dir, "config.json"), out / "config.json")
    a = load_pretrained(hf_dir).model
    b = load_pretrained(str(out))
    assert not b.report.missing and not b.report.unused
    _weights_equal(a, b.model)


def test_missing_and_unknown_tensors_are_named(hf_dir, tmp_path):
    raw = load_file(os.path.join(hf_dir, "model.safetensors"))
    raw.pop("bert.encoder.layer.1.output.dense.bias")
    raw["bert.encoder.layer.7.surprise.weight"] = np.zeros(3, np.float32)
    out = tmp_path / "broken"
    out.mkdir()
    save_file(raw, str(out / "model.safetensors"))
    shutil.copy(os.path.join(hf_dir, "config.json"), out / "config.json")
    with pytest.raises(CheckpointError, match=r"bert\.encoder\.layer\.1\.output\.dense\.bias"):
        load_pretrained(str(out))
    loose = load_pretrained(str(out), strict=False)
    assert loose.report.missing == ["bert.encoder.layer.1.output.dense.bias"]
    assert "bert.encoder.layer.7.surprise.weight" in loose.report.unused


def test_pretraining_checkpoint_into_classifier_reports_heads(hf_dir):
    bert = load_pretrained(hf_dir, heads="classifier", num_classes=4)
    assert bert.report.missing == ["classifier.weight", "classifier.bias"]
    assert "cls.seq_relationship.weight" in bert.report.unused


def test_shape_mismatch_names_tensor_and_shapes(hf_dir, tmp_path):
    raw = load_file(os.path.join(hf_dir, "model.safetensors"))
    raw["bert.pooler.dense.bias"] = np.zeros(5, np.float32)
    out = tmp_path / "badshape"
    out.mkdir()
    save_file(raw, str(out / "model.safetensors"))
    shutil.copy(os.path.join(hf_dir, "config.json"), out / "config.json")
    with pytest.raises(CheckpointError, match=r"bert\.pooler\.dense\.bias has shape \(5,\)"):
        load_pretrained(str(out))


def test_not_a_checkpoint_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="notes.txt"):
        load_pretrained(str(tmp_path))


def test_casing_comes_from_files_not_path(hf_dir, tmp_path):
    assert load_pretrained(hf_dir).config.do_lower_case is True
    out = tmp_path / "cased_name_but_uncased"
    shutil.copytree(hf_dir, out)
    (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    assert load_pretrained(str(out)).config.do_lower_case is False


def test_tf1_names_round_trip():
    names = ["bert/embeddings/word_embeddings", "bert/embeddings/LayerNorm/gamma",
             "bert/encoder/layer_11/attention/self/query/kernel",
             "bert/encoder/layer_0/output/LayerNorm/beta", "bert/pooler/dense/bias",
             "cls/predictions/output_bias", "cls/seq_relationship/output_weights",
             "cls/predictions/transform/dense/kernel", "output_weights", "cls/squad/output_bias"]
    for name in names:
        canonical, transpose = checkpoints.tf1_to_canonical(name)
        assert checkpoints.canonical_to_tf1(canonical) == (name, transpose)


@pytest.mark.slow
def test_convert_cli(fixtures_dir, tmp_path, capsys):
    src = str(fixtures_dir / "parity" / "original")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # One real `python -m` run; the other cases call the same `main` in this process.
    proc = subprocess.run([sys.executable, "-m", "keras_bert.convert", "--from", src,
                           "--to", str(tmp_path / "hf"), "--format", "hf"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "0 missing" in proc.stdout
    assert convert.main(["--from", src, "--to", str(tmp_path / "keras"), "--format", "keras"]) == 0
    assert "0 missing" in capsys.readouterr().out
    a = load_pretrained(src, heads="pretraining").model
    b = load_pretrained(str(tmp_path / "hf"), heads="pretraining").model
    _weights_equal(a, b)
    _weights_equal(a, load_pretrained(str(tmp_path / "keras"), heads="pretraining").model)
    assert convert.main(["--from", str(tmp_path / "nope"), "--to", str(tmp_path / "x"),
                         "--format", "hf"]) == 2
    assert "not a directory" in capsys.readouterr().err
