"""Reduced precision for the feature networks: which CPUs have native bf16, and the measured choice.

The default precision is fp32 on every device, so that the same command gives the same features on
every machine. ``bf16``/``fp16`` are used only when asked; ``auto`` is decided by measurement,
never by the flag alone: :func:`probe_precision` runs
the network on a few seeded random inputs in fp32 and in the reduced precision (autocast, the model
in channels-last), and :func:`choose_precision` keeps the reduced one only when

- the hardware has it natively (CPU: ``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``; CUDA:
  always for fp16, bf16 where ``torch.cuda.is_bf16_supported()``),
- its relative error against fp32 (``||y - y32|| / ||y32||`` over the outputs) is at most
  :data:`ERROR_BOUND`, and
- it is at least :data:`MIN_SPEEDUP` times faster than fp32 on this machine, in every one of the
  alternating timing pairs.

A CPU with ``avx512_bf16`` but no AMX (Sapphire/Emerald Rapids in a VM that hides AMX) runs bf16
dot products on one port, no faster than fp32 FMAs on two, plus conversions: there bf16 is measured
slower and ``auto`` stays fp32. The probe's figures go into the store metadata and the bench.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "bf16", "fp16")
#: Largest relative L2 error of the outputs against fp32 that ``auto`` accepts.
ERROR_BOUND = 2e-2
#: Smallest measured speed-up over fp32 that makes ``auto`` take the reduced precision.
MIN_SPEEDUP = 1.1
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (empty where /proc/cpuinfo is not readable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16_cpu() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX) and torch's oneDNN can use it."""
    if not set(CPU_BF16_FLAGS) & cpu_flags():
        return False
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def native(device: Any, precision: str) -> bool:
    """Does ``device`` run ``precision`` natively?"""
    import torch

    dev = torch.device(device)
    if precision == "fp32":
        return True
    if dev.type == "cuda":
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    return dev.type == "cpu" and precision == "bf16" and native_bf16_cpu()


def check_precision(device: Any, precision: str) -> None:
    """Refuse a precision the device cannot run natively (a ``ValueError`` naming why)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not one of {PRECISIONS}")
    if not native(device, precision):
        why = (
            f"this CPU has none of {', '.join(CPU_BF16_FLAGS)}"
            if precision == "bf16"
            else "fp16 needs a CUDA device"
        )
        raise ValueError(f"precision {precision} on {device}: {why}; use fp32 (or auto)")


def autocast(device: Any, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    dev = torch.device(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=dtype)


def relative_error(y: Any, reference: Any) -> float:
    """``||y - reference|| / ||reference||`` in float64."""
    y, reference = y.double(), reference.double()
    return float((y - reference).norm() / reference.norm().clamp_min(1e-30))


def _once(fn: Callable[[], Any], cuda: bool) -> tuple[float, Any]:
    import torch

    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def probe_precision(
    run: Callable[[Any], Any], inputs: Any, device: Any, precision: str, repeats: int = 3
) -> dict[str, Any]:
    """Time ``run(inputs)`` in fp32 and in ``precision`` and measure the error.

    After one warm-up of each, the two alternate ``repeats`` times (a change of machine load hits
    both). Returns ``precision``, ``native``, ``fp32_per_s`` and ``reduced_per_s`` (inputs per
    second, best of each), ``speedup`` (best over best), ``speedup_min`` (the least favourable
    alternating pair), ``relative_error`` and the bounds; a precision the device lacks is not run.
    """
    import torch

    n = len(inputs)
    cuda = torch.device(device).type == "cuda"
    out: dict[str, Any] = {
        "precision": precision,
        "native": native(device, precision),
        "error_bound": ERROR_BOUND,
        "min_speedup": MIN_SPEEDUP,
        "cpu_bf16_flags": sorted(set(CPU_BF16_FLAGS) & cpu_flags()),
    }

    def fp32() -> Any:
        return run(inputs).float()

    def reduced() -> Any:
        with autocast(device, precision):
            return run(inputs).float()

    with torch.inference_mode():
        y32 = fp32()
        if not out["native"]:
            out["fp32_per_s"] = round(n / _once(fp32, cuda)[0], 3)
            return out
        ylow = reduced()
        pairs = [(_once(fp32, cuda)[0], _once(reduced, cuda)[0]) for _ in range(repeats)]
    best32, bestlow = min(p[0] for p in pairs), min(p[1] for p in pairs)
    out["fp32_per_s"] = round(n / best32, 3)
    out["reduced_per_s"] = round(n / bestlow, 3)
    out["speedup"] = round(best32 / bestlow, 3)
    out["speedup_min"] = round(min(a / b for a, b in pairs), 3)  # the least favourable pair
    out["relative_error"] = float(f"{relative_error(ylow, y32):.3g}")
    return out


def choose_precision(probe: dict[str, Any]) -> str:
    """``probe['precision']`` when it is native, within the error bound and faster by at least
    ``min_speedup`` in every alternating pair (a load spike on one side cannot decide), else fp32."""
    ok = (
        probe.get("native")
        and probe.get("relative_error", float("inf")) <= probe["error_bound"]
        and min(probe.get("speedup", 0.0), probe.get("speedup_min", 0.0)) >= probe["min_speedup"]
    )
    return probe["precision"] if ok else "fp32"


def reduced_precision(device: Any) -> str:
    """The reduced precision worth measuring on ``device``: fp16 on CUDA, bf16 elsewhere."""
    return "fp16" if str(device).startswith("cuda") else "bf16"


def decide_precision(
    asked: str,
    device: Any,
    probe: Callable[[str], dict[str, Any]],
    known: dict[str, Any] | None = None,
    reduced: str | None = None,
    has_native: bool | None = None,
) -> tuple[str, dict[str, Any] | None, str]:
    """``(precision, probe figures or None, advice)`` for one network on ``device``.

    ``asked`` fp32/bf16/fp16 is used as it is (checked against the device). ``auto`` runs
    ``probe(reduced)`` unless ``known`` (figures measured before on this machine) is given, and keeps
    the reduced precision only by :func:`choose_precision`. ``advice`` is one line for the summary
    when fp32 was asked and known figures say the reduced precision would be faster and within the
    error bound: it never changes the precision. ``has_native``: whether the device runs the
    reduced precision natively (default: asked of the device).
    """
    reduced = reduced or reduced_precision(device)
    if asked != "auto":
        check_precision(device, asked)
        advice = ""
        if asked == "fp32" and known and choose_precision(known) != "fp32":
            advice = (
                f"{known['precision']} measured x{known['speedup']:.2f} faster on this machine "
                f"(relative error {known['relative_error']:.1e}); --precision "
                f"{known['precision']} (PRECISION={known['precision']}) to use it"
            )
        return asked, None, advice
    if not (native(device, reduced) if has_native is None else has_native):
        return "fp32", None, ""
    figures = known if known else probe(reduced)
    return choose_precision(figures), figures, ""
