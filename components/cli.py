"""Command-line helpers shared by the components' and the pipeline's flag parsers.

Boolean flags follow one style everywhere (the absl style of the original BERT
scripts): `--flag` sets it, `--noflag` clears it, and `--flag=true|false` (also
1/0, yes/no, on/off) gives it explicitly.

Commands that run Beam jobs parse their own flags first and hand the rest to Beam's
`PipelineOptions` (`parse_with_beam_args`); only flags that Beam knows get there: a
misspelt or retired flag is a usage error, where Beam would drop it with a warning.
"""

import argparse
import difflib

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


# Flags renamed for one name per concept: the old spelling is an error naming the
# new one, never a flag handed to Beam.
RETIRED_FLAGS = {"init": "init_checkpoint", "init_dir": "init_checkpoint",
                 "encoder_dir": "init_checkpoint", "seed": "random_seed",
                 "weight_decay": "weight_decay_rate"}


def _flag_names(parser):
    return [s for action in parser._actions for s in action.option_strings if s.startswith("--")]


def beam_parser(pipeline_args=()):
    """An argparse parser of every Beam pipeline option (the DaskRunner's too when
    `pipeline_args` mention dask), as `PipelineOptions` builds it."""
    from apache_beam.options.pipeline_options import PipelineOptions

    if any("dask" in arg.lower() for arg in pipeline_args):
        try:  # Registers the DaskRunner's options (--dask_client_address, ...).
            import apache_beam.runners.dask.dask_runner  # noqa: F401
        except ImportError:
            pass
    parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # (as PipelineOptions.get_all_options does)
    return parser


def parse_with_beam_args(parser, argv=None):
    """Parses `parser`'s flags; everything else must be a Beam pipeline option.

    Args:
        parser: the command's `argparse.ArgumentParser` (`allow_abbrev=False`).
        argv: the command line without the program name. Defaults to `sys.argv[1:]`.

    Returns:
        `(args, pipeline_args)`: the parsed namespace and the Beam options, as
        command-line strings, for `PipelineOptions`.

    Raises:
        SystemExit: through `parser.error` (usage and the message on stderr, status
            2) for a retired flag name (the message names today's) and for a flag
            neither the command nor Beam knows (with the closest known names).
    """
    args, rest = parser.parse_known_args(argv)
    flags = [arg for arg in rest if arg.startswith("--")]
    for arg in flags:
        name = arg.split("=", 1)[0][2:]
        if name in RETIRED_FLAGS:
            new = "--" + RETIRED_FLAGS[name]
            parser.error(f"--{name} is now {new}" + (
                "" if new in _flag_names(parser) else ", which this command does not take"))
    if not flags:
        return args, rest
    from components.runners import expand_runner

    beam = beam_parser(rest)
    _, unknown = beam.parse_known_args(expand_runner(rest))
    unknown = [arg.split("=", 1)[0] for arg in unknown if arg.startswith("-")]
    if unknown:
        known = _flag_names(parser) + _flag_names(beam)
        hints = []
        for flag in unknown:
            close = difflib.get_close_matches(flag, known, n=2)
            hints.append(flag + (f" (did you mean {' or '.join(close)}?)" if close else ""))
        parser.error("unrecognized arguments, neither this command's flags nor Beam "
                     f"pipeline options: {', '.join(hints)}")
    return args, rest
