"""The output screen: a frameless window showing only the picture, fullscreen on a chosen screen,
while the controls stay on the other."""

from __future__ import annotations

from PyQt6 import QtCore, QtGui, QtWidgets

from visualizer.frame_view import DEFAULT_VIEW_FILTER, FrameView


class OutputWindow(QtWidgets.QWidget):
    """A frameless window showing only the picture (`view`), for a projector or a second screen."""
    def __init__(self, use_gl: bool = True, view_filter: str = DEFAULT_VIEW_FILTER) -> None:
        super().__init__(None, QtCore.Qt.WindowType.Window | QtCore.Qt.WindowType.FramelessWindowHint)
        self.setWindowTitle("soundvj output")
        self.setStyleSheet("background: black")
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.view = FrameView(self, use_gl=use_gl, view_filter=view_filter)
        layout.addWidget(self.view)
        self.resize(640, 640)

    def show_on_screen(self, index: int, fullscreen: bool = True) -> None:
        """Show on screen `index` (the primary screen if there is no such screen), fullscreen or not."""
        screens = QtGui.QGuiApplication.screens()
        screen = screens[index] if 0 <= index < len(screens) else QtGui.QGuiApplication.primaryScreen()
        self.setScreen(screen)
        self.setGeometry(screen.geometry())
        if fullscreen:
            self.showFullScreen()
        else:
            self.show()
        self.raise_()

    def leave_fullscreen(self) -> None:
        if self.isFullScreen():
            self.showNormal()
            self.resize(640, 640)
