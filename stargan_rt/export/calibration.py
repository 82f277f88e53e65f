"""Calibration frames for INT8: face crops at the model's size, uint8 BGR (N, S, S, 3).

Sources: a directory of images (each centre-cropped / resized like `translate` does), a video
file (frames sampled evenly over its length, the face crop taken by the streaming face stage, or
the centre square when no face is found), or None: the built-in synthetic face data
(`stargan_rt.synth`, the same generator `stargan-rt data synth` uses), made in memory.

``calibration_feeds`` turns frames into every input a StarGAN graph takes (labels, domains,
latents, v2 styles from the mapping network's graph, masks from the FAN's graph).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx

from stargan_rt.errors import UserError
from stargan_rt.export.graph import cpu_session, run_batched
from stargan_rt.export.onnx_io import get_metadata
from stargan_rt.imaging import VIDEO_SUFFIXES

MIN_CALIBRATION_FRAMES = 256


def _too_few(found: int, wanted: int, where: str) -> UserError:
    return UserError(
        f"{where}: found {found} usable calibration frame(s), INT8 calibration needs at least "
        f"{wanted}; add face images to the directory, pass a longer video with --calib VIDEO, "
        "or leave --calib out to use the built-in synthetic faces")


def _from_directory(folder: Path, size: int, count: int) -> np.ndarray:
    from stargan_rt.imaging import IMAGE_SUFFIXES, fit_to_model, read_image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                   and p.is_file())
    if len(files) < count:
        raise _too_few(len(files), count, str(folder))
    # Spread the picks over the whole (sorted) directory rather than taking the first ones.
    picks = np.linspace(0, len(files) - 1, count).round().astype(int)
    frames = []
    for index in picks:
        try:
            frames.append(fit_to_model(read_image(files[index]), size))
        except UserError:
            continue  # an unreadable file is skipped; the count check below catches too many
    if len(frames) < count:
        spare = [f for i, f in enumerate(files) if i not in set(picks.tolist())]
        for path in spare:
            if len(frames) >= count:
                break
            try:
                frames.append(fit_to_model(read_image(path), size))
            except UserError:
                continue
    if len(frames) < count:
        raise _too_few(len(frames), count, f"{folder} (readable images)")
    return np.stack(frames)


def _face_cropper(size: int):
    """frame -> list of face crops (streaming face stage), or None when it is unavailable."""
    try:
        from stargan_rt.stream.faces import FaceStage

        # Haar: a build needs no downloaded detector; both detectors give the same framing
        stage = FaceStage(size, every=1, detector="haar")
    except Exception:  # the stream module is optional here
        return None

    def crops(frame: np.ndarray) -> list[np.ndarray]:
        return list(stage.crops(frame)[1])

    return crops


def _from_video(path: Path, size: int, count: int) -> np.ndarray:
    import cv2

    from stargan_rt.imaging import fit_to_model

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise UserError(f"{path}: cannot open as a video (unsupported codec or corrupt file); "
                        "pass a directory of face images instead")
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        frames_all = []
        if total <= 0:  # unknown length: read everything
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                frames_all.append(frame)
            picks = np.linspace(0, len(frames_all) - 1, min(count, len(frames_all))).round()
            raw = [frames_all[int(i)] for i in picks] if frames_all else []
        else:
            raw = []
            wanted = set(np.linspace(0, total - 1, min(count, total)).round().astype(int).tolist())
            index = 0
            while len(raw) < len(wanted):
                ok, frame = cap.read()
                if not ok:
                    break
                if index in wanted:
                    raw.append(frame)
                index += 1
    finally:
        cap.release()
    cropper = _face_cropper(size)
    frames = []
    for frame in raw:
        faces = cropper(frame) if cropper else []
        frames.append(faces[0] if faces else fit_to_model(frame, size))
    if len(frames) < count:
        raise _too_few(len(frames), count, f"{path} (distinct frames)")
    return np.stack(frames)[:count]


CALIBRATION_SEED = 90_001  # a seed of its own: not the faces the demo models were trained on


def synthetic_faces(size: int, count: int, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """uint8 (count, size, size, 3) BGR faces from the built-in renderer (stargan_rt.synth)."""
    from stargan_rt.synth import make_face

    return np.stack([make_face(seed, index, size)[1] for index in range(count)])


def load_calibration_frames(source: str | os.PathLike | None, size: int,
                            count: int = MIN_CALIBRATION_FRAMES) -> np.ndarray:
    """uint8 (count, size, size, 3) BGR calibration frames from DIR, VIDEO or the demo data."""
    if count < 1:
        raise UserError(f"calibration frame count must be positive, got {count}")
    if source is None:
        return synthetic_faces(size, count)
    path = Path(source)
    if path.is_dir():
        return _from_directory(path, size, count)
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES or path.suffix == "":
            return _from_video(path, size, count)
        raise UserError(f"{path}: --calib takes a directory of face images or a video file "
                        f"({', '.join(sorted(VIDEO_SUFFIXES))}); got a {path.suffix} file")
    raise UserError(f"{path}: no such calibration directory or video; pass --calib DIR|VIDEO "
                    "or leave it out to use the built-in synthetic faces")


# -- every graph input for calibration ----------------------------------------------------------
MASK_FRAMES = 64


def _sibling(fp32_path: Path, network: str, meta: dict) -> Path | None:
    """Another exported graph of the same bundle and I/O variant in the same directory."""
    for candidate in sorted(fp32_path.parent.glob("*.onnx")):
        if candidate == fp32_path:
            continue
        try:
            other = get_metadata(onnx.load(str(candidate), load_external_data=False))
        except Exception:
            continue
        if (other.get("network") == network and other.get("bundle_hash") == meta.get("bundle_hash")
                and other.get("precision") == "fp32" and other.get("adain_fused") != "1"
                and other.get("io") in (meta.get("io"), None)):
            return candidate
    return None


def calibration_feeds(fp32_path: Path, model: onnx.ModelProto, frames: np.ndarray,
                      aux: dict[str, np.ndarray] | None = None, seed: int = 0) -> dict:
    """Every graph input for len(frames) samples: frames as the image, the rest from ``aux``,
    sibling graphs (v2 styles from the mapping network, masks from the FAN) or sampled."""
    from stargan_rt.imaging import bgr_to_unit_nchw

    meta = get_metadata(model)
    contract = json.loads(meta["contract"]) if "contract" in meta else None
    if contract is None:
        raise UserError(f"{fp32_path}: no stargan-rt I/O contract in the ONNX metadata; "
                        "calibrate graphs made by `stargan-rt export`")
    count = len(frames)
    io = meta.get("io", "uint8")
    image = frames if io == "uint8" else bgr_to_unit_nchw(frames)
    rng = np.random.default_rng(seed)
    domains = json.loads(meta.get("domains", "[]")) or ["?"]
    feeds: dict[str, np.ndarray] = {}
    aux = dict(aux or {})
    for spec in contract["inputs"]:
        name, shape = spec["name"], spec["shape"]
        if name in aux:
            value = np.asarray(aux[name])
            feeds[name] = value[np.arange(count) % len(value)]
        elif name == "image":
            feeds[name] = image
        elif name == "labels":
            feeds[name] = (rng.random((count, shape[1])) < 0.5).astype(np.float32)
        elif name == "domain":
            feeds[name] = (np.arange(count) % len(domains)).astype(np.int64)
        elif name == "z":
            feeds[name] = rng.standard_normal((count, shape[1])).astype(np.float32)
        elif name == "style":
            mapping = _sibling(fp32_path, "mapping_network", meta)
            if mapping is not None:
                z = rng.standard_normal((count, json.loads(meta["config"])["latent_dim"]))
                y = (np.arange(count) % len(domains)).astype(np.int64)
                feeds[name] = run_batched(mapping, {"z": z.astype(np.float32), "domain": y})[0]
            else:
                feeds[name] = rng.standard_normal((count, shape[1])).astype(np.float32)
        elif name.startswith("mask_"):
            continue  # filled below, both masks from one FAN run
        else:
            raise UserError(f"{fp32_path}: no calibration data for input {name!r}; pass it in "
                            "calib_inputs")
    mask_names = [s["name"] for s in contract["inputs"] if s["name"].startswith("mask_")
                  and s["name"] not in feeds]
    if mask_names:
        fan = _sibling(fp32_path, "fan", meta)
        if fan is not None:
            session = cpu_session(fan)
            # The FAN costs ~0.5 s and ~0.5 GB per frame on a CPU: run it in pairs, on at most
            # MASK_FRAMES frames; further frames reuse those masks (only the ranges matter).
            distinct = min(count, MASK_FRAMES)
            masks = []
            for start in range(0, distinct, 2):
                masks.append(session.run(None, {"image": image[start:min(start + 2, distinct)]}))
            index = np.arange(count) % distinct
            feeds["mask_face"] = np.concatenate([m[0] for m in masks])[index]
            feeds["mask_inner"] = np.concatenate([m[1] for m in masks])[index]
        else:
            for name in mask_names:
                feeds[name] = np.ones((count, 1, 256, 256), np.float32) * 0.5
    return feeds
