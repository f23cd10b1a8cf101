"""The MIDI port picker: a menu of the session's MIDI input ports, by name, with Rescan and Close.

The ports are listed each time the menu opens (controllers come and go during a set). Choosing one
opens it through the session's `MidiInput` (`open(name)`: a port that is not there is waited for and
opens when it appears); Rescan looks again and reopens a port that came back; the mapping lives in the
dispatcher and is untouched by all of it. A session started without `--midi-port` has no MIDI input:
the menu then says "MIDI: none" and how to get one, and the show plays on.
"""

from __future__ import annotations

from collections.abc import Callable

from PyQt6 import QtWidgets

from visualizer.session import LiveSession

NO_MIDI_INPUT = "MIDI: none (pick a port in Controls > MIDI input, or start with --midi-port NAME)"
STATUS_NAME_CHARS = 24  # a long port name is cut in the status bar (its tooltip has all of it)


def midi_status(session: LiveSession) -> tuple[str, str]:
    """(short text for the status bar, full text for its tooltip) of the session's MIDI input."""
    midi_in = session.midi_in
    if midi_in is None:
        return "MIDI: none", NO_MIDI_INPUT
    full = midi_in.status_text()
    if midi_in.state == "open" and midi_in.port_name:
        name = midi_in.port_name
        short = name if len(name) <= STATUS_NAME_CHARS else name[:STATUS_NAME_CHARS - 1] + "…"
        return f"MIDI: {short}", full
    return f"MIDI: {midi_in.state}", full


class MidiPortMenu(QtWidgets.QMenu):
    """The "MIDI input" menu; see the module docstring. `on_message` shows one line to the performer."""

    def __init__(self, session: LiveSession, on_message: Callable[[str], None],
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("MIDI input", parent)
        self.session = session
        self.on_message = on_message
        self.aboutToShow.connect(self.fill)  # filled when opened: the MIDI input is made on first use

    def fill(self) -> None:
        """List the ports again, the open one ticked, then Rescan and Close port."""
        self.clear()
        midi_in = self.session.midi_input()
        ports = midi_in.list_ports()
        for name in ports:
            action = self.addAction(name)
            action.setCheckable(True)
            action.setChecked(midi_in.state == "open" and name == midi_in.port_name)
            action.triggered.connect(lambda _=False, name=name: self.choose(name))
        if not ports:
            text = midi_in.status_text() if midi_in.state == "unavailable" else "no MIDI input ports"
            self.addAction(text).setEnabled(False)
        self.addSeparator()
        self.addAction("Rescan", self.rescan)
        close = self.addAction("Close port", self.close_port)
        close.setEnabled(midi_in.wanted_port is not None)

    def choose(self, name: str) -> bool:
        """Open port `name` through the session's MIDI input; True if it is open now."""
        opened = self.session.open_midi(name)
        self.on_message(self.session.midi_input().status_text())
        return opened

    def rescan(self) -> None:
        """Look at the ports again (a port that came back opens; the mapping stays) and say what is there."""
        midi_in = self.session.midi_input()
        midi_in.rescan()
        count = len(midi_in.list_ports())
        self.on_message(f"{midi_in.status_text()}; {count} input port{'s' if count != 1 else ''}")
        self.fill()

    def close_port(self) -> None:
        """Stop listening to the open port (the mapping stays)."""
        midi_in = self.session.midi_in
        if midi_in is not None:
            midi_in.close()
            self.on_message(midi_in.status_text())
