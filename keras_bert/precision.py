"""Mixed precision: the one `--mixed_precision` choice of every trainer and the pipeline.

Values (`MIXED_PRECISION`, value → Keras dtype policy):

- `none`: float32 throughout.
- `bfloat16`: the "mixed_bfloat16" policy: layers compute in bfloat16 and keep
  float32 weights; no loss scaling (bfloat16 has float32's exponent range).
- `float16`: the "mixed_float16" policy with dynamic loss scaling: the optimizer is
  wrapped in `keras.optimizers.LossScaleOptimizer` (`loss_scaled`), so small
  gradients do not underflow. (Keras wraps it in `compile` only when the outermost
  model carries the policy; our head models get it on their layers, so the trainers
  wrap it themselves.)

This module imports no TensorFlow at import time, so flag parsers can use it cheaply.
"""

FLAG = "--mixed_precision"
MIXED_PRECISION = {"none": None, "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
CHOICES = tuple(MIXED_PRECISION)


def dtype_policy(mixed_precision):
    """The Keras dtype policy name of a `--mixed_precision` value (None for float32).

    Args:
        mixed_precision: one of `CHOICES`.

    Raises:
        ValueError: any other value; the message names the flag.
    """
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"{FLAG} must be one of {', '.join(CHOICES)}; got {mixed_precision!r}")
    return MIXED_PRECISION[mixed_precision]


def loss_scaled(optimizer, mixed_precision):
    """`optimizer` in a dynamic `LossScaleOptimizer` for "float16"; as is otherwise.

    Call it in the distribution strategy's scope, before `model.compile`.

    Args:
        optimizer: a Keras optimizer.
        mixed_precision: one of `CHOICES`.
    """
    if dtype_policy(mixed_precision) != "mixed_float16":
        return optimizer
    import keras
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer)


def add_flag(parser, default="none"):
    """Adds `--mixed_precision {none,bfloat16,float16}` to an argparse parser.

    Args:
        parser: an `argparse.ArgumentParser`.
        default: the value when not given. Defaults to "none".
    """
    parser.add_argument(FLAG, choices=CHOICES, default=default,
                        help="none (float32), bfloat16, or float16 (with loss scaling).")
