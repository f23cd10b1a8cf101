"""The parameter panel, generated from `core.params.PARAMS`: a new registry entry gets its control,
range, default, unit and tooltip here with no UI code.

Floats: a slider (1000 steps over the range) beside a spin box; whole numbers: a spin box; nullable
knobs: an "auto" box that stands for null (its meaning is the tooltip). Editing emits `changed` with
a complete, validated `Params` snapshot.

Right-clicking a control emits `context_menu_requested(name, global position)`; the window builds
the MIDI learn menu from it (the panel knows nothing of bindings). `set_learning(name)` marks the
control that waits for a MIDI / OSC control with an orange border, so the performer sees which knob
the next CC will take.
"""

from __future__ import annotations

from PyQt6 import QtCore, QtWidgets

from core.errors import format_number
from core.params import GROUPS, PARAMS, ParamSpec, Params

SLIDER_STEPS = 1000
LEARNING_STYLE = "#learning { border: 2px solid #f80; border-radius: 3px; background: #fff1dc; }"


class _Control(QtWidgets.QWidget):
    edited = QtCore.pyqtSignal()

    def __init__(self, spec: ParamSpec, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.spec = spec
        self._updating = True  # until built: range set-up must not emit edits
        # Lets this plain QWidget paint the border its style sheet gives it while learning.
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_StyledBackground, True)
        row = QtWidgets.QHBoxLayout(self)
        row.setContentsMargins(2, 2, 2, 2)
        tip = f"{spec.description}\nRange {spec.range_text} {spec.unit}".strip()
        tip += f"\nDefault {'null' if spec.default is None else format_number(spec.default)}"
        if not spec.live:
            tip += "\nChanging it restarts the stream."
        self.setToolTip(tip)
        self.auto: QtWidgets.QCheckBox | None = None
        if spec.nullable:
            self.auto = QtWidgets.QCheckBox("auto")
            self.auto.setToolTip(spec.null_meaning)
            self.auto.toggled.connect(self._auto_toggled)
            row.addWidget(self.auto)
        if spec.kind == "float":
            self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
            self.slider.setRange(0, SLIDER_STEPS)
            self.slider.valueChanged.connect(self._slider_moved)
            self.box: QtWidgets.QAbstractSpinBox = QtWidgets.QDoubleSpinBox()
            self.box.setDecimals(3)
            self.box.setSingleStep((spec.maximum - spec.minimum) / 100)
            self.box.valueChanged.connect(self._box_changed)
            row.addWidget(self.slider, 1)
        else:
            self.slider = None
            self.box = QtWidgets.QSpinBox()
            self.box.valueChanged.connect(self._box_changed)
        self.box.setRange(spec.minimum, spec.maximum)
        self.box.setKeyboardTracking(False)
        if spec.unit:
            self.box.setSuffix(f" {spec.unit}")
        row.addWidget(self.box)
        self._updating = False

    @property
    def learning(self) -> bool:
        """True while the control is marked as waiting for MIDI learn."""
        return self.objectName() == "learning"

    def set_learning(self, on: bool) -> None:
        """Mark (or unmark) the control as the one MIDI learn will bind."""
        if on != self.learning:
            self.setObjectName("learning" if on else "")
            self.setStyleSheet(LEARNING_STYLE if on else "")  # the children keep the normal style

    def value(self) -> float | int | None:
        """The control's value; None while "auto" is ticked."""
        if self.auto is not None and self.auto.isChecked():
            return None
        return self.box.value()

    def set_value(self, value: float | int | None) -> None:
        """Show `value` (None: tick "auto") without emitting `edited`."""
        self._updating = True
        try:
            if self.auto is not None:
                self.auto.setChecked(value is None)
            if value is not None:
                self.box.setValue(value)
                if self.slider is not None:
                    self.slider.setValue(self._to_steps(value))
            self._enable()
        finally:
            self._updating = False

    def _enable(self) -> None:
        on = self.auto is None or not self.auto.isChecked()
        self.box.setEnabled(on)
        if self.slider is not None:
            self.slider.setEnabled(on)

    def _to_steps(self, value: float) -> int:
        s = self.spec
        return round((value - s.minimum) / (s.maximum - s.minimum) * SLIDER_STEPS)

    def _slider_moved(self, steps: int) -> None:
        if self._updating:
            return
        s = self.spec
        self._updating = True
        self.box.setValue(s.minimum + (s.maximum - s.minimum) * steps / SLIDER_STEPS)
        self._updating = False
        self.edited.emit()

    def _box_changed(self, value) -> None:
        if self._updating:
            return
        if self.slider is not None:
            self._updating = True
            self.slider.setValue(self._to_steps(value))
            self._updating = False
        self.edited.emit()

    def _auto_toggled(self, _checked: bool) -> None:
        self._enable()
        if not self._updating:
            self.edited.emit()


class ParamPanel(QtWidgets.QWidget):
    """One control per registry entry, grouped as the registry groups them."""

    changed = QtCore.pyqtSignal(object)  # Params
    context_menu_requested = QtCore.pyqtSignal(str, QtCore.QPoint)  # parameter name, global position

    def __init__(self, params: Params, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.controls: dict[str, _Control] = {}
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        for group in GROUPS:
            specs = [s for s in PARAMS if s.group == group]
            if not specs:
                continue
            box = QtWidgets.QGroupBox(group.capitalize())
            form = QtWidgets.QFormLayout(box)
            for s in specs:
                control = _Control(s)
                control.edited.connect(self._edited)
                label = QtWidgets.QLabel(s.label)
                label.setToolTip(control.toolTip())
                for widget in (label, control, *control.findChildren(QtWidgets.QWidget)):
                    self._route_context_menu(widget, s.name)
                form.addRow(label, control)
                self.controls[s.name] = control
            outer.addWidget(box)
        outer.addStretch(1)
        self._params = params
        self.set_params(params)

    def _route_context_menu(self, widget: QtWidgets.QWidget, name: str) -> None:
        """A right-click on `widget` (a slider, a box, its label) asks for parameter `name`'s menu;
        the spin boxes' own edit menu gives way to it."""
        widget.setContextMenuPolicy(QtCore.Qt.ContextMenuPolicy.CustomContextMenu)
        widget.customContextMenuRequested.connect(
            lambda pos, w=widget: self.context_menu_requested.emit(name, w.mapToGlobal(pos)))

    def set_learning(self, name: str | None) -> None:
        """Mark parameter `name`'s control as waiting for MIDI learn (None: no control is)."""
        for n, control in self.controls.items():
            control.set_learning(n == name)

    def learning(self) -> str | None:
        """The parameter whose control is marked as waiting for MIDI learn, or None."""
        return next((n for n, c in self.controls.items() if c.learning), None)

    def params(self) -> Params:
        """The snapshot the controls show."""
        return self._params

    def set_params(self, params: Params) -> None:
        """Show `params` without emitting `changed` (a preset load, a key press)."""
        self._params = params
        for name, control in self.controls.items():
            control.set_value(getattr(params, name))

    def _edited(self) -> None:
        values = {name: c.value() for name, c in self.controls.items()}
        try:
            params = Params(**values)
        except Exception:  # noqa: BLE001 - widgets enforce ranges; keep the last valid snapshot
            self.set_params(self._params)
            return
        self._params = params
        self.changed.emit(params)
