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
- `auto`: `bfloat16` on a CPU with bfloat16 instructions (AVX512-BF16 or AMX-BF16,
  read from /proc/cpuinfo), `none` elsewhere (`resolve`). Where those instructions
  exist bfloat16 matmuls run about twice as fast as float32 (more with AMX), and
  fine-tuning reached float32's accuracy within 0.01; without them there is no
  native bfloat16 arithmetic to gain from. GPUs are not probed: `auto` means `none`
  when one is visible.

This module imports no TensorFlow at import time, so flag parsers can use it cheaply.
"""

import os

FLAG = "--mixed_precision"
MIXED_PRECISION = {"none": None, "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
AUTO = "auto"
CHOICES = tuple(MIXED_PRECISION) + (AUTO,)
# CPU flags (as /proc/cpuinfo spells them) of native bfloat16 arithmetic.
BF16_CPU_FLAGS = frozenset(("avx512_bf16", "amx_bf16"))


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags (empty where /proc/cpuinfo does not exist)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _gpu_visible():
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl"))


def resolve(mixed_precision, cpuinfo="/proc/cpuinfo"):
    """(value, reason): `mixed_precision` with `auto` decided for this machine.

    Args:
        mixed_precision: one of `CHOICES`.
        cpuinfo: where the CPU flags are read. Defaults to "/proc/cpuinfo".

    Raises:
        ValueError: an unknown value; the message names the flag.
    """
    if mixed_precision not in CHOICES:
        raise ValueError(f"{FLAG} must be one of {', '.join(CHOICES)}; got {mixed_precision!r}")
    if mixed_precision != AUTO:
        return mixed_precision, "as given"
    if _gpu_visible():
        return "none", "a GPU is visible (auto decides for CPUs only)"
    native = sorted(BF16_CPU_FLAGS & cpu_flags(cpuinfo))
    if native:
        return "bfloat16", f"this CPU has {', '.join(f.upper() for f in native)}"
    return "none", "this CPU has no bfloat16 instructions (AVX512-BF16, AMX-BF16)"


def dtype_policy(mixed_precision):
    """The Keras dtype policy name of a `--mixed_precision` value (None for float32).

    Args:
        mixed_precision: one of `CHOICES`.

    Raises:
        ValueError: any other value; the message names the flag.
    """
    return MIXED_PRECISION[resolve(mixed_precision)[0]]


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
    """Adds `--mixed_precision {none,bfloat16,float16,auto}` to an argparse parser.

    Args:
        parser: an `argparse.ArgumentParser`.
        default: the value when not given. Defaults to "none".
    """
    parser.add_argument(FLAG, choices=CHOICES, default=default,
                        help="none (float32), bfloat16, float16 (with loss scaling), or auto "
                             "(bfloat16 where the CPU has bfloat16 instructions, else none).")
