"""Convert a BERT checkpoint between formats.

    python -m keras_bert.convert --from DIR --to DIR --format hf|original|keras [--heads H]

The source format (HF, original TF1 or ours) is detected from its files. Every tensor
is accounted for: the report lists loaded, missing and unused tensors by name, and the
command fails when an encoder tensor is missing.
"""

import argparse
import logging
import sys

from keras_bert import checkpoints


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m keras_bert.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, help="checkpoint folder to read")
    parser.add_argument("--to", dest="target", required=True, help="folder to write")
    parser.add_argument("--format", required=True, choices=["hf", "original", "keras"])
    parser.add_argument("--heads", default=None, choices=checkpoints.HEADS,
                        help="model to convert; default: pre-training heads when present")
    parser.add_argument("--num_classes", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    heads = args.heads
    kwargs = {"num_classes": args.num_classes} if args.num_classes else {}
    try:
        if heads is None:
            _, tensors, _, meta, _ = checkpoints.read_checkpoint(args.source)
            if "heads" in meta:
                heads = meta["heads"]
                kwargs = dict(meta.get("head_kwargs", {}))
            elif any(k.startswith("cls.predictions.") for k in tensors):
                heads = "pretraining" if "cls.seq_relationship.weight" in tensors else "mlm"
            elif "qa_outputs.weight" in tensors:
                heads = "span_qa"
            else:
                heads = "encoder"
        bert = checkpoints.load_pretrained(args.source, heads=heads, **kwargs)
        checkpoints.save_pretrained(bert.model, args.target, format=args.format,
                                    vocab_path=bert.vocab_path)
    except (checkpoints.CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{bert.report.summary()}\nwrote {args.format} checkpoint ({heads}) to {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
