"""Which implementation of the resampling ops runs (`SOUNDVJ_OPS=reference|fast`)."""

from __future__ import annotations

import os

from core.errors import SoundvjError

CHOICES = ("reference", "fast")


def requested_backend() -> str:
    value = os.environ.get("SOUNDVJ_OPS", "reference").strip().lower() or "reference"
    if value not in CHOICES:
        raise SoundvjError(f"SOUNDVJ_OPS={value!r}: expected one of {', '.join(CHOICES)}")
    return value


def describe_backend() -> str:
    return f"ops backend: {requested_backend()} (pure PyTorch reference ops; nothing compiled)"
