"""Preset format version 2 (core.presets): modulations in a preset, a round trip through a file,
version-1 files read as before, and one-line errors for a bad `modulations:`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core.presets as presets_mod
from core.control.modulation import Modulation, ModulationMatrix
from core.errors import SoundvjError
from core.params import Params
from core.presets import SUPPORTED_VERSIONS, Preset, list_presets, load_preset, save_preset

EXAMPLES = (
    Modulation("noise", "onset", 0.8, decay=0.15),
    Modulation("psi", "low", 0.4),
    Modulation("rotate_deg", "saw", 180.0, beats=4.0),
    Modulation("pan_y", "sample_hold", 0.05, beats=0.25, offset=0.5),
)


@pytest.fixture(autouse=True)
def _no_user_presets(monkeypatch):
    monkeypatch.delenv(presets_mod.USER_DIR_ENV, raising=False)


def write(tmp_path: Path, text: str, name: str = "look.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_v2_preset_round_trips_with_its_modulations(tmp_path):
    params = Params(noise=0.2, psi=0.6, alpha_fine=0.9)
    path = save_preset(tmp_path / "pulse2.yaml", params, description="hits", only=["noise", "psi", "alpha_fine"],
                       modulations=EXAMPLES)
    raw = yaml.safe_load(path.read_text())
    assert raw["version"] == 2 and len(raw["modulations"]) == len(EXAMPLES)
    preset = load_preset(path)
    assert preset.modulations == EXAMPLES
    assert preset.matrix == ModulationMatrix(EXAMPLES)
    assert preset.values == {"noise": 0.2, "psi": 0.6, "alpha_fine": 0.9}
    assert preset.apply(Params()) == Params().replace(**preset.values)
    again = load_preset(save_preset(tmp_path / "again.yaml", params, modulations=preset.matrix))
    assert again.modulations == EXAMPLES


def test_a_hand_written_v2_preset_loads(tmp_path):
    path = write(tmp_path, (
        "version: 2\n"
        "name: kick\n"
        "params: {noise: 0.1}\n"
        "modulations:\n"
        "  - {target: noise, source: onset, depth: 0.9}      # a burst on each kick\n"
        "  - target: rotate_deg\n"
        "    source: saw\n"
        "    depth: 180\n"
        "    beats: 4\n"
    ))
    preset = load_preset(path)
    assert preset.modulations == (Modulation("noise", "onset", 0.9), Modulation("rotate_deg", "saw", 180.0, beats=4.0))


def test_a_v1_preset_has_no_modulations_and_saves_as_v1(tmp_path):
    """A v1 file says nothing about modulations (None: the current matrix stays), and a preset
    saved without modulations is still written as version 1."""
    assert 1 in SUPPORTED_VERSIONS
    for name in ("calm", "flowing", "storm"):  # the shipped version-1 presets
        assert load_preset(name).modulations is None and load_preset(name).matrix is None
    path = save_preset(tmp_path / "plain.yaml", Params(alpha=0.2), only=["alpha"])
    assert yaml.safe_load(path.read_text()) == {"version": 1, "name": "plain", "params": {"alpha": 0.2}}
    assert load_preset(path) == Preset(name="plain", path=path, values={"alpha": 0.2})


def test_the_shipped_pulse_preset_hits_on_each_onset():
    """The shipped example of version 2: pulse bursts noise (and fine texture) on each onset."""
    pulse = load_preset("pulse")
    assert {(m.target, m.source) for m in pulse.modulations} == {("noise", "onset"), ("alpha_fine", "onset")}
    assert {p.name for p in list_presets()} == {"calm", "flowing", "storm", "pulse"}


def test_an_empty_modulations_list_clears_and_an_absent_one_keeps(tmp_path):
    cleared = load_preset(write(tmp_path, "version: 2\nmodulations: []\n", "a.yaml"))
    bare = load_preset(write(tmp_path, "version: 2\nmodulations:\n", "b.yaml"))
    silent = load_preset(write(tmp_path, "version: 2\nparams: {psi: 0.5}\n", "c.yaml"))
    assert cleared.modulations == () and cleared.matrix == ModulationMatrix()
    assert bare.modulations == ()
    assert silent.modulations is None
    path = save_preset(tmp_path / "empty.yaml", Params(), only=[], modulations=())
    assert yaml.safe_load(path.read_text())["version"] == 2
    assert load_preset(path).modulations == ()


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("version: 1\nmodulations: []\n", ["'modulations' needs 'version: 2'", "version 1"]),
        ("version: 3\n", ["version 3 is not supported", "supported versions: 1, 2"]),
        ("version: 2\nmodulations: {target: psi}\n", ["modulations: expected a list of modulations, got dict"]),
        ("version: 2\nmodulations: [psi]\n", ["modulations[0]: expected a mapping", "got str"]),
        ("version: 2\nmodulations:\n  - {target: psi, source: low, depth: 0.1}\n  - {target: psi, source: bass, depth: 1}\n",
         ["modulations[1].source = 'bass': unknown source"]),
        ("version: 2\nmodulations:\n  - {target: window_seconds, source: low, depth: 0.1}\n",
         ["modulations[0].target = 'window_seconds'", "changes what the sound models hear"]),
        ("version: 2\nmodulations:\n  - {target: psi, source: low, depth: .inf}\n",
         ["modulations[0].depth = inf", "finite"]),
        ("version: 2\nmodulations:\n  - {target: psi, source: saw, depth: 0.1, beats: 0}\n",
         ["modulations[0].beats = 0: expected a number in [0.25, 16]"]),
        ("version: 2\nmodulations:\n  - {target: psi, source: low, depth: 0.1, target: noise}\n",
         ["invalid YAML", "duplicate key 'target'"]),
        ("version: 2\nmodulations:\n  - &m {target: psi, source: low, depth: 0.1}\n  - *m\n",
         ["invalid YAML", "aliases", "not allowed"]),
        ("version: 2\nmodulation: []\n", ["unknown top-level key 'modulation'", "did you mean 'modulations'"]),
    ],
)
def test_a_bad_v2_preset_is_one_line_naming_the_file_and_the_field(tmp_path, text, fragments):
    path = write(tmp_path, text)
    with pytest.raises(SoundvjError) as err:
        load_preset(path)
    message = str(err.value)
    assert message.startswith(f"{path}:") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_at_most_64_modulations_in_a_preset(tmp_path):
    entry = "  - {target: psi, source: low, depth: 0.1}\n"
    assert len(load_preset(write(tmp_path, "version: 2\nmodulations:\n" + entry * 64)).modulations) == 64
    with pytest.raises(SoundvjError, match=r"modulations: 65 modulations; at most 64"):
        load_preset(write(tmp_path, "version: 2\nmodulations:\n" + entry * 65))
    with pytest.raises(SoundvjError, match="65 modulations; at most 64"):
        save_preset(tmp_path / "many.yaml", Params(), modulations=[EXAMPLES[0]] * 65)
    assert not (tmp_path / "many.yaml").exists()


def test_a_preset_checks_modulations_given_in_code():
    with pytest.raises(SoundvjError, match="entry 0 is a dict, not a Modulation"):
        Preset(name="x", modulations=({"target": "psi"},))


# --- any value in a modulation: a preset or one line, nothing else ---------------------------------

yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["psi", "noise", "rotate_deg", "gain_db", "onset", "saw", "sample_hold", "low"]),
)
yaml_values = st.recursive(yaml_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8), inner, max_size=3), max_leaves=8)
modulation_entries = st.dictionaries(
    st.sampled_from(["target", "source", "depth", "beats", "offset", "decay", "rate"]), yaml_values, max_size=6
)


@settings(max_examples=150, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.one_of(yaml_values, st.lists(st.one_of(modulation_entries, yaml_values), max_size=4)))
def test_any_modulations_value_loads_or_is_one_line(tmp_path, entries):
    path = tmp_path / "any.yaml"
    path.write_text(yaml.safe_dump({"version": 2, "modulations": entries}), encoding="utf-8")
    try:
        preset = load_preset(path)
    except SoundvjError as e:
        assert str(e).startswith(f"{path}:") and "\n" not in str(e) and len(str(e)) < 600, str(e)
        return
    assert all(isinstance(m, Modulation) for m in preset.modulations)
    assert load_preset(save_preset(tmp_path / "again.yaml", Params(), modulations=preset.modulations)).modulations \
        == preset.modulations
