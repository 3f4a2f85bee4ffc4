"""Vocab: learn a WordPiece vocabulary from documents, or adopt a given vocab.txt.

Learning: Beam counts the words of the documents (BERT's basic tokenization: text
cleaning, optional lower-casing and accent stripping, splitting on whitespace,
punctuation and CJK characters), then one worker runs a WordPiece learner on the
word counts: `keras_bert.vocab_learner.learn_wordpiece_vocab` (tensorflow-text's
learner). The vocabulary starts with `[PAD] [UNK] [CLS] [SEP] [MASK]` (ids 0 to 4).

Copying: `vocab_file` is validated (it must contain the five special tokens, each
once, and no empty line) and copied.

Either way the result is `<output_dir>/vocab.txt`, one token per line, id = line.

Example:
    python -m components.vocab --input 'out/docs/documents-*' --output out/vocab --vocab_size 8000
"""

import argparse
import collections
import dataclasses
import functools
import logging

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from components import cli, common, example_gen, runners
from keras_bert import features as F
from keras_bert.tokenizer import basic_tokenize
from keras_bert.vocab_learner import learn_wordpiece_vocab

STAGE = "vocab"
logger = logging.getLogger(__name__)


class VocabError(ValueError):
    """A vocabulary file is unusable (missing special tokens, duplicates, empty lines)."""


@dataclasses.dataclass(frozen=True)
class VocabSpec:
    """The Vocab stage.

    Attributes:
        output_dir: where `vocab.txt` goes.
        input_pattern: documents (or any corpus `example_gen` reads) to learn from.
            Defaults to None (then `vocab_file` is required).
        vocab_file: an existing vocab.txt to copy instead of learning. Defaults to None.
        vocab_size: the learnt vocabulary's maximum size. Defaults to 30522.
        do_lower_case: lower-case and strip accents before counting. Defaults to True.
        min_word_count: rarer words are not passed to the learner. Defaults to 1.
        lower_thresh: the learner's lowest piece-count threshold; lower it for
            small corpora, which otherwise give fewer than `vocab_size` tokens.
            Defaults to 10.
        read: `example_gen.ReadOptions` for the input. Defaults to ReadOptions().
    """

    output_dir: str
    input_pattern: str = None
    vocab_file: str = None
    vocab_size: int = 30522
    do_lower_case: bool = True
    min_word_count: int = 1
    lower_thresh: int = 10
    read: example_gen.ReadOptions = example_gen.ReadOptions()

    def __post_init__(self):
        if (self.input_pattern is None) == (self.vocab_file is None):
            raise VocabError("give exactly one of input_pattern (to learn) and vocab_file (to copy)")
        if self.vocab_size <= len(F.SPECIAL_TOKENS):
            raise VocabError(f"vocab_size must exceed {len(F.SPECIAL_TOKENS)}; got {self.vocab_size}")

    @property
    def vocab_path(self):
        return FileSystems.join(self.output_dir, "vocab.txt")


# --- pure logic ------------------------------------------------------------------


def word_splitter(do_lower_case=True):
    """BERT's basic tokenization (the words WordPiece then splits), as a function of text.

    It is `keras_bert.tokenizer.basic_tokenize`, so the words counted here are
    exactly the words the tokenizer will piece.

    Example:
        >>> word_splitter()("Héllo, World!")
        ['hello', ',', 'world', '!']
    """
    return functools.partial(basic_tokenize, do_lower_case=do_lower_case)


def document_words(document, do_lower_case):
    """The words of a document dict, as the tokenizer splits them."""
    for sentence in document["sentences"]:
        yield from basic_tokenize(sentence, do_lower_case)


def document_word_counts(document, do_lower_case):
    """`(word, count)` for each distinct word of a document.

    Counting within the document first sends fewer pairs through the shuffle, also on
    runners that don't combine before a GroupByKey (the DaskRunner).
    """
    return collections.Counter(document_words(document, do_lower_case)).items()


def validate_vocab(tokens, source):
    """Checks a vocabulary given as its tokens in id order.

    Raises:
        VocabError: naming `source`, when a special token is missing or repeated, a
            line is empty, or a token repeats.
    """
    for line, token in enumerate(tokens, start=1):
        if not token:
            raise VocabError(f"{source}: line {line} is empty; expected one token per line")
    missing = [t for t in F.SPECIAL_TOKENS if t not in tokens]
    if missing:
        raise VocabError(f"{source}: missing special tokens {missing}; a BERT vocabulary needs {list(F.SPECIAL_TOKENS)}")
    seen = {}
    for line, token in enumerate(tokens, start=1):
        if token in seen:
            raise VocabError(f"{source}: token {token!r} on lines {seen[token]} and {line}")
        seen[token] = line


def learn_vocab(word_counts, vocab_size, do_lower_case=True, lower_thresh=10):
    """Learns a WordPiece vocabulary with `keras_bert.vocab_learner`; special tokens first.

    Args:
        word_counts: iterable of `(word, count)`, in any order.
        vocab_size: the maximum size.
        do_lower_case: as the tokenizer that will use it. Defaults to True.
        lower_thresh: the lowest piece count the learner tries; lower it for small
            corpora. Defaults to 10.

    Returns:
        list of tokens, id order.
    """
    word_counts = sorted(word_counts, key=lambda wc: (-wc[1], wc[0]))  # Order-independent result.
    vocab = learn_wordpiece_vocab(
        word_counts, vocab_size, do_lower_case=do_lower_case, lower_thresh=lower_thresh
    )
    validate_vocab(vocab, "the learnt vocabulary")
    return vocab


def read_vocab_tokens(path):
    """The tokens of a vocab.txt (any Beam filesystem), in id order."""
    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
        text = handle.read().decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]


def write_vocab_tokens(tokens, path):
    with runners.create_atomically(path, mime_type="text/plain") as handle:
        handle.write(("\n".join(tokens) + "\n").encode("utf-8"))
    return path


# --- Beam ------------------------------------------------------------------------


def build(pipeline, spec):
    """Adds the word-count and learning steps; returns a PCollection of the vocab path."""
    read = example_gen.ReadCorpus(spec.input_pattern, spec.read)
    common.log_stage(STAGE, f"ReadCorpus: {read.num_files} file(s) from {spec.input_pattern}")
    documents = (pipeline | "ReadCorpus" >> read).documents
    common.log_stage(STAGE, f"CountWords: lower_case={spec.do_lower_case}, min_count={spec.min_word_count}")
    counts = (
        documents
        | "SplitWords" >> beam.FlatMap(document_word_counts, spec.do_lower_case)
        | "CountWords" >> beam.CombinePerKey(sum)
        | "DropRareWords" >> beam.Filter(lambda wc, n: wc[1] >= n, spec.min_word_count)
    )
    common.log_stage(STAGE, f"LearnWordPiece: vocab_size={spec.vocab_size} -> {spec.vocab_path}")
    # No word, no element: `run` then reports the empty corpus.
    return (
        runners.gather(counts, "GatherCounts")
        | "LearnWordPiece"
        >> beam.Map(learn_vocab, spec.vocab_size, spec.do_lower_case, spec.lower_thresh)
        | "WriteVocab" >> beam.Map(write_vocab_tokens, spec.vocab_path)
    )


def run(spec, pipeline_args=None):
    """Learns or copies the vocabulary; returns the path of the written vocab.txt.

    Args:
        spec: a `VocabSpec`.
        pipeline_args: Beam options as command-line strings (learning only).
    """
    if spec.vocab_file is not None:
        tokens = read_vocab_tokens(spec.vocab_file)
        validate_vocab(tokens, spec.vocab_file)
        write_vocab_tokens(tokens, spec.vocab_path)
        common.log_stage(STAGE, f"copied {len(tokens)} tokens from {spec.vocab_file} -> {spec.vocab_path}")
        return spec.vocab_path
    if FileSystems.exists(spec.vocab_path):  # So that a stale file can't pass for a result.
        FileSystems.delete([spec.vocab_path])
    with runners.pipeline(pipeline_args) as pipeline:
        build(pipeline, spec)
    if not FileSystems.exists(spec.vocab_path):
        raise VocabError(f"{spec.input_pattern}: no words to learn a vocabulary from")
    tokens = read_vocab_tokens(spec.vocab_path)
    validate_vocab(tokens, spec.vocab_path)
    common.log_stage(STAGE, f"done: learnt {len(tokens)} tokens -> {spec.vocab_path}")
    return spec.vocab_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--input", help="Documents or corpus glob to learn from.")
    parser.add_argument("--vocab_file", help="Existing vocab.txt to copy instead.")
    parser.add_argument("--output", required=True, help="Output directory.")
    parser.add_argument("--vocab_size", type=int, default=30522)
    parser.add_argument("--min_word_count", type=int, default=1)
    parser.add_argument("--lower_thresh", type=int, default=10)
    cli.add_bool_flag(parser, "do_lower_case", True, "Uncased tokenization.")
    example_gen.add_read_arguments(parser)
    args, pipeline_args = parser.parse_known_args(argv)
    spec = VocabSpec(
        output_dir=args.output,
        input_pattern=args.input,
        vocab_file=args.vocab_file,
        vocab_size=args.vocab_size,
        do_lower_case=args.do_lower_case,
        min_word_count=args.min_word_count,
        lower_thresh=args.lower_thresh,
        read=example_gen.read_options_from_args(args),
    )
    run(spec, pipeline_args)


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    main()
