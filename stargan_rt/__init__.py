"""stargan-rt: StarGAN v1/v2 compiled for edge devices."""
import os as _os

__version__ = "0.1.0"

# OpenCV reads these once, when it loads, so they are set here, before any module imports cv2:
# - OPENCV_IO_MAX_IMAGE_PIXELS: backstop for imaging.MAX_IMAGE_PIXELS (checked from the header
#   of the common formats); larger images of every other format are refused before allocation.
# - the log levels: FFmpeg's and OpenCV's own warnings ("moov atom not found", one "Failed to
#   write frame" per frame on a full disk) would bury the one-line errors stargan-rt prints.
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "50000000")
_os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
