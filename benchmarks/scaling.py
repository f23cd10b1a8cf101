"""Scaling a model frame up to a projector: the CPU scaler's speed, and the before/after pictures.

    python benchmarks/scaling.py                          # speed of core.frame_scaling against bilinear
    python benchmarks/scaling.py --pictures docs          # also docs/scaling-before-after.png
    xvfb-run -a -s "-screen 0 1920x1200x24" python benchmarks/scaling.py --pictures docs --window
                                                          # and docs/output-window-filters.png

The picture is one frame of the embedded default model (64 px), made from the demo walk (the birds
section, a forest: the most detail of the six classes), shown at 1080x1080: nearest, linear (what the
output window and `render --size` did before) and Lanczos-3 (what the stream, NDI and `render --size`
do now), side by side the same 360 px crop of each, where the frame has the most detail. `--window` draws the same frame in the real output window (vispy, OpenGL) at 1080x1080 with
the old linear filter and the new default (Catmull-Rom bicubic) and saves the same crop of both.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.audio.demo_walk import demo_walk, demo_walk_sections  # noqa: E402
from core.frame_scaling import scale_rgb_to_cover, scale_to_cover  # noqa: E402
from core.model import load_model  # noqa: E402
from core.params import Params  # noqa: E402
from core.pipeline import FramePipeline  # noqa: E402
from core.video_writer import to_uint8_rgb  # noqa: E402

SHOWN = 1080  # the frame is shown at SHOWN x SHOWN, as on a 1080p projector
CROP = 360  # each panel of the picture: this square from the middle of the shown frame
GAP = 6  # white pixels between the panels


def timed_ms(work, repeat: int = 20) -> float:
    work()
    start = time.perf_counter()
    for _ in range(repeat):
        work()
    return (time.perf_counter() - start) / repeat * 1000


def speed(threads: int) -> None:
    torch.set_num_threads(threads)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    frame = torch.rand(1, 3, 64, 64) * 2 - 1
    for width, height in ((1280, 720), (1920, 1080)):
        ours = timed_ms(lambda: scale_rgb_to_cover(image, width, height))
        as_float = timed_ms(lambda: scale_to_cover(frame, width, height))
        side = max(width, height)
        bilinear = timed_ms(lambda: F.interpolate(frame, size=(side, side), mode="bilinear", align_corners=False))
        print(f"64 px -> {width}x{height}, {threads} thread(s): Lanczos-3 uint8 RGB {ours:.1f} ms, "
              f"float frame {as_float:.1f} ms; bilinear (float, uncropped) {bilinear:.1f} ms")


def model_frame() -> np.ndarray:
    """One frame of the embedded model (uint8 RGB), 5 s into the demo walk's birds section."""
    os.environ.pop("SOUNDVJ_DEFAULT_MODEL", None)
    model = load_model(None, device="cpu")
    pipeline = FramePipeline(model, Params(fps=24))
    windower = pipeline.make_windower()
    sr = model.mel_config.sample_rate
    start = next(begin for name, begin, _ in demo_walk_sections() if name == "birds")
    audio = demo_walk(sr)[: int((start + 5.0) * sr)]
    windows = [w.mel for w in windower.push(audio)]
    frames = pipeline.step_batch(torch.stack(windows[-48:]))  # two seconds, so the recurrent state settles
    print(f"model: {model.source}, {model.generator.img_resolution} px")
    return to_uint8_rgb(frames[-1]).numpy()


def side_by_side(panels: list[np.ndarray]) -> np.ndarray:
    gap = np.full((CROP, GAP, 3), 255, np.uint8)
    row = [panels[0]]
    for panel in panels[1:]:
        row += [gap, panel]
    return np.concatenate(row, axis=1)


def detailed_corner(frame: np.ndarray) -> tuple[int, int]:
    """(top, left) in the shown frame of the CROP square where the source frame has the most detail."""
    pixels = frame.astype(np.float64)
    detail = np.zeros(frame.shape[:2])
    detail[1:] += np.abs(np.diff(pixels, axis=0)).sum(axis=2)
    detail[:, 1:] += np.abs(np.diff(pixels, axis=1)).sum(axis=2)
    scale = SHOWN / frame.shape[0]
    size = int(CROP / scale)
    best = max(((detail[t: t + size, l: l + size].sum(), t, l) for t in range(frame.shape[0] - size)
                for l in range(frame.shape[1] - size)))
    return int(best[1] * scale), int(best[2] * scale)


def cropped(image: np.ndarray, corner: tuple[int, int]) -> np.ndarray:
    top, left = corner
    return np.ascontiguousarray(image[top: top + CROP, left: left + CROP])


def save_png(image: np.ndarray, path: Path) -> None:
    from PyQt6 import QtGui  # only for writing the PNG (the live extra has it)

    h, w, _ = image.shape
    data = np.ascontiguousarray(image)
    qimage = QtGui.QImage(data.tobytes(), w, h, 3 * w, QtGui.QImage.Format.Format_RGB888)
    if not qimage.save(str(path)):
        sys.exit(f"{path}: could not save")
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB)")


def pictures(folder: Path, frame: np.ndarray) -> None:
    source = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    nearest = F.interpolate(source, size=(SHOWN, SHOWN), mode="nearest")
    linear = F.interpolate(source, size=(SHOWN, SHOWN), mode="bilinear", align_corners=False)
    as_uint8 = [t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy() for t in (nearest, linear)]
    lanczos = scale_rgb_to_cover(frame, SHOWN, SHOWN)
    corner = detailed_corner(frame)
    save_png(side_by_side([cropped(x, corner) for x in (*as_uint8, lanczos)]), folder / "scaling-before-after.png")


def window_pictures(folder: Path, frame: np.ndarray) -> None:
    from PyQt6 import QtWidgets

    from visualizer.output_window import OutputWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    shots = []
    for view_filter in ("linear", "catrom"):
        window = OutputWindow(view_filter=view_filter)
        window.resize(SHOWN, SHOWN)
        window.show()
        for _ in range(20):
            app.processEvents()
        window.view.show_frame(frame)
        for _ in range(20):
            app.processEvents()
        if window.view.backend != "vispy":
            sys.exit("--window: OpenGL did not start (the filters are GPU kernels)")
        shown = window.view.grab_rgb()
        if shown.shape[:2] != (SHOWN, SHOWN):
            sys.exit(f"--window: the output window is {shown.shape[1]}x{shown.shape[0]}, not {SHOWN}x{SHOWN}")
        shots.append(cropped(shown, detailed_corner(frame)))
        window.close()
        window.deleteLater()
        app.processEvents()
    save_png(side_by_side(shots), folder / "output-window-filters.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pictures", type=Path, default=None, metavar="DIR", help="write the before/after picture here")
    ap.add_argument("--window", action="store_true", help="also the output window's pictures (needs a display)")
    ap.add_argument("--no-speed", action="store_true", help="skip the timing")
    args = ap.parse_args()
    if not args.no_speed:
        for threads in (1, 2):
            speed(threads)
    if args.pictures is not None:
        frame = model_frame()
        pictures(args.pictures, frame)
        if args.window:
            window_pictures(args.pictures, frame)


if __name__ == "__main__":
    main()
