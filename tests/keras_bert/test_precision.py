"""`--mixed_precision auto`: bfloat16 exactly where the CPU has bfloat16 instructions."""

import pytest

from keras_bert import precision

FLAGS = "fpu vme sse sse2 avx2 fma avx512f avx512bw"


def _cpuinfo(tmp_path, extra):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {FLAGS} {extra}\n\n")
    return str(path)


@pytest.mark.parametrize("extra, chosen", [
    ("avx512_bf16 avx512_vnni", "bfloat16"),
    ("amx_bf16 amx_tile", "bfloat16"),
    ("avx512_vnni", "none"),
    ("", "none"),
])
def test_auto_follows_the_cpu_flags(tmp_path, monkeypatch, extra, chosen):
    monkeypatch.setattr(precision, "_gpu_visible", lambda: False)
    value, reason = precision.resolve("auto", cpuinfo=_cpuinfo(tmp_path, extra))
    assert value == chosen
    assert ("AVX512_BF16" in reason or "AMX_BF16" in reason) == (chosen == "bfloat16")


def test_auto_is_float32_without_cpuinfo_or_with_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "_gpu_visible", lambda: False)
    assert precision.resolve("auto", cpuinfo=str(tmp_path / "missing"))[0] == "none"
    monkeypatch.setattr(precision, "_gpu_visible", lambda: True)
    assert precision.resolve("auto", cpuinfo=_cpuinfo(tmp_path, "avx512_bf16"))[0] == "none"


def test_given_values_pass_through_and_unknown_ones_name_the_flag():
    assert precision.resolve("float16") == ("float16", "as given")
    assert precision.dtype_policy("none") is None
    assert precision.dtype_policy("bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="--mixed_precision must be one of .*auto"):
        precision.resolve("fp8")
    # `auto` always names a policy of this machine (None or mixed_bfloat16).
    assert precision.dtype_policy("auto") in (None, "mixed_bfloat16")
