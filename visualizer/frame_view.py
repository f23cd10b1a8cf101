"""The picture: the newest frame drawn by vispy as a GPU texture, aspect kept (letterboxed).

A 64 px frame fills a 1080p projector at about 17 times its size. The texture is scaled on the GPU
with a filter kernel (`VIEW_FILTERS`): Catmull-Rom bicubic by default, smooth where the GPU's own
linear filtering shows the pixel grid as creases and diamonds, and sharp where a blur would smear.
Spline36 and Lanczos read more texels per pixel (36, 64) for a little more sharpness; linear and
nearest are the cheapest, for software OpenGL on a busy CPU, and nearest is the look of big square
pixels when that is what a set wants. All of them run under Mesa's llvmpipe too.

Where OpenGL cannot start (a machine without GL), a QLabel pixmap view takes its place with the same
interface, so the instrument still plays; `backend` says which one runs (Qt's smooth scaling there).
"""

from __future__ import annotations

import numpy as np
from PyQt6 import QtCore, QtGui, QtWidgets

from core.errors import SoundvjError

# vispy's names of the GPU scaling kernels offered, cheapest first, with what the menu calls them.
VIEW_FILTERS = {"nearest": "Nearest (pixels as blocks)", "linear": "Linear", "catrom": "Bicubic (Catmull-Rom)",
                "spline36": "Spline36", "lanczos": "Lanczos"}
DEFAULT_VIEW_FILTER = "catrom"


def check_view_filter(name: str) -> str:
    """`name` if it is one of VIEW_FILTERS, else a one-line SoundvjError listing them."""
    if name not in VIEW_FILTERS:
        raise SoundvjError(f"picture filter {name!r}: expected one of {', '.join(VIEW_FILTERS)}")
    return name


class FrameView(QtWidgets.QWidget):
    """`show_frame(uint8 [H, W, 3])` draws; `grab_rgb()` returns what is on screen as uint8 [h, w, 3]."""

    def __init__(self, parent: QtWidgets.QWidget | None = None, use_gl: bool = True,
                 view_filter: str = DEFAULT_VIEW_FILTER) -> None:
        super().__init__(parent)
        self.view_filter = check_view_filter(view_filter)
        self.setMinimumSize(160, 160)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._shape: tuple[int, ...] | None = None
        self._image = None
        self._label: QtWidgets.QLabel | None = None
        self._last: np.ndarray | None = None
        self.backend = "none"
        if use_gl:
            try:
                self._init_vispy(layout)
            except Exception as e:  # noqa: BLE001 - no GL here: fall back, say so
                self.gl_error = f"{type(e).__name__}: {e}"
                self._canvas = None
        if self.backend == "none":
            self._init_label(layout)
        self.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)

    def _init_vispy(self, layout: QtWidgets.QVBoxLayout) -> None:
        # torch imports its compiler stack (and with it triton's LLVM) lazily, on the first model built on
        # the meta device; loading it after OpenGL has loaded Mesa's llvmpipe (LLVM too) crashes the
        # process. So it loads first, whatever order the window and the model loads come in.
        import torch._dynamo  # noqa: F401

        # vispy loads only when OpenGL is asked for: with --no-gl (or no GL at all) the QLabel view plays.
        import vispy

        vispy.use("pyqt6")
        from vispy import scene

        self._canvas = scene.SceneCanvas(keys=None, bgcolor="black", parent=self)
        self._view = self._canvas.central_widget.add_view()
        self._view.camera = scene.PanZoomCamera(aspect=1)
        self._view.camera.flip = (False, True, False)  # image rows go down
        self._view.camera.interactive = False
        self._scene = scene
        layout.addWidget(self._canvas.native)
        self.backend = "vispy"

    def _init_label(self, layout: QtWidgets.QVBoxLayout) -> None:
        self._label = QtWidgets.QLabel(self)
        self._label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self._label.setStyleSheet("background: black")
        self._label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Ignored)
        layout.addWidget(self._label)
        self.backend = "qlabel"

    def show_frame(self, rgb: np.ndarray) -> None:
        """Draw `rgb` (uint8 [H, W, 3]), scaled to fit with its aspect kept."""
        self._last = rgb
        if self.backend == "vispy":
            if self._image is None or self._shape != rgb.shape:
                if self._image is not None:
                    self._image.parent = None
                self._image = self._scene.visuals.Image(rgb, parent=self._view.scene, interpolation=self.view_filter)
                self._view.camera.set_range(x=(0, rgb.shape[1]), y=(0, rgb.shape[0]), margin=0)
                self._shape = rgb.shape
            else:
                self._image.set_data(rgb)
            self._canvas.update()
        else:
            self._update_label()

    def set_view_filter(self, name: str) -> None:
        """Scale the picture with GPU kernel `name` (one of VIEW_FILTERS) from the next draw on."""
        self.view_filter = check_view_filter(name)
        if self._image is not None:
            self._image.interpolation = name
            self._canvas.update()

    def _update_label(self) -> None:
        if self._last is None or self._label is None:
            return
        h, w, _ = self._last.shape
        qimage = QtGui.QImage(self._last.tobytes(), w, h, 3 * w, QtGui.QImage.Format.Format_RGB888)
        pixmap = QtGui.QPixmap.fromImage(qimage).scaled(
            self._label.size(), QtCore.Qt.AspectRatioMode.KeepAspectRatio,
            QtCore.Qt.TransformationMode.SmoothTransformation,
        )
        self._label.setPixmap(pixmap)

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        if self.backend == "qlabel":
            self._update_label()

    def grab_rgb(self) -> np.ndarray:
        """What this view shows now, as uint8 RGB (from the GL framebuffer when vispy draws)."""
        if self.backend == "vispy":
            return np.ascontiguousarray(self._canvas.render()[..., :3])
        image = self.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
        ptr = image.constBits()
        ptr.setsize(image.sizeInBytes())
        arr = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())
        return arr[:, : image.width() * 3].reshape(image.height(), image.width(), 3).copy()
