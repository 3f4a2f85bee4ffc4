"""One flag style and one name per concept in every command line of the project.

Builds the parsers of `components.pretrain`, `components.finetune`,
`components.evaluate` and `pipeline.run` (no training) and checks that retired flag
names are refused, that every boolean flag takes `--flag`, `--noflag` and
`--flag=true|false`, and that `--mixed_precision` accepts only its documented values.
The Beam jobs' command lines (and the pipeline's) hand Beam only Beam's options: a
misspelt or retired flag is a usage error.
"""

import argparse

import pytest

from components import cli, evaluate, example_gen, finetune, pretrain, pretraining_data
from components import task_data, vocab
from keras_bert import precision
from pipeline import config as pipeline_config

# name -> (parser factory, the required flags, flags that must not exist any more)
PARSERS = {
    "pretrain": (pretrain.build_parser, ["--train", "t", "--output", "o"],
                 ["--init", "--seed", "--config", "--init_dir", "--no_nsp", "--weight_decay"]),
    "finetune": (finetune.build_parser,
                 ["--task", "ner", "--init_checkpoint", "c", "--output", "o"],
                 ["--init", "--seed", "--weight_decay", "--config"]),
    "evaluate": (evaluate.build_parser,
                 ["--export_dir", "e", "--task", "ner", "--test", "t", "--output", "o"],
                 ["--margin"]),
    "pipeline": (pipeline_config.build_parser, [], ["--init", "--seed", "--weight_decay"]),
}


def _parse(name, argv):
    factory, required, _ = PARSERS[name]
    if name == "pipeline":
        return pipeline_config.parse_flags(argv)[0]
    return factory().parse_args(required + argv)


def _bool_flags(parser):
    return [a.dest for a in parser._actions
            if a.type is cli.parse_bool and a.option_strings == [f"--{a.dest}"]]


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_boolean_flags_take_the_three_forms_and_nothing_else_is_a_switch(name):
    parser = PARSERS[name][0]()
    flags = _bool_flags(parser)
    assert flags, f"{name} has no boolean flag"
    for flag in flags:
        for argv, want in (([f"--{flag}"], True), ([f"--no{flag}"], False),
                           ([f"--{flag}=true"], True), ([f"--{flag}=false"], False),
                           ([f"--{flag}=False"], False), ([f"--{flag}=1"], True)):
            got = getattr(_parse(name, argv), flag)
            assert got is want, (name, argv, got)
    # No other boolean style: every store_true/store_false switch is a --noflag twin.
    for action in parser._actions:
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            assert action.option_strings == [f"--no{action.dest}"], action.option_strings
            assert action.dest in flags


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_a_bad_boolean_value_is_a_usage_error(name, capsys):
    flag = _bool_flags(PARSERS[name][0]())[0]
    with pytest.raises(SystemExit):
        _parse(name, [f"--{flag}=maybe"])
    assert f"--{flag}" in capsys.readouterr().err


@pytest.mark.parametrize("name, retired", [(n, r) for n, p in sorted(PARSERS.items())
                                           for r in p[2]])
def test_retired_flag_names_are_refused(name, retired, capsys):
    # A valid value for each, so only the name can be refused (and no abbreviation
    # of a longer flag, e.g. --weight_decay for --weight_decay_rate, is taken).
    with pytest.raises(SystemExit):
        _parse(name, [f"{retired}=1"] if retired != "--no_nsp" else [retired])
    err = capsys.readouterr().err
    if name == "pipeline":
        assert f"{retired} is now --" in err
    else:
        assert f"unrecognized arguments: {retired}" in err


def test_new_names_and_defaults():
    pt = _parse("pretrain", ["--model", "tiny", "--init_checkpoint", "c", "--random_seed", "3"])
    assert (pt.model, pt.init_checkpoint, pt.random_seed) == ("tiny", "c", 3)
    ft = _parse("finetune", ["--weight_decay_rate", "0.1"])
    assert (ft.init_checkpoint, ft.weight_decay_rate) == ("c", 0.1)
    config = _parse("pipeline", ["--init_checkpoint=c", "--random_seed=4"])
    assert (config.init_checkpoint, config.random_seed) == ("c", 4)
    # One seed default everywhere.
    assert (pretrain.PretrainSpec.random_seed, finetune.FinetuneSpec.random_seed,
            pipeline_config.PipelineConfig.random_seed) == (12345, 12345, 12345)
    assert pretrain.PretrainSpec.weight_decay_rate == finetune.FinetuneSpec.weight_decay_rate


@pytest.mark.parametrize("name", ["pretrain", "finetune", "pipeline"])
def test_mixed_precision_is_one_choice(name, capsys):
    for value in precision.CHOICES:
        assert getattr(_parse(name, ["--mixed_precision", value]), "mixed_precision") == value
    with pytest.raises(SystemExit):
        _parse(name, ["--mixed_precision", "fp8"])
    assert "--mixed_precision" in capsys.readouterr().err
    # A bare --mixed_precision (finetune's old boolean) is not a value.
    with pytest.raises(SystemExit):
        _parse(name, ["--mixed_precision"])


def test_mixed_precision_values_are_validated_once():
    assert precision.dtype_policy("float16") == "mixed_float16"
    assert precision.dtype_policy("bfloat16") == "mixed_bfloat16"
    assert precision.dtype_policy("none") is None
    for value in ("fp8", "float32", True):
        with pytest.raises(ValueError, match="--mixed_precision"):
            precision.dtype_policy(value)
    import keras
    adam = keras.optimizers.Adam()
    assert isinstance(precision.loss_scaled(adam, "float16"), keras.optimizers.LossScaleOptimizer)
    assert precision.loss_scaled(adam, "bfloat16") is adam
    with pytest.raises(ValueError, match="--mixed_precision"):
        pretrain.PretrainSpec(train_pattern="t", output_dir="o", mixed_precision="fp8")
    with pytest.raises(finetune.FinetuneError, match="--mixed_precision"):
        finetune.FinetuneSpec(task="ner", init_checkpoint="c", output_dir="o",
                              task_data_dir="d", mixed_precision="fp8")
    with pytest.raises(pipeline_config.PipelineConfigError, match="--mixed_precision"):
        pipeline_config.PipelineConfig(mixed_precision="fp8")


# The Beam jobs' command lines: (entry point, the required flags, a misspelt flag and
# the flag meant). Each returns or runs before any Beam job when a flag is refused.
BEAM_CLIS = {
    "example_gen": (lambda argv: example_gen.main(argv), ["--input", "in", "--output", "o"],
                    "--num_shard", "--num_shards"),
    "vocab": (lambda argv: vocab.main(argv), ["--input", "in", "--output", "o"],
              "--vocab_sise", "--vocab_size"),
    "pretraining_data": (pretraining_data.parse_args,
                         ["--input", "in", "--vocab", "v", "--output", "o"],
                         "--dupe_factr", "--dupe_factor"),
    "task_data": (task_data.parse_args,
                  ["--task", "ner", "--train", "t", "--vocab", "v", "--output", "o"],
                  "--doc_strid", "--doc_stride"),
    "pipeline": (pipeline_config.parse_flags, [], "--vocab_sise", "--vocab_size"),
}


@pytest.mark.parametrize("name", sorted(BEAM_CLIS))
def test_beam_jobs_refuse_misspelt_flags_instead_of_handing_them_to_beam(name, capsys):
    entry, required, typo, meant = BEAM_CLIS[name]
    with pytest.raises(SystemExit) as exit_info:
        entry(required + ["--runner=DirectRunner", f"{typo}=3", "--direct_num_workers=2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert ("neither this command's flags nor Beam pipeline options: "
            f"{typo} (did you mean {meant}") in err, err
    # A flag of another command of the project is no Beam option either.
    with pytest.raises(SystemExit):
        entry(required + ["--pretrain_steps=3" if name != "pipeline" else "--num_shards=2"])
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(BEAM_CLIS))
def test_beam_jobs_refuse_retired_flag_names(name, capsys):
    entry, required = BEAM_CLIS[name][:2]
    for retired, new in (("--seed=3", "--random_seed"), ("--init_dir=c", "--init_checkpoint")):
        with pytest.raises(SystemExit):
            entry(required + [retired])
        assert f"{retired.split('=')[0]} is now {new}" in capsys.readouterr().err


def test_beam_options_alone_reach_beam():
    beam = ["--runner=DaskRunner", "--dask_npartitions=4", "--direct_num_workers", "2",
            "--temp_location=/tmp/x", "--flink_master=host:8081", "--save_main_session"]
    spec, pipeline_args = task_data.parse_args(BEAM_CLIS["task_data"][1] + beam[:2]
                                               + ["--max_seq_length=32"] + beam[2:])
    assert spec.max_seq_length == 32 and pipeline_args == beam
    spec, pipeline_args = pretraining_data.parse_args(BEAM_CLIS["pretraining_data"][1]
                                                      + ["--random_seed=7"])
    assert spec.random_seed == 7 and pipeline_args == []
    config, beam_args = pipeline_config.parse_flags(["--direct_num_workers=2", "--random_seed=1"])
    assert config.random_seed == 1 and beam_args == ["--direct_num_workers=2"]
