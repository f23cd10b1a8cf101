"""Each class's look as a function of time: a slow pan/zoom over a random crop of one of its photographs
(rain: with falling rain drawn over it), or one of its procedural scenes. A training image is a look at
one random moment; a clip's frames are the same look at successive moments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import SoundvjError
from training.data.demo import scenes
from training.data.demo.sources import PHOTO_SHARE, PhotoSource, photos_of

# Photographs are decoded once at about this width (the packages ship up to 5120 px).
PHOTO_WIDTH = 1280
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Photo:
    source: PhotoSource
    file: Path  # the picture used (a wallpaper ships several sizes)
    pixels: np.ndarray  # float32 [H, W, 3] in [0, 1]


def pick_picture(folder: Path) -> Path:
    """The landscape picture of a wallpaper closest to PHOTO_WIDTH from above (else the largest)."""
    images = folder / "contents" / "images"
    files = sorted(p for p in images.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if images.is_dir() else []
    if not files:
        raise SoundvjError(f"{images}: no pictures (.jpg/.png); expected the wallpaper's contents/images/")

    def dims(p: Path) -> tuple[int, int]:
        try:
            w, h = (int(v) for v in p.stem.split("x"))
            return w, h
        except ValueError:
            return 0, 0

    landscape = [p for p in files if dims(p)[0] >= dims(p)[1] > 0] or files
    wide_enough = [p for p in landscape if dims(p)[0] >= PHOTO_WIDTH]
    return min(wide_enough, key=lambda p: dims(p)[0]) if wide_enough else max(landscape, key=lambda p: dims(p)[0])


def load_photo(source: PhotoSource, root: Path) -> Photo:
    from PIL import Image, UnidentifiedImageError

    path = pick_picture(root / source.folder)
    try:
        with Image.open(path) as im:
            im.draft("RGB", (PHOTO_WIDTH, PHOTO_WIDTH))
            im = im.convert("RGB")
            if im.width > PHOTO_WIDTH:
                im = im.resize((PHOTO_WIDTH, round(im.height * PHOTO_WIDTH / im.width)), Image.Resampling.LANCZOS)
            pixels = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as e:
        raise SoundvjError(f"{path}: cannot be read as a picture ({e})") from None
    return Photo(source, path, pixels)


def _crop(im, box: tuple[float, float, float, float], size: int, flip: bool) -> np.ndarray:
    from PIL import Image

    out = np.asarray(im.resize((size, size), Image.Resampling.LANCZOS, box=box), dtype=np.float32) / 255.0
    return out[:, ::-1] if flip else out


def photo_look(photo: Photo, rng: np.random.Generator, size: int) -> scenes.Scene:
    """A square crop (20-60 % of the picture's height band) drifting and zooming slowly over time."""
    h, w = photo.pixels.shape[:2]
    top, bottom = photo.source.top * h, photo.source.bottom * h
    band = bottom - top
    side = rng.uniform(0.2, 0.6) * min(band, w)
    x0 = rng.uniform(0, w - side)
    y0 = rng.uniform(top, bottom - side)
    drift = rng.uniform(-0.04, 0.04, 2) * side  # pixels per second
    zoom = rng.uniform(-0.03, 0.03)  # relative change of the side per second
    flip = bool(rng.random() < 0.5)
    gain = rng.uniform(0.9, 1.1)
    # Small crops only: the frame is cut from a region around the crop, not the whole picture.
    margin = side * 0.6
    rx0, ry0 = max(0, int(x0 - margin)), max(0, int(y0 - margin))
    rx1, ry1 = min(w, int(x0 + side + margin) + 1), min(h, int(y0 + side + margin) + 1)
    from PIL import Image

    region = Image.fromarray((photo.pixels[ry0:ry1, rx0:rx1] * 255 + 0.5).astype(np.uint8))

    def draw(t: float) -> np.ndarray:
        s = side * (1 + zoom * t)
        cx = x0 + side / 2 + drift[0] * t
        cy = y0 + side / 2 + drift[1] * t
        left = float(np.clip(cx - s / 2, rx0, rx1 - s)) - rx0
        upper = float(np.clip(cy - s / 2, ry0, ry1 - s)) - ry0
        s = min(s, rx1 - rx0, ry1 - ry0)
        return np.clip(_crop(region, (left, upper, left + s, upper + s), size, flip) * gain, 0, 1)

    return draw


def class_look(label: str, rng: np.random.Generator, size: int, photos: dict[str, list[Photo]]) -> tuple[scenes.Scene, str]:
    """(look at time t, what it is: the photograph's wallpaper name or 'procedural') for one item."""
    share = PHOTO_SHARE.get(label, 0.0)
    available = photos.get(label, [])
    use_photo = bool(available) and (share >= 1.0 or rng.random() < share)
    if use_photo:
        photo = available[int(rng.integers(len(available)))]
        look = photo_look(photo, rng, size)
        origin = photo.source.wallpaper
    elif label in scenes.PROCEDURAL:
        look = scenes.PROCEDURAL[label](rng, size)
        origin = "procedural"
    else:
        raise SoundvjError(f"class {label!r}: no photographs loaded and no procedural scene")
    if label == "rain":
        overlay = scenes.rain_overlay(rng, size)
        base = look

        def look(t: float) -> np.ndarray:
            return overlay(base(t), t)

    return look, origin


def load_photos(root: Path, labels: tuple[str, ...]) -> dict[str, list[Photo]]:
    return {label: [load_photo(p, root) for p in photos_of(label)] for label in labels}
