"""`stargan-rt bench --pipeline`: the live webcam pipeline, headless, on a video, next to the
same engine timed alone in the same process.

Reported per run: FPS, per-stage p50 / p95 (detect, infer, paste, end to end) and the engine
alone, timed before and after the pipeline run (the better kept, so the pipeline is not flattered
by a quieter moment): one call at a time on the 1-stream engine (the lowest latency: the bench
table's engine), and for a run with N streams also N callers at once on its N-stream engine.
"FPS / alone" divides by the better of the two engine-alone rates; "infer vs alone" compares a
call inside the pipeline with a call of the same engine alone under the same concurrency; with
``--realtime`` the end-to-end p50 is given as a multiple of the 1-stream engine's p50.

On a shared virtual machine the cores' speed drifts by 10-20 % within minutes, so one pipeline
run next to one timing of the engine alone can land in different phases. ``rounds`` alternates
them: each round is a pipeline run between two engine-alone timings, and the round with the
median FPS / alone is reported, with every round's ratios kept in ``rounds``.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from stargan_rt.stream.contracts import DEFAULT_DETECTOR

ALONE_CALLS = 40


def _crop(size: int) -> np.ndarray:
    from stargan_rt.export.calibration import synthetic_faces

    return synthetic_faces(size, 1, seed=5)


def alone(translator, size: int, callers: int = 1) -> dict:
    """The engine alone on one face crop: ``callers`` threads calling at once, ALONE_CALLS
    calls each after one untimed call. Returns the per-call p50 and the calls per second."""
    crop = _crop(size)
    translator(crop)
    times: list[float] = []
    lock = threading.Lock()

    def caller():
        mine = []
        for _ in range(ALONE_CALLS):
            t = time.perf_counter()
            translator(crop)
            mine.append((time.perf_counter() - t) * 1000)
        with lock:
            times.extend(mine)

    start = time.perf_counter()
    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"p50_ms": float(np.percentile(times, 50)), "fps": len(times) / wall}


def _better(a: dict, b: dict) -> dict:
    return {"p50_ms": min(a["p50_ms"], b["p50_ms"]), "fps": max(a["fps"], b["fps"])}


def resized_video(source: str, size: tuple[int, int], out, frames: int = 300) -> str:
    """A copy of a video (or the sample) at ``size`` (w, h), looped to ``frames`` frames: the
    live case is a 640x480 camera, the shipped sample is 320x240."""
    import cv2

    from stargan_rt.stream.sources import open_source
    from stargan_rt.stream.synthetic import write_video

    src = open_source(source, loop=True)
    images = []
    try:
        while len(images) < frames:
            frame = src.read()
            if frame is None:
                break
            images.append(cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR))
    finally:
        src.close()
    write_video(out, images, fps=src.fps or 20.0)
    return str(out)


def run_pipeline(model_spec: str, translator, single, source_spec: str = "sample",
                 realtime: bool = False, max_frames: int | None = 300, log=print,
                 opencv_threads: int | None = 1, streams: int = 1, rounds: int = 1,
                 detector: str = DEFAULT_DETECTOR) -> dict:
    """Headless pipeline runs of ``translator`` (built with ``streams``), ``rounds`` of them;
    ``single`` is the same model's 1-stream translator (the engine-alone latency reference; may
    be the same object when streams is 1); ``detector``: the face detector's name. Returns the
    median round, with all rounds' ratios."""
    from stargan_rt.bench.engines import set_target

    set_target(translator)
    if single is not translator:
        set_target(single)
    size = translator.image_size

    def measure():
        one = alone(single, size)
        return one, (alone(translator, size, streams) if streams > 1 else one)

    before = measure()
    results = []
    for _ in range(max(1, rounds)):
        summary, info = _one_run(model_spec, translator, source_spec, realtime, max_frames,
                                 opencv_threads, streams, detector)
        after = measure()
        results.append(_result(model_spec, translator, summary, info, opencv_threads, streams,
                               realtime, _better(before[0], after[0]),
                               _better(before[1], after[1])))
        before = after
    ranked = sorted(results, key=lambda r: r["fps_fraction_of_alone"] or 0.0)
    result = dict(ranked[len(ranked) // 2])
    result["rounds"] = [{k: r[k] for k in ("fps", "best_alone_fps", "fps_fraction_of_alone",
                                           "infer_vs_alone", "end_to_end_vs_engine")}
                        for r in results]
    log(f"pipeline {model_spec} {result['engine']} {streams} stream(s) {result['mode']}: "
        f"{result['fps']} FPS, engine alone {result['best_alone_fps']} FPS"
        + (f" (median of {len(results)} rounds: "
           + ", ".join(f"{r['fps_fraction_of_alone']}" for r in result["rounds"]) + ")"
           if len(results) > 1 else ""))
    return result


def _one_run(model_spec, translator, source_spec, realtime, max_frames, opencv_threads,
             streams, detector) -> tuple[dict, dict]:
    from stargan_rt.stream.faces import FaceStage
    from stargan_rt.stream.pipeline import Pipeline
    from stargan_rt.stream.sources import open_source

    # the bundle's own framing (crop_scale / crop_shift), as the webcam verb uses it
    faces = FaceStage(translator.image_size, translator.arch,
                      dict(translator.bundle.manifest.config or {}), detector=detector)
    source = open_source(source_spec)
    kwargs = ({"labels": [1] + [0] * (len(translator.domains) - 1)} if translator.arch == "v1"
              else {"domain": translator.domains[-1], "seed": 1})
    pipeline = Pipeline(source, translator, faces, [], realtime=realtime, max_frames=max_frames,
                        precision=translator.precision, log=lambda m: None,
                        model_name=model_spec, opencv_threads=opencv_threads, streams=streams,
                        **kwargs)
    pipeline.run()
    return pipeline.summary(), (source.info() if hasattr(source, "info") else {})


def _result(model_spec, translator, summary, info, opencv_threads, streams, realtime, one,
            many) -> dict:
    best_fps = max(one["fps"], many["fps"])
    stages = summary["latency_ms"]
    e2e = (stages.get("end_to_end") or {}).get("p50")
    infer = (stages.get("infer") or {}).get("p50")
    result = {"model": model_spec, "engine": f"{translator.target} {translator.precision}",
              "opencv_threads": opencv_threads, "streams": streams,
              "mode": "realtime" if realtime else "every frame", "source": info,
              "frames_out": summary["frames_out"], "frames_dropped": summary["frames_dropped"],
              "faces_found": summary["faces_found"], "fps": summary["fps"],
              "stages": {k: stages.get(k) for k in ("capture", "detect", "infer", "paste",
                                                     "output", "end_to_end")},
              "engine_alone_p50_ms": round(one["p50_ms"], 2),
              "engine_alone_fps": round(one["fps"], 1),
              "streams_alone_p50_ms": round(many["p50_ms"], 2),
              "streams_alone_fps": round(many["fps"], 1),
              "best_alone_fps": round(best_fps, 1),
              "detector": summary.get("detector"),
              "stop_reason": summary.get("stop_reason"), "error": summary.get("error")}
    result["fps_fraction_of_alone"] = (round(result["fps"] / best_fps, 3)
                                       if result["fps"] else None)
    result["infer_vs_alone"] = round(infer / many["p50_ms"], 3) if infer else None
    result["end_to_end_vs_engine"] = round(e2e / one["p50_ms"], 2) if e2e else None
    return result
