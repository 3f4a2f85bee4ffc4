"""Vocab: learn a WordPiece vocabulary from documents, or adopt a given vocab.txt.

Learning: Beam counts the words of the documents (BERT's basic tokenization: text
cleaning, optional lower-casing and accent stripping, splitting on whitespace,
punctuation and CJK characters), then one worker runs a WordPiece learner on the
word counts: `keras_bert.vocab_learner.learn_wordpiece_vocab` (tensorflow-text's
learner). The vocabulary starts with `[PAD] [UNK] [CLS] [SEP] [MASK]` (ids 0 to 4)
and has exactly `vocab_size` tokens. A corpus with too few distinct words for that
size stops the stage with an error that says the largest size it gives; that
largest vocabulary is left in `<output_dir>/largest_vocab.txt` (and no `vocab.txt`).

Copying: `vocab_file` is read by the rules of `keras_bert.tokenizer.load_vocab` (it
must contain the five special tokens, each once, and no empty line) and copied.

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
from keras_bert.tokenizer import VocabularyError, basic_tokenize, parse_vocab
from keras_bert.vocab_learner import VocabSizeError, learn_wordpiece_vocab

STAGE = "vocab"
logger = logging.getLogger(__name__)


# No vocabulary: nothing to learn from, too few distinct words, a bad spec, or a
# given file that is unusable (not UTF-8, a special token missing, a token twice, an
# empty line). One error type with the vocabulary reader's.
VocabError = VocabularyError


@dataclasses.dataclass(frozen=True)
class VocabSpec:
    """The Vocab stage.

    Attributes:
        output_dir: where `vocab.txt` goes.
        input_pattern: documents (or any corpus `example_gen` reads) to learn from.
            Defaults to None (then `vocab_file` is required).
        vocab_file: an existing vocab.txt to copy instead of learning. Defaults to None.
        vocab_size: the learnt vocabulary's size. Defaults to 30522.
        do_lower_case: lower-case and strip accents before counting. Defaults to True.
        min_word_count: rarer words are not passed to the learner. Defaults to 1.
        lower_thresh: the lowest count of a learnt piece; above 1 it refuses
            rare pieces (and may then not reach `vocab_size`). Defaults to 1.
        read: `example_gen.ReadOptions` for the input. Defaults to ReadOptions().
    """

    output_dir: str
    input_pattern: str = None
    vocab_file: str = None
    vocab_size: int = 30522
    do_lower_case: bool = True
    min_word_count: int = 1
    lower_thresh: int = 1
    read: example_gen.ReadOptions = example_gen.ReadOptions()

    def __post_init__(self):
        if (self.input_pattern is None) == (self.vocab_file is None):
            raise VocabError("give exactly one of input_pattern (to learn) and vocab_file (to copy)")
        if self.vocab_size <= len(F.SPECIAL_TOKENS):
            raise VocabError(f"vocab_size must exceed {len(F.SPECIAL_TOKENS)}; got {self.vocab_size}")

    @property
    def vocab_path(self):
        return FileSystems.join(self.output_dir, "vocab.txt")

    @property
    def largest_vocab_path(self):
        """Where the largest vocabulary goes when the corpus can't give `vocab_size`."""
        return FileSystems.join(self.output_dir, "largest_vocab.txt")

    @property
    def shortfall_path(self):
        return FileSystems.join(self.output_dir, "vocab_shortfall.json")


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


def learn_vocab(word_counts, vocab_size, do_lower_case=True, lower_thresh=1):
    """Learns a WordPiece vocabulary with `keras_bert.vocab_learner`; special tokens first.

    Args:
        word_counts: iterable of `(word, count)`, in any order.
        vocab_size: the vocabulary's size.
        do_lower_case: as the tokenizer that will use it. Defaults to True.
        lower_thresh: the lowest count of a learnt piece. Defaults to 1.

    Returns:
        list of `vocab_size` tokens, id order.

    Raises:
        keras_bert.vocab_learner.VocabSizeError: the words can't give `vocab_size`
            tokens (it carries the largest vocabulary they give).
    """
    word_counts = sorted(word_counts, key=lambda wc: (-wc[1], wc[0]))  # Order-independent result.
    return learn_wordpiece_vocab(
        word_counts, vocab_size, do_lower_case=do_lower_case, lower_thresh=lower_thresh
    )


def read_vocab_tokens(path):
    """The tokens of a vocab.txt on any Beam filesystem, in id order (checked as
    `keras_bert.tokenizer.load_vocab` checks them)."""
    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
        return parse_vocab(handle.read(), path)


def write_vocab_tokens(tokens, path):
    """Writes `vocab.txt` (one token per line) on any Beam filesystem; returns `path`.

    Written under a hidden name and renamed when complete: a full disk leaves no
    half vocabulary behind."""
    with runners.create_atomically(path, mime_type="text/plain") as handle:
        handle.write("".join(token + "\n" for token in tokens).encode("utf-8"))
    return path


def learn_and_write(word_counts, spec):
    """Learns the vocabulary of `spec` and writes it; returns the path written.

    When the words can't give `spec.vocab_size` tokens, the largest vocabulary they
    give goes to `spec.largest_vocab_path` and the reason to `spec.shortfall_path`
    (an exception raised inside a Beam step would reach the caller reworded, or not
    at all, depending on the runner), and `run` raises.
    """
    try:
        tokens = learn_vocab(word_counts, spec.vocab_size, spec.do_lower_case, spec.lower_thresh)
    except VocabSizeError as e:
        write_vocab_tokens(e.vocab, spec.largest_vocab_path)
        runners.write_json({"reason": str(e), "vocab_size": spec.vocab_size,
                            "largest_vocab_size": len(e.vocab),
                            "distinct_words": e.distinct_words}, spec.shortfall_path)
        return spec.largest_vocab_path
    return write_vocab_tokens(tokens, spec.vocab_path)


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
        >> beam.Map(learn_and_write, spec)
    )


def run(spec, pipeline_args=None):
    """Learns or copies the vocabulary; returns the path of the written vocab.txt.

    Args:
        spec: a `VocabSpec`.
        pipeline_args: Beam options as command-line strings (learning only).

    Raises:
        VocabError: no words to learn from, or too few distinct words for
            `spec.vocab_size` tokens (the message says how many the corpus gives).
            Also: `spec.vocab_file` is unusable.
    """
    if spec.vocab_file is not None:
        tokens = read_vocab_tokens(spec.vocab_file)
        write_vocab_tokens(tokens, spec.vocab_path)
        common.log_stage(STAGE, f"copied {len(tokens)} tokens from {spec.vocab_file} -> {spec.vocab_path}")
        return spec.vocab_path
    # So that a stale file can't pass for a result.
    stale = [p for p in (spec.vocab_path, spec.largest_vocab_path, spec.shortfall_path)
             if FileSystems.exists(p)]
    if stale:
        FileSystems.delete(stale)
    with runners.pipeline(pipeline_args) as pipeline:
        build(pipeline, spec)
    if FileSystems.exists(spec.shortfall_path):
        shortfall = runners.read_json(spec.shortfall_path)
        raise VocabError(
            f"{spec.input_pattern}: {shortfall['reason']}. The largest vocabulary this corpus "
            f"gives ({shortfall['largest_vocab_size']} tokens) is in {spec.largest_vocab_path}; "
            f"ask for --vocab_size {shortfall['largest_vocab_size']} or less, or learn from a "
            "larger corpus")
    if not FileSystems.exists(spec.vocab_path):
        raise VocabError(f"{spec.input_pattern}: no words to learn a vocabulary from")
    tokens = read_vocab_tokens(spec.vocab_path)
    common.log_stage(STAGE, f"done: learnt {len(tokens)} tokens -> {spec.vocab_path}")
    return spec.vocab_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--input", help="Documents or corpus glob to learn from.")
    parser.add_argument("--vocab_file", help="Existing vocab.txt to copy instead.")
    parser.add_argument("--output", required=True, help="Output directory.")
    parser.add_argument("--vocab_size", type=int, default=30522)
    parser.add_argument("--min_word_count", type=int, default=1)
    parser.add_argument("--lower_thresh", type=int, default=1,
                        help="The lowest count of a learnt piece.")
    cli.add_bool_flag(parser, "do_lower_case", True, "Uncased tokenization.")
    example_gen.add_read_arguments(parser)
    args, pipeline_args = cli.parse_with_beam_args(parser, argv)
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
