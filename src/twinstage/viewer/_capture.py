"""Images and videos of a view: PNG screenshots and frame-by-frame videos (imageio; .mp4 with
imageio-ffmpeg, .gif with Pillow). The frames come from a callable, so nothing here touches the GPU."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._env import ViewerUnavailable

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm")


def write_png(path: str | os.PathLike[str], img: np.ndarray) -> None:
    """Write an (H, W, 3 or 4) uint8 image as PNG (RGB), making its folder."""
    import imageio.v3 as iio

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, img[..., :3])


def write_video(path: str | os.PathLike[str], frames: int, frame: Callable[[float], np.ndarray], *, fps: float = 10.0,
                step: Callable[[int], Any] | None = None, playback: Any = None) -> Path:
    """Write ``frames`` images ``frame(t)`` (``t = i / fps``, the effect clock) to ``path``.

    ``step(i)`` runs before frame ``i``; without one, a ``playback`` advances by ``rate/fps`` ticks a frame.
    """
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if step is None and playback is not None:
        pb = playback
        per = max(1, int(round(pb.rate * pb.speed / fps)))
        def step(i: int) -> None:
            pb.seek(min(i * per, len(pb) - 1))
    if path.suffix.lower() in VIDEO_SUFFIXES:
        import importlib.util

        if importlib.util.find_spec("imageio_ffmpeg") is None:
            raise ViewerUnavailable(f"{path}: writing {path.suffix} needs imageio-ffmpeg (pip install imageio-ffmpeg); "
                                    "or write a .gif")
        writer = imageio.get_writer(str(path), fps=fps, codec="libx264", quality=7, macro_block_size=8)
    else:
        writer = imageio.get_writer(str(path), mode="I", duration=1000.0 / fps, loop=0)
    try:
        for i in range(frames):
            if step is not None:
                step(i)
            img = frame(i / fps)
            writer.append_data(img[..., :3])
    finally:
        writer.close()
    return path


__all__ = ["write_png", "write_video"]
