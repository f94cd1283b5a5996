"""The machine section and the printed form of :mod:`benchmarks.speed`'s report (its JSON
is the data; this is the table a person reads)."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from hydralanet.config import CLASSES
from hydralanet.inference.device import cpu_has_native_bf16


def machine_info() -> dict[str, Any]:
    caps = torch.cpu.get_capabilities()
    return {
        "cpu": caps.get("cpu_name") or platform.processor(),
        "physical_cores": caps.get("num_physical_cores"),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"\nmachine: {m['cpu']}, {m['physical_cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"native bf16: {m['native_bf16']}"
    )
    print(
        f"load average at start {tuple(round(v, 2) for v in m['loadavg_start'])}, "
        f"at end {tuple(round(v, 2) for v in m['loadavg_end'])}"
    )
    print(
        f"matmul peak (torch.mm): fp32 {report['peak_fp32_gflops']:.0f} GFLOP/s, "
        f"bf16 {report['peak_bf16_gflops']:.0f} GFLOP/s (best of start/end: {report['peak_bf16_runs']})"
    )
    for key, r in report["models"].items():
        _print_model(key, r)


def _print_model(key: str, r: dict[str, Any]) -> None:
    """One model's section: times, memory, agreement, tiles."""
    a = r["agreement"]
    print(f"\n== {key}: {r['model']} ({r['architecture']}, {r['input_size']} px, weights: {a['weights']})")
    print(
        f"   {r['gflop']:.1f} GFLOP per image; other processes used {_fmt(r['other_processes_cores'])} "
        "cores while timing"
    )
    rows = [("path", "median s", "GFLOP/s", "x baseline", "peak RSS MiB")]
    for path in ("baseline", "fast"):
        mem = r.get(f"memory_{path}")
        rows.append(
            (
                "fp32 eager (baseline)" if path == "baseline" else f"fast path ({r['precision']})",
                f"{r[path + '_s']:.3f}",
                f"{r[path + '_gflops']:.0f}",
                "1.00" if path == "baseline" else f"{r['speedup']:.2f}",
                "-" if mem is None else f"{mem['peak_mib']:.0f} (model loaded: {mem['model_mib']:.0f})",
            )
        )
    if "compiled_s" in r:
        rows.append(
            (
                "fast + torch.compile",
                f"{r['compiled_s']:.3f}",
                f"{r['gflop'] / r['compiled_s']:.0f}",
                f"{r['compiled_speedup']:.2f}",
                f"(compile + first run {r['compile_s']:.1f} s)",
            )
        )
    rows.append(("bound: GFLOP / bf16 peak", f"{r['bound_s']:.3f}", f"{r['peak_bf16_gflops']:.0f}", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("   " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    compiled = f" (with torch.compile {r['compiled_bound_ratio']:.2f})" if "compiled_s" in r else ""
    print(
        f"   fast / bound = {r['bound_ratio']:.2f}{compiled};  fast-model build {r['build_s']:.2f} s (once per process)"
    )
    print(
        f"   agreement with fp32 over {len(a['images'])} photo(s) ({', '.join(a['images'][:3])}"
        f"{', ...' if len(a['images']) > 3 else ''}), Dice pooled over the photos:"
    )
    print("     " + "  ".join(f"{c}: Dice {a['dice'][c]:.4f} ({a['mask_pixels'][c]} px)" for c in CLASSES))
    if len(a["images"]) > 1:
        print(
            f"     on {a['images'][0]} alone: "
            + "  ".join(
                f"{c} {a['per_image'][a['images'][0]]['dice'][c]:.4f} ({a['coverage_pct'][c]:.3f} % of FOV)"
                for c in CLASSES
            )
        )
    print(
        "     coverage-matched (fp32 mask = 2 % of FOV): "
        + "  ".join(f"{c} {a['dice_matched'][c]:.4f}" for c in CLASSES)
    )
    print(
        f"     max |delta p| {a['max_abs_dp']:.2e}; fp32 probability spread in the FOV of the first: "
        + "  ".join(f"{c} {a['prob_spread'][c]:.1e}" for c in CLASSES)
    )
    if not a["weights"].startswith("trained"):
        print("     (not trained: near-constant outputs, so these figures are not evidence of agreement)")
    t = r.get("tiled")
    if t:
        mem = t.get("memory")
        print(
            f"   tiled {t['photo']} photo at native resolution ({t['input_size']} px square, {t['tile']} px tiles:"
            f" {t['tiles_run']} run, {t['tiles_skipped']} skipped): {t['seconds']:.2f} s"
            + ("" if mem is None else f", peak RSS {mem['peak_mib']:.0f} MiB")
        )


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"
