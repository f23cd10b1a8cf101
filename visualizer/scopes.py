"""pyqtgraph scopes: the mel window the model sees (scrolling as time goes on) and an input level meter
with a clip light."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtWidgets

CLIP_HOLD_SECONDS = 1.5
METER_FLOOR_DB = -60.0


class MelScope(pg.PlotWidget):
    """The newest window ([n_mels, W], values in [0, 1]): time runs left to right, low bands at the bottom."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMenuEnabled(False)
        self.setMouseEnabled(False, False)
        self.hideButtons()
        self.setLabel("left", "mel band")
        self.setLabel("bottom", "window (mel frames, newest right)")
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setColorMap(pg.colormap.get("inferno"))
        self.addItem(self.image)
        self.setFixedHeight(150)
        self.last: np.ndarray | None = None

    def show_window(self, mel: np.ndarray) -> None:
        """Show the mel window `mel` ([n_mels, W], values in [0, 1])."""
        self.last = mel
        self.image.setImage(mel, levels=(0.0, 1.0), autoLevels=False)
        self.setRange(xRange=(0, mel.shape[1]), yRange=(0, mel.shape[0]), padding=0)


class LevelMeter(pg.PlotWidget):
    """Peak and RMS in dBFS as two bars; the clip light stays red for a moment after a peak >= 0 dBFS."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMenuEnabled(False)
        self.setMouseEnabled(False, False)
        self.hideButtons()
        self.setFixedSize(110, 150)
        self.setYRange(METER_FLOOR_DB, 0, padding=0)
        self.setXRange(-0.5, 2.5, padding=0)
        self.getAxis("bottom").setTicks([[(0, "pk"), (1, "rms"), (2, "clip")]])
        self.bars = pg.BarGraphItem(x=[0, 1], height=[0, 0], y0=METER_FLOOR_DB, width=0.8, brush="g")
        self.clip = pg.BarGraphItem(x=[2], height=[-METER_FLOOR_DB], y0=METER_FLOOR_DB, width=0.8, brush=(40, 40, 40))
        self.addItem(self.bars)
        self.addItem(self.clip)
        self._clip_until = 0.0
        self.clipping = False

    @staticmethod
    def to_db(x: float) -> float:
        """`x` (linear amplitude) in dB, floored at METER_FLOOR_DB."""
        return max(METER_FLOOR_DB, 20 * math.log10(x)) if x > 0 else METER_FLOOR_DB

    def show_level(self, peak: float, rms: float, clipped: bool, now: float) -> None:
        """Show peak and RMS (linear) in dB; a clip keeps the light red for CLIP_HOLD_SECONDS."""
        heights = [self.to_db(peak) - METER_FLOOR_DB, self.to_db(rms) - METER_FLOOR_DB]
        self.bars.setOpts(height=heights)
        if clipped:
            self._clip_until = now + CLIP_HOLD_SECONDS
        clipping = now < self._clip_until
        if clipping != self.clipping:
            self.clipping = clipping
            self.clip.setOpts(brush="r" if clipping else (40, 40, 40))
