"""Whether a window can open at all: checked before the model loads, so a missing display is a
one-line error and exit 2 instead of Qt aborting the process. No Qt is imported here."""

from __future__ import annotations

import os
import sys

from core.errors import SoundvjError


def check_display() -> None:
    """Raise `SoundvjError` (one line) when on Linux no display is set (X11, Wayland or a Qt platform
    plugin named by QT_QPA_PLATFORM); elsewhere Qt finds the desktop by itself."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")
    ):
        raise SoundvjError("live: no display (DISPLAY is not set); run it in a desktop session or under xvfb-run")
