"""`stargan-rt bench --pipeline`: the live webcam pipeline, headless, on a video, next to the
same engine timed alone in the same process.

Reported per run: FPS, per-stage p50 / p95 (detect, infer, paste, end to end), the engine-alone
FPS and p50 on one face crop (timed before and after the pipeline run, the better kept, so the
pipeline is not flattered by a quieter moment), FPS as a fraction of the engine-alone FPS, and
with ``--realtime`` the end-to-end p50 as a multiple of the engine time.
"""
from __future__ import annotations

import time

import numpy as np

ALONE_CALLS = 40


def _alone(translator, size: int) -> list[float]:
    from stargan_rt.export.calibration import synthetic_faces

    crop = synthetic_faces(size, 1, seed=5)
    translator(crop)
    times = []
    for _ in range(ALONE_CALLS):
        t = time.perf_counter()
        translator(crop)
        times.append((time.perf_counter() - t) * 1000)
    return times


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


def run_pipeline(model_spec: str, bundle_path, translator, source_spec: str = "sample",
                 realtime: bool = False, max_frames: int | None = 300, log=print,
                 opencv_threads: int | None = 1) -> dict:
    from stargan_rt.bench.engines import set_target
    from stargan_rt.stream.faces import FaceStage
    from stargan_rt.stream.pipeline import Pipeline
    from stargan_rt.stream.sources import open_source

    set_target(translator)
    size = translator.image_size
    before = _alone(translator, size)
    # the bundle's own framing (crop_scale / crop_shift), as the webcam verb uses it
    faces = FaceStage(size, translator.arch, dict(translator.bundle.manifest.config or {}))
    source = open_source(source_spec)
    kwargs = ({"labels": [1] + [0] * (len(translator.domains) - 1)} if translator.arch == "v1"
              else {"domain": translator.domains[-1], "seed": 1})
    pipeline = Pipeline(source, translator, faces, [], realtime=realtime, max_frames=max_frames,
                        precision=translator.precision, log=lambda m: None,
                        model_name=model_spec, opencv_threads=opencv_threads, **kwargs)
    pipeline.run()
    summary = pipeline.summary()
    after = _alone(translator, size)
    alone_p50 = min(float(np.percentile(before, 50)), float(np.percentile(after, 50)))
    stages = summary["latency_ms"]
    e2e = (stages.get("end_to_end") or {}).get("p50")
    info = source.info() if hasattr(source, "info") else {}
    result = {"model": model_spec, "engine": f"{translator.target} {translator.precision}",
              "opencv_threads": opencv_threads,
              "mode": "realtime" if realtime else "every frame", "source": info,
              "frames_out": summary["frames_out"], "frames_dropped": summary["frames_dropped"],
              "faces_found": summary["faces_found"], "fps": summary["fps"],
              "stages": {k: stages.get(k) for k in ("capture", "detect", "infer", "paste",
                                                     "output", "end_to_end")},
              "engine_alone_p50_ms": round(alone_p50, 2),
              "engine_alone_fps": round(1000.0 / alone_p50, 1),
              "stop_reason": summary.get("stop_reason"), "error": summary.get("error")}
    result["fps_fraction_of_alone"] = (round(result["fps"] / result["engine_alone_fps"], 3)
                                       if result["fps"] else None)
    infer = (stages.get("infer") or {}).get("p50")
    result["infer_vs_alone"] = round(infer / alone_p50, 3) if infer else None
    result["end_to_end_vs_engine"] = round(e2e / alone_p50, 2) if e2e else None
    log(f"pipeline {model_spec} {result['engine']} {result['mode']}: {result['fps']} FPS, "
        f"engine alone {result['engine_alone_fps']} FPS")
    return result
