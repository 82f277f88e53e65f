"""Bench output: a Markdown table, the JSON and PNG plots (latency by engine; PSNR against
speed), from one run's result dict."""
from __future__ import annotations

import json
from pathlib import Path


def _fmt(value, spec: str = ".1f", empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def markdown(result: dict) -> str:
    from stargan_rt.bench.machine import one_line

    m = result["machine"]
    lines = [f"Measured by `{result.get('command') or 'stargan-rt bench'}` on "
             f"{result['started_utc']} UTC, {one_line(m)}; load average at the end "
             f"{'/'.join(str(x) for x in result.get('load_average_end', []))}. "
             f"Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + ".",
             ""]
    ce = result.get("ceilings", {})
    if result["models"]:
        lines.append("Ceilings (chains of dense products: " +
                     ", ".join(result["ceilings_start"].get("kernels", [])) +
                     "; GFLOP/s, the fastest kernel and the better of the start and end "
                     "measurements): " + "; ".join(
                         f"{rt} " + ", ".join(f"{p} {v:.0f}" for p, v in sorted(vals.items()))
                         for rt, vals in ce.items() if vals) + "; the machine (best runtime): " +
                     ", ".join(f"{p} {v:.0f}" for p, v in
                               sorted(result.get("machine_ceilings", {}).items())) + ".")
        lines.append("")
    for model in result["models"]:
        load = model.get("load_1min_during_timing") or {}
        lines.append(f"### {model['model']}: StarGAN {model['arch']} {model['image_size']} px "
                     f"({', '.join(model['per_frame_networks'])}; "
                     f"{model['gmacs_per_frame']} GMAC per frame)")
        lines.append("")
        lines.append(f"{model['rounds']} interleaved rounds of "
                     f"{model.get('timed_calls_per_visit', 1)} timed calls per engine, batches "
                     f"{', '.join(map(str, model['batches']))}; 1-min load average during the "
                     f"timing {load.get('min', '?')}-{load.get('max', '?')} "
                     f"(mean {load.get('mean', '?')}). PSNR / max error: against PyTorch fp32 "
                     "on held-out frames (uint8).")
        lines.append("")
        head = "| engine | runs | "
        sep = "|---|---|"
        for b in model["batches"]:
            head += f"b{b} p50 ms | b{b} p95 ms | b{b} frames/s | b{b} vs PyTorch | "
            sep += "---|---|---|---|"
        head += "% of runtime / machine ceiling (b1) | PSNR dB | max err | build s | RSS +MB |"
        sep += "---|---|---|---|---|"
        lines += [head, sep]
        for row in model["rows"]:
            if row["skipped"]:
                lines.append(f"| {row['label']} | skipped: {row['skipped'][:120]} |")
                continue
            cells = [row["label"], row["precision"]]
            for b in model["batches"]:
                s = row["batches"].get(str(b)) or {}
                cells += [_fmt(s.get("p50_ms")), _fmt(s.get("p95_ms")),
                          _fmt(s.get("frames_per_s")),
                          _fmt(s.get("speedup_vs_pytorch_fp32"), ".2f") + "x"]
            first = row["batches"].get(str(model["batches"][0])) or {}
            frac = first.get("fraction_of_ceiling")
            acc = row["accuracy"]
            psnr = acc.get("psnr_db")
            whole = first.get("fraction_of_machine_ceiling")
            cells += [_fmt(None if frac is None else 100 * frac, ".0f") + " / " +
                      _fmt(None if whole is None else 100 * whole, ".0f"),
                      "inf" if psnr is not None and psnr >= 100 else _fmt(psnr),
                      _fmt(acc.get("max_abs_err"), "d"), _fmt(row["build_s"]),
                      _fmt(row["rss_added_mb"], ".0f")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if result.get("pipeline"):
        lines += pipeline_markdown(result["pipeline"])
    return "\n".join(lines) + "\n"


def pipeline_markdown(runs: list[dict]) -> list[str]:
    lines = ["### Live pipeline (headless)", "",
             "| model | engine | face detector | streams | mode | OpenCV threads | FPS | "
             "engine-alone FPS (1 stream / N at once) | FPS / best alone (rounds) | infer p50 "
             "ms (alone, same streams) | infer / alone (rounds) | "
             "detect p50/p95 | infer p50/p95 | paste p50/p95 | end-to-end p50/p95 "
             "| e2e p50 / 1-stream engine |", "|" + "---|" * 16]
    for r in runs:
        st = r["stages"]

        def pp(name, st=st):
            s = st.get(name) or {}
            return f"{_fmt(s.get('p50'))}/{_fmt(s.get('p95'))}" if s.get("count") else "-"
        lines.append(
            f"| {r['model']} | {r['engine']} | {r.get('detector') or '-'} | "
            f"{r.get('streams', 1)} | {r['mode']} | "
            f"{r.get('opencv_threads') or 'default'} | {_fmt(r['fps'])} | "
            f"{_fmt(r['engine_alone_fps'])} / {_fmt(r.get('streams_alone_fps'))} | "
            f"{_fmt(r['fps_fraction_of_alone'], '.2f')}{_round_range(r)} | "
            f"{_fmt((st.get('infer') or {}).get('p50'))} "
            f"({_fmt(r.get('streams_alone_p50_ms', r['engine_alone_p50_ms']))}) | "
            f"{_fmt(r.get('infer_vs_alone'), '.3f')}{_round_range(r, 'infer_vs_alone', '.3f')} | "
            f"{pp('detect')} | {pp('infer')} | {pp('paste')} | {pp('end_to_end')} | "
            f"{_fmt(r.get('end_to_end_vs_engine'), '.2f')} |")
    lines.append("")
    return lines


def _round_range(run: dict, key: str = "fps_fraction_of_alone", spec: str = ".2f") -> str:
    """' (0.84-0.89 in 3)': the spread of one ratio over the pipeline's rounds, when there
    were several."""
    values = [r[key] for r in run.get("rounds", []) if r.get(key) is not None]
    if len(values) < 2:
        return ""
    return f" ({min(values):{spec}}-{max(values):{spec}} in {len(values)})"


def plots(result: dict, out_dir: Path) -> list[Path]:
    """latency.png (batch-1 p50 per engine, per model) and psnr_speed.png. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result["models"]
    colours = {"pytorch": "#888888", "project": "#1f77b4", "peer": "#ff7f0e"}
    written = []
    fig, axes = plt.subplots(len(models), 1, figsize=(9, 0.45 * sum(
        len(m["rows"]) for m in models) + 1.5 * len(models)), squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        b = str(model["batches"][0])
        rows = [r for r in model["rows"] if not r["skipped"] and r["batches"].get(b)]
        names = [r["label"] for r in rows]
        values = [r["batches"][b]["p50_ms"] for r in rows]
        errs = [r["batches"][b]["p95_ms"] - r["batches"][b]["p50_ms"] for r in rows]
        ax.barh(names, values, xerr=[[0] * len(errs), errs],
                color=[colours.get(r["kind"], "#333") for r in rows])
        ax.invert_yaxis()
        ax.set_xlabel(f"ms per call, batch {b} (bar p50, whisker p95)")
        ax.set_title(f"{model['model']} ({model['arch']} {model['image_size']} px)")
    fig.suptitle(result["machine"]["cpu"], fontsize=9)
    fig.tight_layout()
    path = out_dir / "latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        b = str(model["batches"][0])
        points = [(r["batches"][b]["speedup_vs_pytorch_fp32"],
                   min(r["accuracy"]["psnr_db"], 60.0), r) for r in model["rows"]
                  if not r["skipped"] and r["batches"].get(b)
                  and r["accuracy"].get("psnr_db") is not None]
        if not points:
            continue
        span_x = max(p[0] for p in points) or 1.0
        span_y = max(1.0, max(p[1] for p in points) - min(p[1] for p in points))
        placed: list[tuple[float, float]] = []
        for x, y, r in points:
            # rows at nearly the same place (the same graph twice, the fp32 engines at 60 dB)
            # get their labels stacked instead of printed over each other
            near = sum(abs(px - x) < 0.35 * span_x and abs(py - y) < 0.04 * span_y
                       for px, py in placed)
            placed.append((x, y))
            ax.scatter(x, y, color=colours.get(r["kind"], "#333"))
            ax.annotate(r["label"].replace(" (this project)", "*"), (x, y), fontsize=7,
                        xytext=(4, 3 - 9 * near), textcoords="offset points")
        ax.set_xlabel(f"speed vs PyTorch fp32 (batch {b} p50)")
        ax.set_ylabel("PSNR vs PyTorch fp32, dB (capped at 60)")
        ax.set_title(f"{model['model']}; * this project")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / "psnr_speed.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def write_all(result: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "bench.json", "markdown": out_dir / "bench.md"}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    paths["markdown"].write_text(markdown(result))
    try:
        for path in plots(result, out_dir) if result["models"] else []:
            paths[path.stem] = path
    except ImportError as exc:
        paths["plots_skipped"] = Path(f"matplotlib missing: {exc}")
    return paths
