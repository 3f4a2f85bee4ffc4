"""Finetune end to end on small synthetic tasks with a tiny BERT (L2/H64).

Every task is learnable from word identity, so a fine-tuned model must beat the
trivial baseline (majority class, train mean, all-O, no answer) by a clear margin;
predicted entity spans and answers must be the exact characters of the input. A
quick MLM pre-training on a topic corpus must make fine-tuning on a few labelled
examples beat random initialization.
"""

import dataclasses
import json
import os
import random

import numpy as np
import pytest

from components import finetune
from keras_bert import checkpoints
from keras_bert import tasks
from keras_bert.config import BertConfig

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FILLER = ("the a man woman dog cat walked ran to from city house saw big small quickly slowly "
          "and then was is on in at with old new red river tree car road day night came went "
          "said found left right over under near far blue").split()
KEYWORDS = "excellent superb wonderful amazing brilliant".split()
COLORS = "crimson violet amber teal".split()
FIRST = "alice bob carol dave erin frank grace heidi ivan judy".split()
LAST = "smith jones brown taylor wilson evans thomas roberts walker wright".split()
CITIES = "paris london berlin madrid rome vienna prague oslo dublin lisbon".split()
ANSWERS = "zebra falcon otter badger heron lynx walrus gecko bison panda".split()
TOPIC_A = "lion tiger horse sheep goat mouse eagle shark whale rabbit wolf bear moose camel deer fox hawk owl seal crab".split()
TOPIC_B = "truck train plane boat bike tram bus ship wagon taxi van jeep ferry yacht canoe sled kayak rocket scooter coach".split()
GLUE = "the a and with near saw of big".split()
EXTRA = ["very", "code", "what", "follows", "?", ".", ",", ":", "!", "-"]
LETTERS = [chr(c) for c in range(97, 123)]


def vocab_tokens():
    words = sorted(set(FILLER + KEYWORDS + COLORS + FIRST + LAST + CITIES + ANSWERS + TOPIC_A
                       + TOPIC_B + GLUE + EXTRA))
    return SPECIALS + words + [l for l in LETTERS if l not in words] + ["##" + l for l in LETTERS]


def tiny_config(vocab_size):
    # No dropout: these tests check learnability within a few epochs, not regularisation.
    return BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=128, max_position_embeddings=64,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def write_random_init(root, name="random"):
    """Writes a randomly initialised tiny encoder folder (and its vocab.txt) under `root`."""
    import keras

    tokens = vocab_tokens()
    (root / "vocab.txt").write_text("\n".join(tokens) + "\n")
    keras.utils.set_random_seed(7)
    encoder = checkpoints.build_model(tiny_config(len(tokens)), "encoder")
    checkpoints.save_pretrained(encoder, str(root / name), vocab_path=str(root / "vocab.txt"))
    return str(root / name)


@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory):
    """A randomly initialised tiny encoder folder with its vocabulary."""
    return write_random_init(tmp_path_factory.mktemp("init"))


def _spec(tmp_path, task, train, dev, init, **kw):
    # A random tiny encoder: 2e-3 with bias-corrected AdamW (the original optimizer
    # took about that effective step at 5e-4 in these short runs).
    defaults = dict(max_seq_length=32, batch_size=16, epochs=6, learning_rate=2e-3,
                    warmup_proportion=0.3, verbose=0, random_seed=1)
    defaults.update(kw)
    return finetune.FinetuneSpec(task=task, train=str(train), dev=str(dev), init_checkpoint=init,
                                 output_dir=str(tmp_path / "out"), **defaults)


def _via_records(spec, folder):
    """Runs TaskData on `spec`'s raw files into `folder`, deletes the raw files, and
    returns the spec that reads TaskData's records instead: training and predictions
    can then only come from the records."""
    finetune.convert_task_files(spec, str(folder))
    for path in (spec.train, spec.dev, spec.test):
        if path:
            os.remove(path)
    return dataclasses.replace(spec, train=None, dev=None, test=None, task_data_dir=str(folder))


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


# --------------------------------------------------------------------------------------
# Synthetic data.


def keyword_examples(n, rng):
    """Label "pos" iff the text holds one of KEYWORDS (capitalised or not)."""
    out = []
    for _ in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(5, 10))]
        label = "pos" if rng.random() < 0.5 else "neg"
        if label == "pos":
            word = rng.choice(KEYWORDS)
            words.insert(rng.randrange(len(words) + 1), word.capitalize() if rng.random() < .3 else word)
        out.append({"text": " ".join(words), "label": label})
    return out


def keyword_side_pairs(n, rng):
    """Label 1 iff the keyword is in the second text (0: in the first): only the
    segment ids tell the two apart."""
    out = []
    for _ in range(n):
        ta = [rng.choice(FILLER) for _ in range(rng.randint(3, 6))]
        tb = [rng.choice(FILLER) for _ in range(rng.randint(3, 6))]
        second = rng.random() < 0.5
        side = tb if second else ta
        side.insert(rng.randrange(len(side) + 1), rng.choice(KEYWORDS))
        out.append((" ".join(ta), " ".join(tb), "1" if second else "0"))
    return out


def very_counts(n, rng):
    """Target = number of "very" in the text (0..3)."""
    out = []
    for _ in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 8))]
        k = rng.randint(0, 3)
        for _ in range(k):
            words.insert(rng.randrange(len(words) + 1), "very")
        out.append((" ".join(words), float(k)))
    return out


def ner_sentences(n, rng, long_share=0.4):
    """(words, IOB1 tags): capitalised first (+ last) names and cities among filler."""
    out = []
    for _ in range(n):
        length = rng.randint(20, 34) if rng.random() < long_share else rng.randint(4, 10)
        words, tags = [], []
        while len(words) < length:
            r = rng.random()
            if r < 0.12:
                words.append(rng.choice(FIRST).capitalize())
                tags.append("I-PER")
                if rng.random() < 0.5:
                    words.append(rng.choice(LAST).capitalize())
                    tags.append("I-PER")
            elif r < 0.2:
                words.append(rng.choice(CITIES).capitalize())
                tags.append("I-LOC")
            else:
                words.append(rng.choice(FILLER))
                tags.append("O")
            if len(words) > 1 and tags[-1] != "O" and tags[-2] == tags[-1] and \
                    (tags[-1] == "I-LOC" or words[-2].lower() in LAST):
                # Two adjacent entities of one type: put filler between them.
                words.insert(-1, "and")
                tags.insert(-1, "O")
        out.append((words, tags))
    return out


def conll_text(sentences, docs=2):
    lines = []
    per_doc = max(1, len(sentences) // docs)
    for i, (words, tags) in enumerate(sentences):
        if i % per_doc == 0:
            lines += ["-DOCSTART- -X- -X- O", ""]
        lines += [f"{w} NN I-NP {t}" for w, t in zip(words, tags)] + [""]
    return "\n".join(lines) + "\n"


def squad_data(n, rng, unanswerable_share=0.0, prefix="q"):
    """Contexts with "code: <Answer>," somewhere; the question asks what follows code.

    The answer words (ANSWERS) appear nowhere else, so a tiny model learns the task in
    a few epochs; unanswerable contexts have neither the cue nor an answer word.
    """
    paragraphs = []
    for i in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(18, 40))]
        impossible = rng.random() < unanswerable_share
        answer = rng.choice(ANSWERS).capitalize()
        at = rng.randrange(1, len(words))
        if not impossible:
            words[at:at] = ["code:", answer + ","]
        context = " ".join(words) + "."
        context = context[0].upper() + context[1:]
        qa = {"id": f"{prefix}{i}", "question": "What follows code?", "answers": []}
        if impossible:
            qa["is_impossible"] = True
        else:
            start = context.index("code: ") + len("code: ")
            qa["answers"] = [{"text": answer, "answer_start": start}]
            qa["is_impossible"] = False
        paragraphs.append({"context": context, "qas": [qa]})
    return {"version": "synthetic", "data": [{"title": "t", "paragraphs": paragraphs}]}


# --------------------------------------------------------------------------------------
# Tests.


@pytest.mark.slow
def test_classification_beats_majority_and_keeps_best(tmp_path, tiny_init):
    rng = random.Random(0)
    train = _jsonl(tmp_path / "train.jsonl", keyword_examples(320, rng))
    dev = _jsonl(tmp_path / "dev.jsonl", keyword_examples(100, rng))
    result = finetune.run(_via_records(_spec(tmp_path, "classification", train, dev, tiny_init,
                                             max_seq_length=24, epochs=5), tmp_path / "records"))
    assert result["labels"] == ["neg", "pos"]
    assert result["dev"]["accuracy"] >= result["baseline"]["accuracy"] + 0.3, result["history"]
    assert result["dev"]["accuracy"] >= 0.9
    out = tmp_path / "out"
    records = _read_jsonl(out / "predictions.jsonl")
    assert len(records) == 100
    for r in records:
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["predicted_label"] == max(r["probabilities"], key=r["probabilities"].get)
    accuracy = np.mean([r["label"] == r["predicted_label"] for r in records])
    assert accuracy == pytest.approx(result["dev"]["accuracy"])
    # The best checkpoint reloads as the same classifier.
    best = checkpoints.load_pretrained(str(out / "best"))
    assert best.heads == "classifier" and (out / "best" / "labels.txt").read_text() == "neg\npos\n"
    tok = best.tokenizer()
    batch = tok.encode_batch([r["text"] for r in records[:8]], max_seq_length=24)
    probs = tasks.softmax(np.asarray(best.model(batch, training=False)["logits"]))
    expected = np.array([[r["probabilities"]["neg"], r["probabilities"]["pos"]] for r in records[:8]])
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_epoch"] == result["best_epoch"] and len(metrics["history"]) == 5


@pytest.mark.slow
def test_pair_from_glue_tsv(tmp_path, tiny_init):
    rng = random.Random(1)

    def write(path, rows):
        lines = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        lines += [f"{label}\t{i}\t{i + 1}\t{a}\t{b}" for i, (a, b, label) in enumerate(rows)]
        path.write_text("\n".join(lines) + "\n")
        return path

    train = write(tmp_path / "train.tsv", keyword_side_pairs(320, rng))
    dev = write(tmp_path / "dev.tsv", keyword_side_pairs(100, rng))
    from components.task_files import ReadOptions

    read = ReadOptions(text_column="#1 String", text_b_column="#2 String", label_column="Quality")
    result = finetune.run(_spec(tmp_path, "pair", train, dev, tiny_init, read=read, epochs=4,
                                max_seq_length=24))
    assert result["dev"]["accuracy"] >= result["baseline"]["accuracy"] + 0.25, result["history"]
    assert "f1" in result["dev"] and "mcc" in result["dev"]
    record = _read_jsonl(tmp_path / "out" / "predictions.jsonl")[0]
    assert record["text_b"] and record["guid"].endswith("dev.tsv:2")


@pytest.mark.slow
def test_regression_from_csv(tmp_path, tiny_init):
    rng = random.Random(2)

    def write(path, rows):
        lines = ["sentence,score"] + [f'"{t}",{y}' for t, y in rows]
        path.write_text("\n".join(lines) + "\n")
        return path

    train = write(tmp_path / "train.csv", very_counts(320, rng))
    dev = write(tmp_path / "dev.csv", very_counts(100, rng))
    from components.task_files import ReadOptions

    read = ReadOptions(text_column="sentence", label_column="score")
    result = finetune.run(_spec(tmp_path, "regression", train, dev, tiny_init, read=read,
                                epochs=6, max_seq_length=16))
    assert result["metric"] == "pearson"
    assert result["dev"]["pearson"] >= 0.8, result["history"]
    assert result["dev"]["mse"] < 0.5 * result["baseline"]["mse"]
    record = _read_jsonl(tmp_path / "out" / "predictions.jsonl")[0]
    assert isinstance(record["prediction"], float)


@pytest.mark.slow
def test_ner_windows_and_character_offsets(tmp_path, tiny_init):
    rng = random.Random(3)
    train = tmp_path / "train.conll"
    train.write_text(conll_text(ner_sentences(300, rng)))
    dev_sentences = ner_sentences(60, rng)
    dev = tmp_path / "dev.conll"
    dev.write_text(conll_text(dev_sentences))
    test_sentences = ner_sentences(40, rng)
    test = tmp_path / "test.conll"
    test.write_text(conll_text(test_sentences))
    from components.task_files import ReadOptions

    result = finetune.run(_via_records(
        _spec(tmp_path, "ner", train, dev, tiny_init, max_seq_length=24, epochs=6,
              read=ReadOptions(tag_scheme="IOB1"), test=str(test)), tmp_path / "records"))
    # The test split is scored once, with the best dev epoch's weights.
    assert result["examples"]["test"] == len(test_sentences)
    assert result["test"]["f1"] >= 0.8 and result["test_baseline"]["f1"] == 0.0
    test_records = _read_jsonl(tmp_path / "out" / "test_predictions.jsonl")
    assert [r["text"] for r in test_records] == [" ".join(w) for w, _ in test_sentences]
    assert result["labels"] == ["O", "B-LOC", "B-PER", "I-PER"]  # IOB1 read as BIO
    assert result["features"]["dev"] > result["examples"]["dev"]  # long sentences: windows
    assert result["baseline"]["f1"] == 0.0
    assert result["dev"]["f1"] >= 0.8, result["history"]
    records = _read_jsonl(tmp_path / "out" / "predictions.jsonl")
    assert len(records) == len(dev_sentences)
    found = 0
    for record, (words, _) in zip(records, dev_sentences):
        assert record["text"] == " ".join(words)
        for entity in record["entities"] + record["gold_entities"]:
            assert record["text"][entity["start"]:entity["end"]] == entity["text"]
            assert entity["text"] == " ".join(words[entity["first_word"]:entity["last_word"] + 1])
        gold = {(e["type"], e["start"], e["end"]) for e in record["gold_entities"]}
        found += len(gold & {(e["type"], e["start"], e["end"]) for e in record["entities"]})
    assert found / sum(len(r["gold_entities"]) for r in records) == pytest.approx(result["dev"]["recall"])


def _check_nbest(context_by_id, nbest):
    for qid, entries in nbest.items():
        context = context_by_id[qid]
        for entry in entries:
            if entry["text"]:
                assert context[entry["start"]:entry["end"]] == entry["text"]
        assert sum(e["probability"] for e in entries) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_squad1_answers_are_exact_context_characters(tmp_path, tiny_init):
    rng = random.Random(4)
    train_data, dev_data = squad_data(300, rng), squad_data(60, rng, prefix="d")
    (tmp_path / "train.json").write_text(json.dumps(train_data))
    (tmp_path / "dev.json").write_text(json.dumps(dev_data))
    result = finetune.run(_spec(tmp_path, "squad1", tmp_path / "train.json", tmp_path / "dev.json",
                                tiny_init, max_seq_length=40, doc_stride=12, max_query_length=8,
                                epochs=3, n_best_size=5, max_answer_length=4))
    assert result["features"]["dev"] > result["examples"]["dev"]  # long contexts: windows
    assert result["baseline"]["exact_match"] == 0.0
    assert result["dev"]["exact_match"] >= 80.0, result["history"]
    out = tmp_path / "out"
    answers = json.loads((out / "predictions.json").read_text())
    gold = {p["qas"][0]["id"]: p["qas"][0]["answers"][0]["text"]
            for p in dev_data["data"][0]["paragraphs"]}
    exact = np.mean([answers[q] == gold[q] for q in gold])  # case kept: "Zebra", not "zebra"
    assert exact * 100 == pytest.approx(result["dev"]["exact_match"])
    contexts = {p["qas"][0]["id"]: p["context"] for p in dev_data["data"][0]["paragraphs"]}
    nbest = json.loads((out / "nbest_predictions.json").read_text())
    assert all(len(v) <= 5 for v in nbest.values())
    _check_nbest(contexts, nbest)


@pytest.mark.slow
def test_squad2_null_threshold_beats_no_answer(tmp_path, tiny_init):
    rng = random.Random(5)
    train_data = squad_data(300, rng, unanswerable_share=0.5)
    dev_data = squad_data(80, rng, unanswerable_share=0.5, prefix="d")
    (tmp_path / "train.json").write_text(json.dumps(train_data))
    (tmp_path / "dev.json").write_text(json.dumps(dev_data))
    test_data = squad_data(30, rng, unanswerable_share=0.5, prefix="t")
    (tmp_path / "test.json").write_text(json.dumps(test_data))
    result = finetune.run(_via_records(
        _spec(tmp_path, "squad2", tmp_path / "train.json", tmp_path / "dev.json", tiny_init,
              max_seq_length=40, doc_stride=12, max_query_length=8, epochs=3, n_best_size=5,
              max_answer_length=4, test=str(tmp_path / "test.json")), tmp_path / "records"))
    baseline = result["baseline"]
    assert baseline["NoAns_f1"] == 100.0 and baseline["HasAns_f1"] == 0.0
    assert result["dev"]["f1"] >= baseline["f1"] + 25.0, result["history"]
    assert result["dev"]["best_f1"] == pytest.approx(result["dev"]["f1"])
    out = tmp_path / "out"
    odds = json.loads((out / "null_odds.json").read_text())
    answers = json.loads((out / "predictions.json").read_text())
    threshold = result["null_score_diff_threshold"]
    nbest = json.loads((out / "nbest_predictions.json").read_text())
    for qid, answer in answers.items():
        best_non_null = next((e["text"] for e in nbest[qid] if e["text"]), "")
        assert answer == ("" if odds[qid] > threshold else best_non_null)
    contexts = {p["qas"][0]["id"]: p["context"] for p in dev_data["data"][0]["paragraphs"]}
    _check_nbest(contexts, nbest)
    # Test answers use dev's threshold; nothing is tuned on test.
    test_odds = json.loads((out / "test_null_odds.json").read_text())
    test_answers = json.loads((out / "test_predictions.json").read_text())
    test_nbest = json.loads((out / "test_nbest_predictions.json").read_text())
    assert sorted(test_answers) == sorted(q["id"] for p in test_data["data"][0]["paragraphs"]
                                          for q in p["qas"])
    for qid, answer in test_answers.items():
        best_non_null = next((e["text"] for e in test_nbest[qid] if e["text"]), "")
        assert answer == ("" if test_odds[qid] > threshold else best_non_null)
    assert result["test"]["f1"] >= result["test_baseline"]["f1"] + 15.0


def _topic_sentence(rng, words):
    out = [rng.choice(words) for _ in range(rng.randint(4, 7))]
    for _ in range(rng.randint(1, 3)):
        out.insert(rng.randrange(len(out) + 1), rng.choice(GLUE))
    return " ".join(out)


def _mlm_pretrain(init, folder, corpus, epochs, seed):
    """A quick masked-LM pre-training of the tiny encoder on `corpus`; saved to `folder`."""
    import keras

    bert = checkpoints.load_pretrained(init, heads="mlm")
    tok = bert.tokenizer()
    enc = tok.encode_batch(corpus, max_seq_length=16)
    ids, mask = enc["input_ids"], enc["input_mask"]
    rng = np.random.default_rng(seed)
    num_predictions = 3
    bert.model.compile(optimizer=keras.optimizers.Adam(2e-3))
    for _ in range(epochs):  # fresh masks every epoch (dynamic masking)
        x = ids.copy()
        positions = np.zeros((len(ids), num_predictions), np.int32)
        labels = np.zeros_like(positions)
        for i in range(len(ids)):
            chosen = np.sort(rng.choice(np.arange(1, mask[i].sum() - 1), num_predictions, replace=False))
            positions[i], labels[i] = chosen, ids[i, chosen]
            x[i, chosen] = tok.mask_id
        bert.model.fit({"input_ids": x, "segment_ids": np.zeros_like(x), "input_mask": mask,
                        "masked_lm_positions": positions},
                       {"masked_lm_ids": labels, "masked_lm_weights": np.ones(labels.shape, "float32")},
                       batch_size=64, epochs=1, verbose=0)
    checkpoints.save_pretrained(bert.model, folder, vocab_path=bert.vocab_path)
    return folder


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # the MLM model has no pooler use
def test_pretrained_weights_learn_faster_than_random(tmp_path, tiny_init):
    """Topic classification from 32 labelled sentences using 4 words per topic; dev
    sentences use only the other 16 words of each topic. MLM pre-training on unlabelled
    sentences of both topics teaches which words go together, so the pre-trained
    encoder generalises at once; the random one can only memorise the 8 train words."""
    rng = random.Random(6)
    seen = 4

    def write(path, n, held_out):
        rows = []
        for i in range(n):
            topic = TOPIC_A if i % 2 == 0 else TOPIC_B
            words = topic[seen:] if held_out else topic[:seen]
            rows.append({"text": _topic_sentence(rng, words), "label": "a" if i % 2 == 0 else "b"})
        return _jsonl(path, rows)

    train, dev = write(tmp_path / "train.jsonl", 32, False), write(tmp_path / "dev.jsonl", 100, True)
    corpus = [_topic_sentence(rng, TOPIC_A if rng.random() < 0.5 else TOPIC_B) for _ in range(1000)]
    pretrained = _mlm_pretrain(tiny_init, str(tmp_path / "mlm"), corpus, epochs=12, seed=0)
    # Both encoders share the vocabulary: TaskData converts the task files once.
    records = tmp_path / "records"
    results = {}
    for name, init in (("random", tiny_init), ("pretrained", pretrained)):
        spec = _spec(tmp_path / name, "classification", train, dev, init, max_seq_length=16,
                     batch_size=8, epochs=4, learning_rate=1e-3, random_seed=3)
        if not records.exists():
            finetune.convert_task_files(spec, str(records))
        results[name] = finetune.run(dataclasses.replace(spec, train=None, dev=None,
                                                         task_data_dir=str(records)))
    random_acc = [h["dev_accuracy"] for h in results["random"]["history"]]
    pre_acc = [h["dev_accuracy"] for h in results["pretrained"]["history"]]
    # Better at every epoch, by a wide margin at the end, and lower train loss early on.
    assert all(p > r for p, r in zip(pre_acc, random_acc)), (pre_acc, random_acc)
    assert results["pretrained"]["dev"]["accuracy"] >= results["random"]["dev"]["accuracy"] + 0.25
    assert results["pretrained"]["history"][1]["loss"] < results["random"]["history"][1]["loss"]
    assert "cls.predictions.bias" in results["pretrained"]["load_report"]  # MLM head unused


def test_cli_early_stopping_and_bad_records(tmp_path, tiny_init):
    rng = random.Random(8)
    rows = keyword_examples(40, rng)
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, "{not json")
    lines.insert(7, json.dumps({"text": "no label here"}))
    lines.insert(9, json.dumps({"text": "odd one", "label": "maybe"}))  # not in train labels
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:20]) + "\n")
    (tmp_path / "dev.jsonl").write_text("\n".join(lines[20:] + lines[9:10]) + "\n")
    # A learning rate of 0 never improves: patience 1 stops after the second epoch.
    finetune.main(["--task", "classification", "--train", str(tmp_path / "train.jsonl"),
                   "--dev", str(tmp_path / "dev.jsonl"), "--init_checkpoint", tiny_init,
                   "--output", str(tmp_path / "out"), "--epochs", "5", "--learning_rate", "0",
                   "--early_stopping_patience", "1", "--max_seq_length", "16",
                   "--batch_size", "8", "--verbose", "0", "--random_seed", "3"])
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["best_epoch"] == 1
    # "maybe" is a label of train (so part of the label set); the dev copy is fine.
    assert metrics["bad_records"] == {"malformed_json": 1, "missing_label": 1}
    locations = metrics["bad_record_locations"]
    assert any(l.startswith(f"[train] {tmp_path / 'train.jsonl'}:4: malformed_json") for l in locations)
    assert any(l.startswith(f"[train] {tmp_path / 'train.jsonl'}:8: missing_label") for l in locations)
    assert metrics["labels"] == ["maybe", "neg", "pos"]


def test_dev_label_outside_the_label_set_is_a_bad_record(tmp_path, tiny_init):
    rng = random.Random(9)
    _jsonl(tmp_path / "train.jsonl", keyword_examples(16, rng))
    _jsonl(tmp_path / "dev.jsonl", keyword_examples(6, rng) + [{"text": "dog", "label": "meh"}])
    result = finetune.run(_spec(tmp_path, "classification", tmp_path / "train.jsonl",
                                tmp_path / "dev.jsonl", tiny_init, epochs=1, max_seq_length=16))
    assert result["bad_records"] == {"unknown_label": 1}
    assert result["bad_record_locations"][0].startswith(f"[dev] {tmp_path / 'dev.jsonl'}:7: unknown_label")
    assert result["examples"]["dev"] == 6


def test_spec_validation():
    with pytest.raises(finetune.FinetuneError, match="task must be one of"):
        finetune.FinetuneSpec(task="nli", train="t", dev="d", init_checkpoint="i", output_dir="o")
    with pytest.raises(finetune.FinetuneError, match="warmup_proportion"):
        finetune.FinetuneSpec(task="pair", train="t", dev="d", init_checkpoint="i", output_dir="o",
                              warmup_proportion=1.5)
    with pytest.raises(finetune.FinetuneError, match="--mixed_precision"):
        finetune.FinetuneSpec(task="pair", train="t", dev="d", init_checkpoint="i",
                              output_dir="o", mixed_precision="fp8")
    spec = finetune.parse_args(["--task", "squad2", "--train", "t", "--dev", "d",
                                "--init_checkpoint", "i", "--output", "o", "--doc_stride", "64",
                                "--mixed_precision", "float16", "--labels", "a,b"])
    assert (spec.doc_stride, spec.mixed_precision, spec.labels) == (64, "float16", ("a", "b"))
    assert (spec.random_seed, spec.weight_decay_rate) == (12345, 0.01)
    assert spec.selection_metric == "f1"


def test_float16_with_loss_scaling_under_a_mirrored_strategy(tmp_path, tiny_init):
    rng = random.Random(10)
    (tmp_path / "train.conll").write_text(conll_text(ner_sentences(32, rng)))
    (tmp_path / "dev.conll").write_text(conll_text(ner_sentences(8, rng)))
    from components.task_files import ReadOptions

    result = finetune.run(_spec(tmp_path, "ner", tmp_path / "train.conll", tmp_path / "dev.conll",
                                tiny_init, epochs=1, max_seq_length=24, mixed_precision="float16",
                                strategy="mirrored", read=ReadOptions(tag_scheme="IOB1")))
    assert result["best_epoch"] == 1 and np.isfinite(result["history"][0]["loss"])
    # float16 trains with dynamic loss scaling, not as bfloat16 or unscaled.
    assert result["optimizer"] == "LossScaleOptimizer"
    assert result["spec"]["mixed_precision"] == "float16"
    best = checkpoints.load_pretrained(result["checkpoint"])
    assert best.heads == "token_classifier" and best.model.dtype_policy.name == "float32"
