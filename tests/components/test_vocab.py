"""Vocab: a WordPiece vocabulary learnt by Beam from documents, or a validated copy."""

import dataclasses
import os

import pydoc_data.topics
import pytest

from components import vocab
from keras_bert import features as F
from keras_bert.tokenizer import BertTokenizer


def test_learns_a_vocabulary_that_covers_its_corpus(tmp_path):
    names = sorted(pydoc_data.topics.topics)[:15]
    text = "\n\n".join(pydoc_data.topics.topics[n].strip() for n in names)
    (tmp_path / "corpus.txt").write_text(text)
    spec = vocab.VocabSpec(output_dir=str(tmp_path / "out"), input_pattern=str(tmp_path / "corpus.txt"), vocab_size=300)
    path = vocab.run(spec)
    tokens = vocab.read_vocab_tokens(path)
    assert tokens[:5] == list(F.SPECIAL_TOKENS)
    assert len(tokens) == len(set(tokens)) == 300
    assert sum(t.startswith("##") for t in tokens) > 30
    tokenizer = BertTokenizer.from_vocab(path)
    pieces = [p for line in text.splitlines() for p in tokenizer.tokenize(line)]
    assert pieces.count(F.UNK_TOKEN) / len(pieces) < 0.005


def test_a_corpus_with_too_few_words_stops_and_says_what_it_gives(tmp_path):
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()
    (tmp_path / "corpus.txt").write_text("\n".join(" ".join(words[i:] + words[:i]) + "."
                                                   for i in range(len(words))))
    spec = vocab.VocabSpec(output_dir=str(tmp_path / "out"),
                           input_pattern=str(tmp_path / "corpus.txt"), vocab_size=500)
    with pytest.raises(vocab.VocabError, match=r"too few distinct words for a vocabulary of 500 "
                       r"tokens: 12 distinct words give at most (\d+) tokens.*largest_vocab\.txt; "
                       r"ask for --vocab_size \1 or less") as error:
        vocab.run(spec)
    assert not os.path.exists(spec.vocab_path)
    largest = vocab.read_vocab_tokens(spec.largest_vocab_path)
    assert f"at most {len(largest)} tokens" in str(error.value)
    assert largest[:5] == list(F.SPECIAL_TOKENS) and {"alpha", "lambda", "."} <= set(largest)
    # Asked for what it gives, the stage delivers it (and clears the earlier shortfall).
    done = vocab.run(dataclasses.replace(spec, vocab_size=len(largest)))
    assert vocab.read_vocab_tokens(done) == largest
    assert not os.path.exists(spec.largest_vocab_path)


def test_word_splitter_is_the_tokenizers_basic_tokenization():
    assert vocab.word_splitter()("Héllo, World!") == ["hello", ",", "world", "!"]
    assert vocab.word_splitter(do_lower_case=False)("Héllo") == ["Héllo"]


def test_copies_a_valid_vocabulary_and_rejects_broken_ones(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("\n".join(list(F.SPECIAL_TOKENS) + ["a", "##b"]) + "\n")
    path = vocab.run(vocab.VocabSpec(output_dir=str(tmp_path / "out"), vocab_file=str(good)))
    assert open(path).read() == good.read_text()

    missing = tmp_path / "missing.txt"
    missing.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n")
    with pytest.raises(vocab.VocabError, match=r"missing\.txt.*\[MASK\]"):
        vocab.run(vocab.VocabSpec(output_dir=str(tmp_path / "o2"), vocab_file=str(missing)))
    duplicated = tmp_path / "dup.txt"
    duplicated.write_text("\n".join(list(F.SPECIAL_TOKENS) + ["a", "a"]) + "\n")
    with pytest.raises(vocab.VocabError, match=r"dup\.txt.*'a' on line 7 already appears on line 6"):
        vocab.run(vocab.VocabSpec(output_dir=str(tmp_path / "o3"), vocab_file=str(duplicated)))
    assert not os.path.exists(tmp_path / "o2" / "vocab.txt")
    with pytest.raises(vocab.VocabError, match="exactly one"):
        vocab.VocabSpec(output_dir="o")
