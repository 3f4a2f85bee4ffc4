"""Command-line helpers shared by the components' and the pipeline's flag parsers.

Boolean flags follow one style everywhere (the absl style of the original BERT
scripts): `--flag` sets it, `--noflag` clears it, and `--flag=true|false` (also
1/0, yes/no, on/off) gives it explicitly.
"""

import argparse

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def parse_bool(text):
    """"true"/"false" (and 1/0, yes/no, on/off, any case) → bool.

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    value = str(text).strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_bool_flag(parser, name, default, help=None):
    """Adds `--name`, `--noname` and `--name=true|false` to `parser`.

    Args:
        parser: an `argparse.ArgumentParser` (or argument group).
        name: the flag (and destination) name, without dashes.
        default: value when neither form is given; None leaves "not given"
            distinguishable (e.g. for a config file underneath).
        help: help text. Defaults to None.
    """
    shown = f" (default: {default})" if default is not None else ""
    parser.add_argument(f"--{name}", dest=name, type=parse_bool, nargs="?", const=True,
                        default=default, metavar="true|false",
                        help=(help or "") + shown)
    parser.add_argument(f"--no{name}", dest=name, action="store_false",
                        help=f"Same as --{name}=false.")
