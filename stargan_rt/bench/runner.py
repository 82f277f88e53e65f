"""Run a bench: build every row, check its accuracy, then time all rows side by side.

Timing is interleaved: each round visits every row (in a fresh random order) for each batch
size, so every engine sees the same machine load; a shared machine's load moves during a run, and
timing the engines one after the other would hand the quiet minutes to some and the busy ones to
others. A visit is one untimed call, then ``repeat`` timed calls: the runtimes' worker threads
spin for a while after a call (OpenMP, ONNX Runtime, TBB), and the untimed call keeps that spin
out of the next engine's figures. The load average is recorded with every round.
"""
from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stargan_rt.bench import ceilings as ceilings_mod
from stargan_rt.bench import machine as machine_mod
from stargan_rt.bench.engines import PROJECT_PRECISIONS, Row, peer_rows, project_rows, torch_rows
from stargan_rt.bench.flops import count_macs

HELD_OUT_SEED = 77_001  # neither the calibration seed nor the demo models' training seeds
ACCURACY_FRAMES = 8
WARMUP = 2


class Progress:
    """tqdm's bar when tqdm is installed (it comes with nncf), else a line per step."""

    def __init__(self, total: int, desc: str):
        self.bar = None
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False,
                            dynamic_ncols=True)
        except ImportError:
            self.desc, self.total, self.done = desc, total, 0

    def update(self, text: str = "") -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text[:40], refresh=False)
            self.bar.update(1)
        else:
            self.done += 1
            if self.done == self.total or self.done % max(1, self.total // 10) == 0:
                print(f"{self.desc}: {self.done}/{self.total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def available_targets() -> list[str]:
    from stargan_rt.targets import probe_all

    return [s.name for s in probe_all() if s.available]


def _psnr_max(test: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    from stargan_rt.stream.live_parity import psnr_and_max_err

    return psnr_and_max_err(test, ref)


def _stats(ms: list[float], batch: int) -> dict:
    if not ms:
        return {}
    arr = np.asarray(ms)
    p50 = float(np.percentile(arr, 50))
    return {"calls": len(ms), "p50_ms": round(p50, 2),
            "p95_ms": round(float(np.percentile(arr, 95)), 2),
            "min_ms": round(float(arr.min()), 2),
            "frames_per_s": round(batch * 1000.0 / p50, 1)}


def bench_model(spec: str, bundle_path: Path, *, batches=(1, 4), rounds: int = 20,
                targets: list[str] | None = None, precisions=PROJECT_PRECISIONS,
                repeat: int = 2, peers: bool = True, torch_compile: bool = False, calib=None,
                cache_dir: Path | None = None, workdir: Path | None = None,
                log=print) -> dict:
    """All rows for one model, timed side by side. Returns the model's JSON section."""
    from stargan_rt.backends.cache import EngineCache
    from stargan_rt.bundle import Bundle
    from stargan_rt.export.calibration import load_calibration_frames, synthetic_faces
    from stargan_rt.build import networks_for, prepare_graphs

    bundle = Bundle.open(bundle_path)
    manifest = bundle.manifest
    size = manifest.image_size
    targets = [t for t in (targets or available_targets()) if t != "tensorrt" or
               t in available_targets()]
    work = Path(tempfile.mkdtemp(prefix=f"{spec.replace('/', '_')[-40:]}-", dir=workdir))
    cache_dir = Path(cache_dir) if cache_dir else work / "cache"
    log(f"{spec}: {manifest.arch} {size} px; exporting the fp32 graphs")
    start = time.perf_counter()
    per_frame = [n for n in networks_for(bundle) if n in ("generator", "fan")]
    graphs = prepare_graphs(bundle, "onnxruntime", "fp32", EngineCache(cache_dir), "uint8",
                            None, per_frame, log=lambda m: None).paths
    export_s = time.perf_counter() - start
    macs = {net: count_macs(path) for net, path in graphs.items()}
    macs_frame = sum(macs.values())

    rows: list[Row] = torch_rows(bundle_path, torch_compile)
    project, fp32 = project_rows(bundle_path, targets, list(precisions), cache_dir, calib, log)
    rows += project
    if peers:
        frames = load_calibration_frames(calib, size)
        rows += peer_rows(bundle_path, fp32, graphs, frames, work, log)
    live = [r for r in rows if r.call is not None]

    # accuracy on held-out frames, against PyTorch fp32
    held = synthetic_faces(size, ACCURACY_FRAMES, seed=HELD_OUT_SEED)
    reference = np.concatenate([live[0].call(held[i:i + 4]) for i in range(0, len(held), 4)])
    for row in live:
        out = np.concatenate([row.call(held[i:i + 4]) for i in range(0, len(held), 4)])
        psnr, max_err = _psnr_max(out, reference)
        row.accuracy = {"psnr_db": round(psnr, 2), "max_abs_err": max_err,
                        "frames": len(held)}

    # timing: interleaved rounds
    rng = np.random.default_rng(0)
    inputs = {b: synthetic_faces(size, b, seed=HELD_OUT_SEED + 1) for b in batches}
    for b in batches:
        for row in live:
            for _ in range(WARMUP):
                row.call(inputs[b])
    loads = []
    progress = Progress(rounds, f"{spec} rounds")
    timing_start = time.perf_counter()
    for _ in range(rounds):
        for b in batches:
            for index in rng.permutation(len(live)):
                row = live[index]
                row.call(inputs[b])  # untimed: lets the previous runtime's spinning threads idle
                for _ in range(repeat):
                    t = time.perf_counter()
                    row.call(inputs[b])
                    row.times.setdefault(b, []).append((time.perf_counter() - t) * 1000.0)
        loads.append(machine_mod.load_average()[:1])
        progress.update(f"load {loads[-1][0] if loads[-1] else '?'}")
    progress.close()
    timing_s = time.perf_counter() - timing_start

    reference_p50 = {b: float(np.percentile(live[0].times[b], 50)) for b in batches}
    out_rows = []
    for row in rows:
        entry = {"label": row.label, "kind": row.kind, "runtime": row.runtime,
                 "precision": row.precision, "note": row.note, "skipped": row.skipped,
                 "build_s": row.build_s, "rss_added_mb": row.rss_mb,
                 "accuracy": row.accuracy, "ceiling": list(row.ceiling) if row.ceiling else None,
                 "batches": {}}
        for b in batches:
            stats = _stats(row.times.get(b, []), b)
            if stats:
                stats["speedup_vs_pytorch_fp32"] = round(reference_p50[b] / stats["p50_ms"], 2)
                stats["gflops"] = round(2.0 * macs_frame * b / (stats["p50_ms"] / 1000) / 1e9, 3)
            entry["batches"][str(b)] = stats
        out_rows.append(entry)
    load_values = [x[0] for x in loads if x]
    return {"model": spec, "bundle": str(bundle_path), "arch": manifest.arch, "image_size": size,
            "config": manifest.config, "per_frame_networks": per_frame,
            "macs_per_frame": macs, "gmacs_per_frame": round(macs_frame / 1e9, 2),
            "export_s": round(export_s, 1), "rounds": rounds, "timed_calls_per_visit": repeat,
            "batches": list(batches),
            "timing_s": round(timing_s, 1),
            "load_1min_during_timing": ({"min": min(load_values), "max": max(load_values),
                                         "mean": round(float(np.mean(load_values)), 2)}
                                        if load_values else None),
            "rows": out_rows}


def machine_ceilings(ceilings: dict) -> dict:
    """{precision: GFLOP/s}, the best runtime at each precision. One runtime's kernels can be
    slower than another's (torch's fp32 matmul library on AMD CPUs, say): the machine's ceiling
    is the best any of them reached."""
    best: dict[str, float] = {}
    for per_precision in ceilings.values():
        for prec, value in per_precision.items():
            if value is not None:
                best[prec] = max(best.get(prec, 0.0), value)
    return best


def attach_ceilings(result: dict, ceilings: dict) -> None:
    """Each row's achieved GFLOP/s as a fraction of its runtime's ceiling at its precision, and
    of the machine's (the best runtime's) at that precision."""
    machine = result["machine_ceilings"] = machine_ceilings(ceilings)
    for model in result["models"]:
        for row in model["rows"]:
            rt, prec = row["ceiling"] or (None, None)
            top = ceilings.get(rt, {}).get(prec) if rt else None
            for stats in row["batches"].values():
                if stats and top:
                    stats["fraction_of_ceiling"] = round(stats["gflops"] / top, 3)
                if stats and machine.get(prec):
                    stats["fraction_of_machine_ceiling"] = round(stats["gflops"] / machine[prec], 3)


def run_bench(models: list[str], *, workdir: Path, log=print,
              ceiling_sizes=ceilings_mod.SIZES,
              ceiling_seconds: float = ceilings_mod.SECONDS, **kwargs) -> dict:
    from stargan_rt.bench.models import resolve

    machine = machine_mod.describe()
    log(f"machine: {machine_mod.one_line(machine)}")
    started = time.time()
    result = {"tool": "stargan-rt bench", "started_utc": time.strftime(
        "%Y-%m-%d %H:%M:%S", time.gmtime(started)), "machine": machine,
        "command": " ".join(["stargan-rt"] + sys.argv[1:]) if sys.argv else "", "models": []}
    result["ceilings_start"] = ceilings_mod.measure(ceiling_sizes, ceiling_seconds)
    for spec in models:
        path = resolve(spec, workdir)
        result["models"].append(bench_model(spec, path, log=log, workdir=workdir, **kwargs))
    result["ceilings_end"] = ceilings_mod.measure(ceiling_sizes, ceiling_seconds)
    # the higher of the two measurements: a ceiling is what the machine can do
    ceilings = {}
    for rt in ("torch", "onnxruntime", "openvino"):
        a, b = result["ceilings_start"].get(rt, {}), result["ceilings_end"].get(rt, {})
        ceilings[rt] = {p: max(x for x in (a.get(p), b.get(p)) if x is not None)
                        for p in set(a) | set(b)
                        if any(x is not None for x in (a.get(p), b.get(p)))}
    result["ceilings"] = ceilings
    attach_ceilings(result, ceilings)
    result["load_average_end"] = machine_mod.load_average()
    result["duration_s"] = round(time.time() - started, 1)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result
