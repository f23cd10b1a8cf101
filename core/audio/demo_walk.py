"""The recorded demo walk: real recordings of six sound classes in turn (`core/assets/demo_walk.opus`).

`soundvj render --demo` plays it so the first video a user makes shows the picture following what the
sound is: birds, wind, rain, engine, fire, night, 7 s each with 1 s crossfades. It is cut by
`soundvj data demo` from the recordings of sources the demo model never trained on (credits:
`core/assets/CREDITS.md`); `demo_walk.txt` holds each class's start. Without the asset (a trimmed
install) callers fall back to the synthesised soundscape of `core.audio.demo`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.audio.decode import load_mono
from core.errors import SoundvjError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMO_WALK = ASSETS / "demo_walk.opus"
DEMO_WALK_SECTIONS = ASSETS / "demo_walk.txt"


def demo_walk_available() -> bool:
    return DEMO_WALK.is_file()


def demo_walk(sample_rate: int = 44100) -> torch.Tensor:
    """The walk as mono float32 [n] at `sample_rate`."""
    if not DEMO_WALK.is_file():
        raise SoundvjError(f"{DEMO_WALK}: the demo walk is missing from this installation")
    return load_mono(DEMO_WALK, sample_rate)


def demo_walk_sections() -> list[tuple[str, float, float]]:
    """(class, start, end) in seconds, from `demo_walk.txt` (a start is the middle of the crossfade)."""
    starts: list[tuple[float, str]] = []
    total = None
    for line in DEMO_WALK_SECTIONS.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith("# total"):
            total = float(text.split()[2])
        elif text and not text.startswith("#"):
            at, name = text.split(maxsplit=1)
            starts.append((float(at), name))
    if total is None or not starts:
        raise SoundvjError(f"{DEMO_WALK_SECTIONS}: expected 'START CLASS' lines and a '# total S s' line")
    ends = [s for s, _ in starts[1:]] + [total]
    return [(name, start, end) for (start, name), end in zip(starts, ends)]
