"""Calibration frames for INT8: face crops at the model's size, uint8 BGR (N, S, S, 3).

Sources: a directory of images (each centre-cropped / resized like `translate` does), a video
file (frames sampled evenly over its length, the face crop taken by the streaming face stage, or
the centre square when no face is found), or None: the built-in synthetic face data
(`stargan_train.synth`, the same generator `stargan-rt data synth` uses), made in memory.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stargan_rt.errors import UserError

MIN_CALIBRATION_FRAMES = 256
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


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

        stage = FaceStage(size, every=1)
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
    """Built-in demo faces from stargan_train.synth (the `stargan-rt data synth` renderer); the
    simple drawn faces below when the training package is not installed."""
    try:
        from stargan_train.synth import make_face
    except ImportError:
        return drawn_faces(size, count, seed)
    frames = np.empty((count, size, size, 3), np.uint8)
    for index in range(count):
        image = make_face(seed, index, size)[1]
        if image.shape != (size, size, 3):
            import cv2

            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        frames[index] = image
    return frames


def drawn_faces(size: int, count: int, seed: int = 0) -> np.ndarray:
    """Simple face-like pictures (skin-toned head, hair, eyes, brows, mouth, shading, noise).

    A fallback for calibration when the training package (stargan_train) is not installed, and a
    quick source of face-like test images: smooth regions, edges and skin colours like faces, not
    like random noise.
    """
    import cv2

    rng = np.random.default_rng(seed)
    frames = np.empty((count, size, size, 3), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(count):
        bg = rng.uniform(40, 220, 3)
        grad = (0.7 + 0.3 * yy)[..., None]
        img = (bg * grad).astype(np.float32)
        tone = rng.uniform(0.3, 1.0)  # dark to light skin, BGR
        skin = np.array([45 + 110 * tone, 65 + 125 * tone, 95 + 140 * tone]) + rng.normal(0, 6, 3)
        glasses = rng.random() < 0.25
        hair = rng.uniform(10, 200) * np.array([rng.uniform(.5, 1), rng.uniform(.6, 1), 1.0])
        cx, cy = size * rng.uniform(0.45, 0.55), size * rng.uniform(0.5, 0.58)
        ax, ay = size * rng.uniform(0.24, 0.3), size * rng.uniform(0.32, 0.38)
        s = lambda v: int(round(v))  # noqa: E731
        cv2.ellipse(img, (s(cx), s(cy - ay * 0.25)), (s(ax * 1.15), s(ay * 1.05)), 0, 180, 360,
                    hair.tolist(), -1, cv2.LINE_AA)
        cv2.ellipse(img, (s(cx), s(cy)), (s(ax), s(ay)), 0, 0, 360, skin.tolist(), -1,
                    cv2.LINE_AA)
        cv2.ellipse(img, (s(cx), s(cy - ay * 0.75)), (s(ax * 1.02), s(ay * 0.35)), 0, 180, 360,
                    hair.tolist(), -1, cv2.LINE_AA)
        eye_y, eye_dx = cy - ay * 0.15, ax * 0.42
        for sign in (-1, 1):
            ex = cx + sign * eye_dx
            cv2.ellipse(img, (s(ex), s(eye_y)), (s(ax * 0.17), s(ay * 0.07)), 0, 0, 360,
                        (235, 235, 235), -1, cv2.LINE_AA)
            cv2.circle(img, (s(ex), s(eye_y)), max(1, s(ax * 0.07)),
                       rng.uniform(20, 120, 3).tolist(), -1, cv2.LINE_AA)
            cv2.line(img, (s(ex - ax * 0.2), s(eye_y - ay * 0.16)),
                     (s(ex + ax * 0.2), s(eye_y - ay * 0.19)), (hair * 0.8).tolist(),
                     max(1, s(size / 48)), cv2.LINE_AA)
            if glasses:
                cv2.circle(img, (s(ex), s(eye_y)), s(ax * 0.26), (30, 30, 30),
                           max(1, s(size / 80)), cv2.LINE_AA)
        cv2.line(img, (s(cx), s(eye_y + ay * 0.1)), (s(cx - ax * 0.08), s(cy + ay * 0.25)),
                 (skin * 0.75).tolist(), max(1, s(size / 64)), cv2.LINE_AA)
        smile = rng.uniform(0, 1)
        cv2.ellipse(img, (s(cx), s(cy + ay * 0.5)), (s(ax * 0.35), s(ay * (0.04 + 0.12 * smile))),
                    0, 0, 180, (70, 60, rng.uniform(120, 200)), max(1, s(size / 40)),
                    cv2.LINE_AA)
        shade = 1.0 - 0.25 * ((xx - cx / size) ** 2 + (yy - cy / size) ** 2)
        img = img * shade[..., None]
        img = cv2.GaussianBlur(img, (0, 0), size / 160 + 0.3)
        img += rng.normal(0, 3, img.shape)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


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
