"""The set log file: every kind of event round trips through the timeline, Link readings the clock
predicts are left out, a two-hour set's timeline stays in kB, and a damaged, cut-off or foreign file
is one line naming it and what is wrong (in the library, and as exit 2 from `soundvj replay`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.control import Modulation, ModulationMatrix
from core.errors import SoundvjError
from core.params import Params
from core.set_log import (
    LINK_KEEPALIVE_SECONDS,
    ModelChange,
    ModelIdentity,
    TimelineEncoder,
    decode_event,
    open_set_log,
)
from core.show_control import (
    CommandTaken,
    FreezeSet,
    LinkTaken,
    MatrixSet,
    ModelSwapped,
    ParamCommand,
    TapTaken,
)
from tests.set_log_helpers import TINY, member_ranges, rewrite_set, sixteen_bit_noise, write_set

OTHER_MODEL = ModelIdentity("big.safetensors", "ab" * 32, "/models/big.safetensors")


def _round_trip(events, start=Params()):
    encoder = TimelineEncoder(start, lambda _model: OTHER_MODEL)
    decoded, previous = [], start
    for t, event in events:
        line = encoder.line(t, event)
        timed, previous = decode_event(line, previous, "test")
        assert timed.t == t
        decoded.append(timed.event)
    return decoded


def test_every_event_kind_round_trips_through_the_timeline():
    start = Params(psi=0.7)
    storm = start.replace(psi=1.1, noise=0.9, seed=5, alpha_fine=0.3)
    events = [
        (0.5, CommandTaken(ParamCommand(storm, 2.0, "storm"))),
        (0.75, CommandTaken(ParamCommand(storm.replace(psi=0.95), 0.0, "", cut=frozenset({"psi"}), keep_fade=True))),
        (1.0, MatrixSet(ModulationMatrix((Modulation("noise", "onset", 0.8, decay=0.3),
                                          Modulation("rotate_deg", "saw", 90.0, beats=4.0, offset=0.25))))),
        (1.5, TapTaken(0.0123)),
        (1.6, LinkTaken(128.0, 17.25, 0.004)),
        (2.0, FreezeSet(True)),
        (2.5, ModelSwapped(model=object())),  # the identity comes from the encoder's `identify`
        (3.0, CommandTaken(ParamCommand(start.replace(alpha_fine=None), 1.0, "calm"))),
    ]
    decoded = _round_trip(events, start)
    for (_t, sent), got in zip(events, decoded):
        if isinstance(sent, ModelSwapped):
            assert got == ModelChange(OTHER_MODEL)
        else:
            assert got == sent  # whole parameter snapshots, rebuilt from the changes each line keeps


def test_a_knob_move_keeps_only_what_changed():
    start = Params()
    line = TimelineEncoder(start, lambda m: TINY).line(
        12.5, CommandTaken(ParamCommand(start.replace(psi=0.75), 0.0, "", cut=frozenset({"psi"}), keep_fade=True)))
    assert json.loads(line) == {"t": 12.5, "kind": "params", "set": {"psi": 0.75}, "cut": ["psi"], "keep_fade": True}


def test_link_readings_on_the_logged_line_are_left_out():
    """Link posts a reading every frame; only those the last logged one does not predict are kept,
    plus one every LINK_KEEPALIVE_SECONDS (a replayed Link keeps holding the beat clock)."""
    encoder = TimelineEncoder(Params(), lambda m: TINY)
    fps, logged = 24.0, []
    for k in range(int(10 * fps)):
        t = k / fps
        ago = 0.003 + 0.002 * (k % 3)  # jitter in when the reading was taken
        bpm = 120.0 if t < 9.0 else 126.0  # a peer changes the tempo at 9 s
        beat = (t - ago) * bpm / 60.0 + (0.0 if t < 9.0 else 0.1)
        if encoder.line(t, LinkTaken(bpm, beat, ago)) is not None:
            logged.append(t)
    keepalives = int(9.0 // LINK_KEEPALIVE_SECONDS)
    assert logged[0] == 0.0 and len(logged) == 1 + keepalives + 1, logged
    assert logged[-1] == pytest.approx(9.0, abs=1 / fps)  # the tempo change is there on its frame
    # A nudge of the phase (a peer re-aligned) is a change the replay needs, too.
    assert encoder.line(9.5, LinkTaken(126.0, (9.5 - 0.003) * 2.1 + 0.1 + 0.01, 0.003)) is not None


def test_two_hour_timeline_stays_in_kilobytes(tmp_path):
    """Two hours at a realistic pace: a knob move every second, a preset switch with a fade every
    minute, a new modulation matrix every five minutes, eight taps every ten minutes."""
    rng = np.random.default_rng(1)
    params, events = Params(), []
    knobs = ("psi", "noise", "alpha", "rotate_deg")
    for second in range(2 * 3600):
        t = second + 0.37
        if second % 60 == 0:
            params = params.replace(psi=float(rng.uniform(0.4, 1.2)), noise=float(rng.uniform(0, 1)),
                                    alpha=float(rng.uniform(0.1, 0.8)), seed=int(rng.integers(0, 100)))
            events.append((t, CommandTaken(ParamCommand(params, 2.0, f"look{second // 60 % 9}"))))
        elif second % 300 == 1:
            matrix = ModulationMatrix((Modulation("noise", "onset", float(rng.uniform(0, 1))),
                                       Modulation("psi", "low", 0.3), Modulation("rotate_deg", "sine", 45.0, beats=4.0)))
            events.append((t, MatrixSet(matrix)))
        elif second % 600 == 2:
            events += [(t + i * 0.5, TapTaken(0.01)) for i in range(8)]
        else:
            knob = knobs[second % len(knobs)]
            value = round(float(rng.uniform(0, 1)) * (90 if knob == "rotate_deg" else 1), 4)
            params = params.replace(**{knob: value})
            events.append((t, CommandTaken(ParamCommand(params, 0.0, "", cut=frozenset({knob}), keep_fade=True))))
    path = write_set(tmp_path / "two-hours.soundvjset", sixteen_bit_noise(0.5), events)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("timeline.jsonl")
        lines = archive.read(info).splitlines()
    assert len(lines) == len(events) > 7200
    print(f"two-hour timeline: {len(lines)} events, {info.file_size / 1e3:.0f} kB, "
          f"{info.compress_size / 1e3:.0f} kB deflated in the set log")
    assert info.file_size < 1_000_000  # under 1 MB as text ...
    assert info.compress_size < 200_000  # ... and under 200 kB in the archive


# -- damaged files -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_set(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sets") / "good.soundvjset"
    events = [(0.5, CommandTaken(ParamCommand(Params(psi=1.0), 1.0, "bright"))), (0.6, TapTaken(0.01))]
    return write_set(path, sixteen_bit_noise(1.0), events)


def _one_line_error(path: Path) -> str:
    with pytest.raises(SoundvjError) as caught:
        open_set_log(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_the_good_set_log_reads(good_set):
    log = open_set_log(good_set)
    assert log.meta.sound_samples == 44100 and len(log.events) == 2
    assert log.meta.start.model == TINY


def test_a_cut_off_set_log_is_one_line(good_set, tmp_path):
    data = good_set.read_bytes()
    for cut in (0, 10, 100, len(data) // 3, len(data) // 2, len(data) - 200, len(data) - 22, len(data) - 1):
        cut_off = tmp_path / f"cut{cut}.soundvjset"
        cut_off.write_bytes(data[:cut])
        message = _one_line_error(cut_off)
        assert "cut off" in message or "damaged" in message, message


def test_a_flipped_byte_in_any_member_is_found(good_set, tmp_path):
    data = good_set.read_bytes()
    for name, (start, end) in member_ranges(good_set).items():
        # Not the last two bytes: a deflated member's last bits may be padding that nothing reads, and
        # with some contents (set.json's creation time) a flip in the second-to-last byte is not read either.
        for where in np.linspace(start, end - 3, 5).astype(int):
            flipped = bytearray(data)
            flipped[where] ^= 0x55
            path = tmp_path / f"{name}-{where}.soundvjset"
            path.write_bytes(bytes(flipped))
            assert "damaged" in _one_line_error(path) or name == "set.json"


def test_a_flipped_byte_anywhere_is_read_or_refused_in_one_line(good_set, tmp_path):
    """Some bytes (a member's date) do not matter; none may raise anything but a one-line error."""
    data = good_set.read_bytes()
    path = tmp_path / "flipped.soundvjset"
    refused = 0
    for where in range(0, len(data), 173):
        flipped = bytearray(data)
        flipped[where] ^= 0xFF
        path.write_bytes(bytes(flipped))
        try:
            open_set_log(path)
        except SoundvjError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            refused += 1
    assert refused > 0.9 * (len(data) // 173)


def _timeline(*objects) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objects)


def _meta(good_set: Path, **changes) -> bytes:
    with zipfile.ZipFile(good_set) as archive:
        doc = json.loads(archive.read("set.json"))
    doc.update(changes)
    return json.dumps(doc).encode()


BAD_CONTENTS = {
    "version 2": ({"set.json": "meta:version=2"}, "version 2: this soundvj reads set log version 1"),
    "set.json not JSON": ({"set.json": b"{\"format\": "}, "set.json: not valid JSON"),
    "no timeline": ({"timeline.jsonl": None}, "missing member timeline.jsonl"),
    "no sound": ({"sound.flac": None}, "missing member sound.flac"),
    "unknown kind": ({"timeline.jsonl": _timeline({"t": 0.5, "kind": "warp"})},
                     "timeline.jsonl line 1: unknown event kind 'warp'"),
    "psi out of range": ({"timeline.jsonl": _timeline({"t": 0.5, "kind": "params", "set": {"psi": 5}})},
                         "timeline.jsonl line 1: set: psi = 5: out of range"),
    "unknown parameter": ({"timeline.jsonl": _timeline({"t": 0.5, "kind": "params", "set": {"spi": 1}})},
                          "did you mean 'psi'"),
    "time goes back": ({"timeline.jsonl": _timeline({"t": 0.5, "kind": "tap", "ago": 0.0},
                                                    {"t": 0.4, "kind": "tap", "ago": 0.0})},
                       "line 2: t = 0.4 is before the previous event's 0.5"),
    "negative time": ({"timeline.jsonl": _timeline({"t": -1, "kind": "tap", "ago": 0.0})}, "line 1: t = -1"),
    "after the sound": ({"timeline.jsonl": _timeline({"t": 99, "kind": "tap", "ago": 0.0})},
                        "after the end of the sound"),
    "Link at 0 BPM": ({"timeline.jsonl": _timeline({"t": 0.5, "kind": "link", "bpm": 0, "beat": 1, "ago": 0})},
                      "bpm = 0: expected a number in [20, 300]"),
    "freeze yes": ({"timeline.jsonl": _timeline({"t": 0.5, "kind": "freeze", "frozen": "yes"})},
                   "frozen = 'yes': expected true or false"),
    "bad modulation": ({"timeline.jsonl": _timeline({"t": 0.5, "kind": "matrix", "modulations": [
        {"target": "fps", "source": "onset", "depth": 1}]})}, "restarts the stream"),
    "bad model hash": ({"timeline.jsonl": _timeline({"t": 0.5, "kind": "model", "model": {
        "source": "x", "sha256": "beef"}})}, "sha256 = 'beef': expected 64 hex digits"),
    "a line that is not JSON": ({"timeline.jsonl": b"{\"t\": 0.5,\n"}, "line 1: not valid JSON"),
    "an extra key": ({"timeline.jsonl": _timeline({"t": 0.5, "kind": "tap", "ago": 0, "when": 1})},
                     "unknown key 'when'"),
    "events miscounted": ({"timeline.jsonl": _timeline({"t": 0.5, "kind": "tap", "ago": 0.0})},
                          "has 1 events; set.json says 2"),
    "a foreign format": ({"set.json": "meta:format=mixtape"}, "not a soundvj set log"),
    "params disagree": ({"set.json": "meta:fps=30"}, "disagree with params"),
}


@pytest.mark.parametrize("case", list(BAD_CONTENTS))
def test_bad_contents_name_the_member_line_and_field(good_set, tmp_path, case):
    replace, expected = BAD_CONTENTS[case]
    members = {}
    for name, value in replace.items():
        if isinstance(value, str) and value.startswith("meta:"):
            key, raw = value[5:].split("=")
            value = _meta(good_set, **{key: json.loads(raw) if raw[0].isdigit() else raw})
        members[name] = value
    path = rewrite_set(good_set, tmp_path / "bad.soundvjset", members)
    assert expected in _one_line_error(path)


def test_a_compressed_sound_or_a_foreign_file_is_refused(good_set, tmp_path):
    squeezed = tmp_path / "squeezed.soundvjset"
    with zipfile.ZipFile(good_set) as old, zipfile.ZipFile(squeezed, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info))
    assert "sound.flac is compressed" in _one_line_error(squeezed)
    foreign = tmp_path / "photos.soundvjset"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("photo.jpg", b"\xff\xd8")
    assert "missing member set.json" in _one_line_error(foreign)
    wav = tmp_path / "tone.soundvjset"
    wav.write_bytes(b"RIFF" + bytes(100))
    assert "not a soundvj set log, or cut off" in _one_line_error(wav)


def _replay_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.cli", "replay", *args], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))


def test_replay_command_refuses_a_damaged_set_log_in_one_line_with_exit_2(good_set, tmp_path):
    data = good_set.read_bytes()
    cut_off = tmp_path / "cut.soundvjset"
    cut_off.write_bytes(data[: len(data) // 2])
    unknown = rewrite_set(good_set, tmp_path / "unknown.soundvjset",
                          {"timeline.jsonl": _timeline({"t": 0.5, "kind": "warp"}, {"t": 0.6, "kind": "tap", "ago": 0})})
    for path in (cut_off, unknown, tmp_path / "missing.soundvjset"):
        run = _replay_cli(str(path), "-o", str(tmp_path / "out.mp4"))
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1 and run.stderr.startswith("soundvj: error:"), run.stderr
        assert "Traceback" not in run.stderr and str(path) in run.stderr
        assert not (tmp_path / "out.mp4").exists()
