"""The Output menu's network and picture entries: *Stream to…*, *Stop stream*, *Reconnect stream*,
*NDI output*, and the *Picture filter* that scales the picture on screen, plus the status bar's
line for the stream and NDI.

Every action returns at once: connecting, reconnecting and closing run on the outputs' own threads,
and their problems come back as messages (one line in the window's message line).
"""

from __future__ import annotations

import importlib.util
from typing import Callable

from PyQt6 import QtGui, QtWidgets

from core.errors import SoundvjError
from visualizer.frame_view import DEFAULT_VIEW_FILTER, VIEW_FILTERS
from visualizer.outputs.ndi_sender import DEFAULT_NDI_NAME, NDI_INSTALL_HINT
from visualizer.outputs.stream_sender import URL_HINT, check_stream_url
from visualizer.session import LiveSession

DEFAULT_STREAM_URL = "udp://127.0.0.1:5000"


class OutputActions:
    """Adds the entries to `menu` (the window's Output menu); `say` shows a one-line message and
    `set_view_filter` applies a picture filter to the window's views."""

    def __init__(self, menu: QtWidgets.QMenu, session: LiveSession, say: Callable[[str], None],
                 set_view_filter: Callable[[str], None], parent: QtWidgets.QWidget,
                 view_filter: str = DEFAULT_VIEW_FILTER) -> None:
        self.session = session
        self.say = say
        self.parent = parent
        self.last_url = session.output_config.stream or DEFAULT_STREAM_URL
        menu.addSeparator()
        self.stream_to = menu.addAction("Stream to…", self.ask_stream_url)
        self.stream_to.setToolTip(f"Send the picture as H.264 to a URL: {URL_HINT}")
        self.stop_stream = menu.addAction("Stop stream", lambda: self.session.stop_stream(wait=False))
        self.reconnect = menu.addAction("Reconnect stream", self.session.reconnect_stream)
        self.ndi = menu.addAction("NDI output", self.toggle_ndi)
        self.ndi.setCheckable(True)
        self.ndi_available = importlib.util.find_spec("cyndilib") is not None
        self.ndi.setToolTip(f"Send as the NDI source '{session.output_config.ndi or DEFAULT_NDI_NAME}'"
                            if self.ndi_available else f"NDI needs {NDI_INSTALL_HINT}")
        self.ndi.setEnabled(self.ndi_available)
        menu.addSeparator()
        self.filter_menu = menu.addMenu("Picture filter")
        group = QtGui.QActionGroup(parent)
        self.filter_actions: dict[str, QtGui.QAction] = {}
        for name, label in VIEW_FILTERS.items():
            action = self.filter_menu.addAction(label, lambda name=name: set_view_filter(name))
            action.setCheckable(True)
            action.setChecked(name == view_filter)
            group.addAction(action)
            self.filter_actions[name] = action
        self.refresh()

    def ask_stream_url(self) -> None:
        """Ask for a URL and stream to it (a bad URL: a message, nothing starts)."""
        url, ok = QtWidgets.QInputDialog.getText(self.parent, "Stream to", f"URL ({URL_HINT}):", text=self.last_url)
        if ok and url.strip():
            self.start_stream(url.strip())

    def start_stream(self, url: str) -> None:
        """Stream to `url`, replacing a running stream; a bad URL or no ffmpeg is a message."""
        try:
            check_stream_url(url)
        except SoundvjError as e:
            self.say(str(e))
            return
        self.last_url = url
        if self.session.start_stream(url) is not None:
            self.say(f"{self.session.stream.label}: connecting")
        self.refresh()

    def toggle_ndi(self) -> None:
        """Start or stop the NDI source."""
        if self.session.ndi is not None:
            self.session.stop_ndi(wait=False)
        else:
            self.session.start_ndi(self.session.output_config.ndi or DEFAULT_NDI_NAME)
        self.refresh()

    def status_text(self) -> str:
        """The status bar's line for the outputs ('' when none runs)."""
        parts = [out.status_text() for out in (self.session.stream, self.session.ndi) if out is not None]
        return " | ".join(parts)

    def refresh(self) -> None:
        """Enable the entries that apply now (the window's poll calls this)."""
        stream = self.session.stream
        self.stop_stream.setEnabled(stream is not None)
        self.reconnect.setEnabled(stream is not None)
        self.ndi.setChecked(self.session.ndi is not None)
