"""The modulation panel: the session's modulation matrix as a small table the performer can edit.

One row per modulation: target, source, depth and the option its source has (beats per cycle for
an LFO, the decay of an onset pulse). Rows can be added, removed and their numbers edited. Every
edit builds a new `ModulationMatrix` from the one playing (`added`, `replaced`, `removed`), so the
matrix validates it; a refused value is one line in the message line and the matrix playing stays.
The new matrix goes to the render thread through `LiveSession.set_modulations`.

The matrix also changes without the panel (a preset with modulations, OSC `/soundvj/mod/...`);
`refresh()`, called by the window's poll, shows the session's matrix whenever it is another object.
A change that keeps the rows (a depth from OSC) updates the numbers in place, leaving alone the box
being typed in, so a remote change never snatches the field from under the performer.
"""

from __future__ import annotations

from collections.abc import Callable

from PyQt6 import QtCore, QtWidgets

from core.control import MODULATABLE, SOURCES, Modulation, ModulationMatrix
from core.control.modulation import BEATS_RANGE, DECAY_RANGE, LFO_SOURCES
from core.errors import SoundvjError
from core.params import spec
from visualizer.session import LiveSession

COLUMNS = ("Target", "Source", "Depth", "Beats / decay", "")
OPTION_OF_SOURCE = {**{s: "beats" for s in LFO_SOURCES}, "onset": "decay"}  # the one option a source has
TABLE_VISIBLE_ROWS = 4  # the table grows to this many rows, then scrolls (the side panel is shared)
ADD_DEPTH_LIMIT = 1000.0  # the add box's range; the matrix then says what fits the target


def _depth_box(target: str) -> QtWidgets.QDoubleSpinBox:
    s = spec(target)
    span = float(s.maximum) - float(s.minimum)
    box = QtWidgets.QDoubleSpinBox()
    box.setDecimals(3)
    box.setRange(-span, span)
    box.setSingleStep(span / 100)
    box.setKeyboardTracking(False)
    box.setToolTip(f"{target} moves by depth x source, in {target}'s units (at most +/- its range, {span:g})")
    return box


def _option_box(option: str) -> QtWidgets.QDoubleSpinBox:
    box = QtWidgets.QDoubleSpinBox()
    box.setKeyboardTracking(False)
    if option == "beats":
        box.setDecimals(2)
        box.setRange(*BEATS_RANGE)
        box.setSingleStep(0.25)
        box.setSuffix(" beats")
        box.setToolTip("one LFO cycle every this many beats (1/4 beat to 4 bars)")
    else:
        box.setDecimals(2)
        box.setRange(*DECAY_RANGE)
        box.setSingleStep(0.05)
        box.setSuffix(" s")
        box.setToolTip("the onset pulse falls by e every this many seconds")
    return box


class ModulationPanel(QtWidgets.QWidget):
    """The session's modulation matrix, editable; see the module docstring."""

    def __init__(self, session: LiveSession, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self._matrix = ModulationMatrix()
        self._depth_boxes: list[QtWidgets.QDoubleSpinBox] = []
        self._option_boxes: list[QtWidgets.QDoubleSpinBox | None] = []
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.empty_label = QtWidgets.QLabel("no modulations: add one below, or load a preset that has some")
        self.empty_label.setWordWrap(True)
        layout.addWidget(self.table)
        layout.addWidget(self.empty_label)

        row = QtWidgets.QGridLayout()  # two by two: the side panel is narrow
        self.target_combo = QtWidgets.QComboBox()
        self.target_combo.addItems(MODULATABLE)
        self.target_combo.setToolTip("the parameter to move")
        self.source_combo = QtWidgets.QComboBox()
        self.source_combo.addItems(SOURCES)
        self.source_combo.setToolTip("onset: a pulse on each hit; onset_strength, envelope, level, low, mid, high: "
                                     "the sound, 0-1; sine, saw, square, sample_hold: LFOs on the beat, -1-1")
        self.add_depth = QtWidgets.QDoubleSpinBox()
        self.add_depth.setDecimals(3)
        self.add_depth.setRange(-ADD_DEPTH_LIMIT, ADD_DEPTH_LIMIT)
        self.add_depth.setValue(0.2)
        self.add_depth.setToolTip("depth in the target's units")
        add = QtWidgets.QPushButton("Add")
        add.setToolTip("add this modulation (LFOs start at one cycle a beat; edit the beats in its row)")
        add.clicked.connect(self._add_clicked)
        row.addWidget(self.target_combo, 0, 0)
        row.addWidget(self.source_combo, 0, 1)
        row.addWidget(self.add_depth, 1, 0)
        row.addWidget(add, 1, 1)
        layout.addLayout(row)
        self.show_matrix(session.modulations)

    # -- what is shown ------------------------------------------------------------------------------

    @property
    def matrix(self) -> ModulationMatrix:
        """The matrix the table shows."""
        return self._matrix

    def refresh(self) -> None:
        """Show the session's matrix if it changed since the last look (the window's poll calls this)."""
        if self.session.modulations is not self._matrix:
            self.show_matrix(self.session.modulations)

    def show_matrix(self, matrix: ModulationMatrix) -> None:
        """Show `matrix`: numbers in place when the rows are the same ones, else the table anew."""
        same_rows = len(matrix) == len(self._matrix) and all(
            (a.target, a.source) == (b.target, b.source) for a, b in zip(matrix, self._matrix))
        self._matrix = matrix
        if not same_rows:
            self._rebuild()
            return
        for i, m in enumerate(matrix):
            self._set_quietly(self._depth_boxes[i], m.depth)
            option = OPTION_OF_SOURCE.get(m.source)
            box = self._option_boxes[i]
            if option is not None and box is not None:
                self._set_quietly(box, getattr(m, option))

    @staticmethod
    def _set_quietly(box: QtWidgets.QDoubleSpinBox, value: float) -> None:
        if box.hasFocus() or abs(box.value() - value) < 1e-9:
            return  # the performer is typing here; their Enter decides
        with QtCore.QSignalBlocker(box):
            box.setValue(value)

    def _rebuild(self) -> None:
        self.table.setRowCount(0)  # the table deletes its old cell widgets
        self._depth_boxes, self._option_boxes = [], []
        self.table.setRowCount(len(self._matrix))
        for i, m in enumerate(self._matrix):
            self.table.setItem(i, 0, QtWidgets.QTableWidgetItem(m.target))
            self.table.setItem(i, 1, QtWidgets.QTableWidgetItem(m.source))
            depth = _depth_box(m.target)
            depth.setValue(m.depth)
            depth.valueChanged.connect(lambda value, i=i: self.set_depth(i, value))
            self.table.setCellWidget(i, 2, depth)
            self._depth_boxes.append(depth)
            option = OPTION_OF_SOURCE.get(m.source)
            box = None
            if option is not None:
                box = _option_box(option)
                box.setValue(getattr(m, option))
                box.valueChanged.connect(lambda value, i=i, option=option: self._edit(i, **{option: value}))
                self.table.setCellWidget(i, 3, box)
            self._option_boxes.append(box)
            remove = QtWidgets.QPushButton("✕")
            remove.setToolTip(f"remove {m.target} <- {m.source}")
            remove.setMaximumWidth(28)
            remove.clicked.connect(lambda _=False, i=i: self.remove(i))
            self.table.setCellWidget(i, 4, remove)
        self.table.resizeColumnsToContents()
        self.empty_label.setVisible(len(self._matrix) == 0)
        self._fit_height()

    def _fit_height(self) -> None:
        """As tall as the rows (at least one, at most `TABLE_VISIBLE_ROWS`), so an empty or short
        matrix leaves the side panel's room to the parameters."""
        rows = min(max(len(self._matrix), 1), TABLE_VISIBLE_ROWS)
        row_height = self.table.verticalHeader().defaultSectionSize()
        height = self.table.horizontalHeader().sizeHint().height() + rows * row_height + 2 * self.table.frameWidth()
        self.table.setFixedHeight(height)

    # -- edits ----------------------------------------------------------------------------------------

    def _add_clicked(self) -> None:
        self.add(self.target_combo.currentText(), self.source_combo.currentText(), self.add_depth.value())

    def add(self, target: str, source: str, depth: float) -> bool:
        """Add `target` <- `source` x `depth` to the playing matrix; False (one-line message) if refused."""
        try:
            return self._use(lambda playing: playing.added(Modulation(target, source, depth)))
        except SoundvjError as e:
            self.session.message(f"modulation not added: {e}")
            return False

    def set_depth(self, row: int, depth: float) -> bool:
        """Set row `row`'s depth; False (one-line message) if the matrix refuses it."""
        return self._edit(row, depth=depth)

    def set_option(self, row: int, value: float) -> bool:
        """Set row `row`'s beats (an LFO) or decay (onset); False (one-line message) if refused."""
        option = OPTION_OF_SOURCE.get(self._matrix.modulations[row].source) if 0 <= row < len(self._matrix) else None
        if option is None:
            self.session.message(f"modulation {row}: has no beats or decay to set")
            return False
        return self._edit(row, **{option: value})

    def remove(self, row: int) -> bool:
        """Remove row `row` from the playing matrix."""
        try:
            return self._use(lambda playing: self._checked(playing, row).removed(row))
        except SoundvjError as e:
            self.session.message(str(e))
            return False

    def _edit(self, row: int, **changes: float) -> bool:
        try:
            return self._use(lambda playing: self._checked(playing, row).replaced(row, **changes))
        except SoundvjError as e:
            self.session.message(str(e))
            self.show_matrix(self.session.modulations)
            self._set_back(row)
            return False

    def _checked(self, playing: ModulationMatrix, row: int) -> ModulationMatrix:
        """`playing`, if its row `row` is still the row shown (a preset or OSC may have replaced it)."""
        if playing is not self._matrix and not (
                row < len(playing) and row < len(self._matrix)
                and (playing.modulations[row].target, playing.modulations[row].source)
                == (self._matrix.modulations[row].target, self._matrix.modulations[row].source)):
            raise SoundvjError("modulations changed meanwhile (a preset or OSC); the table shows them now")
        return playing

    def _set_back(self, row: int) -> None:
        """After a refused edit, show the row's values that play (not what was typed)."""
        if 0 <= row < len(self._matrix):
            m = self._matrix.modulations[row]
            with QtCore.QSignalBlocker(self._depth_boxes[row]):
                self._depth_boxes[row].setValue(m.depth)

    def _use(self, change: Callable[[ModulationMatrix], ModulationMatrix]) -> bool:
        """Apply `change` to the playing matrix under the session's lock, then show the result."""
        try:
            matrix = self.session.edit_modulations(change)
        except SoundvjError:
            self.show_matrix(self.session.modulations)  # a refused edit: show what plays now
            raise
        self.show_matrix(matrix)
        return True
