"""The set log file (`.soundvjset`): a live set kept so that `soundvj replay` can render it again.

A set log holds what a performance was made of, not its pictures: the sound the render thread heard,
every change the performer made, each at its audio time, and where the show started. Replayed
through the same control code (`core.show_control`) at the full frame rate, it gives the show as it
would have looked had no frame been dropped.

Format, version 1: a ZIP archive with three members, in this order.

- `set.json` (deflated): the meta. `format` ("soundvj set log"), `version` (1), `soundvj` (the
  version that wrote it), `created` (UTC, ISO 8601), `sample_rate` (Hz, the model's: the sound is
  what the model heard, mono), `fps` and `seed` (the starting look's, also in `params`), `params`
  (the starting target: every registry parameter), `start` (the show where the log began: `at`, the
  audio time of the first frame; `from`, the parameters a running crossfade came from, or null;
  `fade_seconds` and `fade_elapsed`; `look`; `frozen`; `clock`, the beat clock's bpm, beat and
  source), `matrix` (the starting modulations, as in a preset), `model` (`source`, `sha256` of the
  model file, the file's path when logged; sha256 null for a model built in memory, such as the
  random-weights one), `sound` (`member`, `codec`, `samples`, `seconds`), `timeline` (`member`,
  `events`: the line count) and `live` (frames made and deadlines dropped, for the record).
- `timeline.jsonl` (deflated): one event per line, `{"t": audio time, "kind": ..., ...}`, in the
  order the render thread took them (t never decreases). Kinds:
  `params` (`set`: the parameters that differ from the previous command's, `fade` seconds, `look`,
  `cut`: the names that jump at once, `keep_fade`; absent keys mean 0, "", [] and false),
  `matrix` (`modulations`: the whole new list), `tap` (`ago`: seconds before the frame's newest
  sample), `link` (`bpm`, `beat`, `ago`), `freeze` (`frozen`), `model` (`model`: as in set.json).
- `sound.flac` or `sound.opus` (stored, not deflated): the sound, from the first sample the log
  took (`core.audio_writer`: FLAC, 24-bit, lossless for 16/24-bit sources; or Opus at 48 kHz).

Times: `t` is audio time, the seconds of the set's sound up to and including the frame that took the
change (samples read by the render thread since the log began / sample rate). Taps and Link readings
carry their own moment as `ago`, so a replay puts them where the live clock had them.

Why a ZIP: one file to keep and send, whose members any unzip tool lists and extracts (`unzip -p
show.soundvjset set.json`); every member has a CRC-32, so damage is found before a replay starts; its
directory sits at the end, so a cut-off file is recognised at once; a stored member can be read in
place, so a two-hour sound is decoded straight from the archive, never copied out. The timeline is
JSON lines because it is written as the show goes and read line by line; it is logged as events, not
per frame, and deflated (a knob move a second for two hours: tens of kB; docs/replay.md has sizes).

Every problem reading a set log is one `SoundvjError` line naming the file (and the member, line and
field where there is one).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

from core.atomic_write import atomic_path
from core.audio_writer import CODECS, SUFFIXES
from core.control import ClockState, ModulationMatrix
from core.control.beat_clock import ANY_BPM
from core.control.beat_clock import SOURCES as CLOCK_SOURCES
from core.control.checks import checked_number
from core.errors import SoundvjError, one_line, short_repr, suggest
from core.model import SoundvjModel
from core.param_fade import ParamFade
from core.params import Params, check_known_names, validate_values
from core.show_control import (
    CommandTaken,
    FreezeSet,
    LinkTaken,
    MatrixSet,
    ModelSwapped,
    ParamCommand,
    ShowEvent,
    ShowState,
    TapTaken,
)

FORMAT = "soundvj set log"
VERSION = 1
SUFFIX = ".soundvjset"
META_MEMBER = "set.json"
TIMELINE_MEMBER = "timeline.jsonl"
SOUND_MEMBERS = {codec: "sound" + suffix for codec, suffix in SUFFIXES.items()}
KINDS = ("params", "matrix", "tap", "link", "freeze", "model")
MAX_META_BYTES = 1 << 20
MAX_LINE_BYTES = 1 << 20  # a matrix of 64 modulations is about 6 kB
MAX_TIMELINE_BYTES = 1 << 30
MAX_FADE_SECONDS = 3600.0
MAX_AGO_SECONDS = 3600.0  # a tap or Link reading this long before its frame is a damaged value
MAX_LOOK_CHARS = 200
LINK_KEEPALIVE_SECONDS = 4.0  # half the beat clock's manual hold: a replayed Link keeps holding it
LINK_BEAT_TOLERANCE = 1e-3  # beats; a Link reading the previous one predicts this well is not logged
_READ_BLOCK = 1 << 20


def soundvj_version() -> str:
    """The installed soundvj's version ("unknown" when it is run from a source tree alone)."""
    try:
        return metadata.version("soundvj")
    except metadata.PackageNotFoundError:
        return "unknown"


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


# -- the model a set was played with ------------------------------------------------------------------

@dataclass(frozen=True)
class ModelIdentity:
    """Which model made the pictures: its name, the SHA-256 of its file (None for a model built in
    memory, such as the random-weights one) and where that file was."""

    source: str
    sha256: str | None
    file: str | None = None

    @classmethod
    def of(cls, model: SoundvjModel) -> ModelIdentity:
        """The identity of a loaded model (reads its whole file to hash it: not on the render thread)."""
        if model.file is None:
            return cls(model.source, None, None)
        return cls(model.source, file_sha256(model.file), str(model.file))

    def matches(self, other: ModelIdentity) -> bool:
        """Same model: the same file bytes, or both built in memory under the same name."""
        if self.sha256 is None or other.sha256 is None:
            return self.sha256 is None and other.sha256 is None and self.source == other.source
        return self.sha256 == other.sha256

    def describe(self) -> str:
        where = f", was {self.file}" if self.file else ""
        digest = f"sha256 {self.sha256[:12]}..." if self.sha256 else "built in memory, no file"
        return f"{self.source!r} ({digest}{where})"

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "file": self.file}

    @classmethod
    def from_json(cls, value: Any, where: str) -> ModelIdentity:
        obj = _mapping(value, where, required=("source", "sha256"), optional=("file",))
        source = _text(obj["source"], f"{where}.source", 1000)
        digest = obj["sha256"]
        if digest is not None and not (isinstance(digest, str) and len(digest) == 64
                                       and all(c in "0123456789abcdef" for c in digest)):
            raise SoundvjError(f"{where}.sha256 = {short_repr(digest)}: expected 64 hex digits or null")
        file = obj.get("file")
        if file is not None:
            file = _text(file, f"{where}.file", 4096)
        return cls(source, digest, file)


@dataclass(frozen=True)
class ModelChange:
    """A model swap as a set log keeps it: which model, not the model itself."""

    model: ModelIdentity


LoggedEvent = CommandTaken | MatrixSet | TapTaken | LinkTaken | FreezeSet | ModelChange


@dataclass(frozen=True)
class TimedEvent:
    """An event and the audio time `t` of the frame that took it."""

    t: float
    event: LoggedEvent


# -- the meta ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SetStart:
    """The show where the log began (see the module docstring's `start`)."""

    at: float
    params: Params  # the target
    fade_from: Params | None  # the running crossfade's start, or None
    fade_seconds: float
    fade_elapsed: float
    look: str
    frozen: bool
    clock: ClockState | None
    matrix: ModulationMatrix
    model: ModelIdentity

    @classmethod
    def from_state(cls, state: ShowState, at: float, model: ModelIdentity) -> SetStart:
        """The start of a log whose first frame ended at audio time `at` with `state`."""
        fade = state.fade
        running = not fade.done(state.now)
        return cls(
            at=at, params=fade.target, fade_from=fade.start if running else None,
            fade_seconds=fade.seconds if running else 0.0,
            fade_elapsed=max(0.0, state.now - fade.t0) if running else 0.0,
            look=state.look, frozen=state.frozen, clock=state.clock, matrix=state.matrix, model=model,
        )

    def show_state(self, model: SoundvjModel) -> ShowState:
        """The state to resume a replay's `ShowControl` from, on a fade clock whose `now` is 0."""
        fade = ParamFade(self.fade_from or self.params, self.params, -self.fade_elapsed, self.fade_seconds)
        return ShowState(fade, 0.0, self.look, self.matrix, self.frozen, self.clock, model)


@dataclass(frozen=True)
class SetMeta:
    """set.json (see the module docstring)."""

    sample_rate: int
    start: SetStart
    sound_codec: str
    sound_samples: int
    events: int
    live_frames: int = 0
    live_dropped: int = 0
    soundvj: str = field(default_factory=soundvj_version)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @property
    def fps(self) -> float:
        return self.start.params.fps

    @property
    def seconds(self) -> float:
        """Length of the set's sound."""
        return self.sound_samples / self.sample_rate

    @property
    def sound_member(self) -> str:
        return SOUND_MEMBERS[self.sound_codec]

    def to_json(self) -> dict[str, Any]:
        s = self.start
        return {
            "format": FORMAT, "version": VERSION, "soundvj": self.soundvj, "created": self.created,
            "sample_rate": self.sample_rate, "fps": self.fps, "seed": s.params.seed,
            "params": s.params.to_dict(),
            "start": {
                "at": s.at, "from": None if s.fade_from is None else s.fade_from.to_dict(),
                "fade_seconds": s.fade_seconds, "fade_elapsed": s.fade_elapsed, "look": s.look,
                "frozen": s.frozen,
                "clock": None if s.clock is None else {"bpm": s.clock.bpm, "beat": s.clock.beat, "source": s.clock.source},
            },
            "matrix": s.matrix.to_list(),
            "model": s.model.to_json(),
            "sound": {"member": self.sound_member, "codec": self.sound_codec, "samples": self.sound_samples,
                      "seconds": self.seconds},
            "timeline": {"member": TIMELINE_MEMBER, "events": self.events},
            "live": {"frames": self.live_frames, "dropped": self.live_dropped},
        }

    @classmethod
    def from_json(cls, doc: Any, where: str) -> SetMeta:
        if not isinstance(doc, Mapping):
            raise SoundvjError(f"{where}: expected a JSON object, got {type(doc).__name__}")
        if doc.get("format") != FORMAT:
            raise SoundvjError(f"{where}: format = {short_repr(doc.get('format'))}: not a soundvj set log")
        version = doc.get("version")
        if isinstance(version, bool) or version != VERSION:
            raise SoundvjError(f"{where}: version {short_repr(version)}: this soundvj reads set log version {VERSION}")
        doc = _mapping(doc, where, required=(
            "format", "version", "soundvj", "created", "sample_rate", "fps", "seed", "params", "start", "matrix",
            "model", "sound", "timeline"), optional=("live",))
        rate = _whole(doc["sample_rate"], f"{where}.sample_rate", 8000, 192000)
        params = Params.from_mapping(_mapping(doc["params"], f"{where}.params"), f"{where}.params")
        if doc["fps"] != params.fps or doc["seed"] != params.seed:
            raise SoundvjError(
                f"{where}: fps = {short_repr(doc['fps'])}, seed = {short_repr(doc['seed'])} disagree with "
                f"params (fps {params.fps:g}, seed {params.seed})"
            )
        start = _mapping(doc["start"], f"{where}.start",
                         required=("at", "from", "fade_seconds", "fade_elapsed", "look", "frozen", "clock"), optional=())
        fade_from = None if start["from"] is None else Params.from_mapping(
            _mapping(start["from"], f"{where}.start.from"), f"{where}.start.from")
        sound = _mapping(doc["sound"], f"{where}.sound", required=("member", "codec", "samples", "seconds"), optional=())
        codec = sound["codec"]
        if codec not in CODECS:
            raise SoundvjError(f"{where}.sound.codec = {short_repr(codec)}: expected one of {', '.join(CODECS)}")
        if sound["member"] != SOUND_MEMBERS[codec]:
            raise SoundvjError(f"{where}.sound.member = {short_repr(sound['member'])}: expected {SOUND_MEMBERS[codec]!r}")
        samples = _whole(sound["samples"], f"{where}.sound.samples", 0, 10**13)
        timeline = _mapping(doc["timeline"], f"{where}.timeline", required=("member", "events"), optional=())
        if timeline["member"] != TIMELINE_MEMBER:
            raise SoundvjError(f"{where}.timeline.member = {short_repr(timeline['member'])}: expected {TIMELINE_MEMBER!r}")
        live = _mapping(doc.get("live", {}), f"{where}.live", optional=("frames", "dropped"))
        set_start = SetStart(
            at=checked_number(f"{where}.start.at", start["at"], 0.0, samples / rate + 1.0),
            params=params, fade_from=fade_from,
            fade_seconds=checked_number(f"{where}.start.fade_seconds", start["fade_seconds"], 0.0, MAX_FADE_SECONDS),
            fade_elapsed=checked_number(f"{where}.start.fade_elapsed", start["fade_elapsed"], 0.0, MAX_FADE_SECONDS),
            look=_text(start["look"], f"{where}.start.look", MAX_LOOK_CHARS),
            frozen=_flag(start["frozen"], f"{where}.start.frozen"),
            clock=_clock(start["clock"], f"{where}.start.clock"),
            matrix=ModulationMatrix.from_list(doc["matrix"], f"{where}.matrix"),
            model=ModelIdentity.from_json(doc["model"], f"{where}.model"),
        )
        return cls(
            sample_rate=rate, start=set_start, sound_codec=codec, sound_samples=samples,
            events=_whole(timeline["events"], f"{where}.timeline.events", 0, 10**9),
            live_frames=_whole(live.get("frames", 0), f"{where}.live.frames", 0, 10**12),
            live_dropped=_whole(live.get("dropped", 0), f"{where}.live.dropped", 0, 10**12),
            soundvj=_text(doc["soundvj"], f"{where}.soundvj", 100),
            created=_text(doc["created"], f"{where}.created", 100),
        )


# -- the timeline -----------------------------------------------------------------------------------

class TimelineEncoder:
    """Events as timeline lines (writer side): a command as the parameters it changes against the
    previous command, a Link reading only when the previous logged one does not predict it (or
    every `LINK_KEEPALIVE_SECONDS`), a model swap as the model's identity (`identify`, which may
    read the model's file)."""

    def __init__(self, start: Params, identify: Callable[[SoundvjModel], ModelIdentity]) -> None:
        self._previous = start
        self._identify = identify
        self._link: tuple[float, LinkTaken] | None = None  # the last logged reading and its frame time

    def line(self, t: float, event: ShowEvent) -> str | None:
        """The JSON line for `event` taken by the frame at audio time `t`, or None (not needed)."""
        obj: dict[str, Any] = {"t": t}
        if isinstance(event, CommandTaken):
            c = event.command
            obj["kind"] = "params"
            obj["set"] = {name: new for name, (_old, new) in self._previous.diff(c.params).items()}
            if c.fade_seconds:
                obj["fade"] = c.fade_seconds
            if c.name:
                obj["look"] = c.name
            if c.cut:
                obj["cut"] = sorted(c.cut)
            if c.keep_fade:
                obj["keep_fade"] = True
            self._previous = c.params
        elif isinstance(event, MatrixSet):
            obj.update(kind="matrix", modulations=event.matrix.to_list())
        elif isinstance(event, TapTaken):
            obj.update(kind="tap", ago=event.ago)
        elif isinstance(event, LinkTaken):
            if self._link_predicted(t, event):
                return None
            self._link = (t, event)
            obj.update(kind="link", bpm=event.bpm, beat=event.beat, ago=event.ago)
        elif isinstance(event, FreezeSet):
            obj.update(kind="freeze", frozen=event.frozen)
        elif isinstance(event, ModelSwapped):
            obj.update(kind="model", model=self._identify(event.model).to_json())
        else:
            raise TypeError(f"not a show event: {event!r}")
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)

    def _link_predicted(self, t: float, reading: LinkTaken) -> bool:
        """Link posts its reading every frame; one that lies on the line of the last logged reading
        (same tempo, beat within LINK_BEAT_TOLERANCE) adds nothing a replay's clock would not do."""
        if self._link is None:
            return False
        logged_t, logged = self._link
        if reading.bpm != logged.bpm or t - logged_t >= LINK_KEEPALIVE_SECONDS:
            return False
        moment, logged_moment = t - reading.ago, logged_t - logged.ago
        predicted = logged.beat + (moment - logged_moment) * logged.bpm / 60.0
        return abs(reading.beat - predicted) < LINK_BEAT_TOLERANCE


def decode_event(line: bytes | str, start: Params, where: str) -> tuple[TimedEvent, Params]:
    """One timeline line as an event, and the parameters the next `params` line builds on."""
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SoundvjError(f"{where}: not valid JSON ({one_line(e)})") from None
    if not isinstance(obj, Mapping):
        raise SoundvjError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("kind")
    if kind not in KINDS:
        raise SoundvjError(f"{where}: unknown event kind {short_repr(kind)}; {suggest(str(kind)[:100], KINDS)}")
    keys = {
        "params": ((), ("set", "fade", "look", "cut", "keep_fade")),
        "matrix": (("modulations",), ()),
        "tap": (("ago",), ()),
        "link": (("bpm", "beat", "ago"), ()),
        "freeze": (("frozen",), ()),
        "model": (("model",), ()),
    }[kind]
    obj = _mapping(obj, where, required=("t", "kind", *keys[0]), optional=keys[1])
    t = checked_number(f"{where}: t", obj["t"], 0.0)
    event: LoggedEvent
    if kind == "params":
        changes = validate_values(_mapping(obj.get("set", {}), f"{where}: set"), f"{where}: set")
        params = start.replace(**changes)
        cut = obj.get("cut", [])
        if not isinstance(cut, list) or not all(isinstance(name, str) for name in cut):
            raise SoundvjError(f"{where}: cut = {short_repr(cut)}: expected a list of parameter names")
        check_known_names(cut, f"{where}: cut")
        event = CommandTaken(ParamCommand(
            params, checked_number(f"{where}: fade", obj.get("fade", 0.0), 0.0, MAX_FADE_SECONDS),
            _text(obj.get("look", ""), f"{where}: look", MAX_LOOK_CHARS), frozenset(cut),
            _flag(obj.get("keep_fade", False), f"{where}: keep_fade"),
        ))
        start = params
    elif kind == "matrix":
        event = MatrixSet(ModulationMatrix.from_list(obj["modulations"], f"{where}: modulations"))
    elif kind == "tap":
        event = TapTaken(checked_number(f"{where}: ago", obj["ago"], -MAX_AGO_SECONDS, MAX_AGO_SECONDS))
    elif kind == "link":
        event = LinkTaken(checked_number(f"{where}: bpm", obj["bpm"], *ANY_BPM),
                          checked_number(f"{where}: beat", obj["beat"], -1e12, 1e12),
                          checked_number(f"{where}: ago", obj["ago"], -MAX_AGO_SECONDS, MAX_AGO_SECONDS))
    elif kind == "freeze":
        event = FreezeSet(_flag(obj["frozen"], f"{where}: frozen"))
    else:
        event = ModelChange(ModelIdentity.from_json(obj["model"], f"{where}: model"))
    return TimedEvent(t, event), start


# -- reading ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SetLog:
    """A set log read and checked whole (every member's CRC, the meta, every timeline line)."""

    path: Path
    meta: SetMeta
    events: tuple[TimedEvent, ...]
    sound_offset: int  # where the stored sound member's bytes start in the file
    sound_size: int

    @property
    def sound_label(self) -> str:
        return f"{self.path}:{self.meta.sound_member}"

    def open_sound(self) -> BinaryIO:
        """The sound member as a seekable binary file, read in place from the archive (close it)."""
        return io.BufferedReader(_FileSlice(open(self.path, "rb"), self.sound_offset, self.sound_size), _READ_BLOCK)


def open_set_log(path: str | os.PathLike) -> SetLog:
    """Read and check the set log at `path`; a missing, damaged, cut-off or foreign file is one
    `SoundvjError` line naming it and what is wrong."""
    p = Path(path)
    if not p.exists():
        raise SoundvjError(f"{p}: not found")
    if p.is_dir():
        raise SoundvjError(f"{p}: is a folder, expected a set log ({SUFFIX} file)")
    try:
        with zipfile.ZipFile(p) as archive:
            return _read_archive(p, archive)
    except SoundvjError:
        raise
    except zipfile.BadZipFile as e:
        if "not a zip file" in str(e).lower():
            raise SoundvjError(f"{p}: not a soundvj set log, or cut off (no ZIP directory at its end)") from None
        raise SoundvjError(f"{p}: damaged ({one_line(e)})") from None
    except (zlib.error, EOFError, struct.error, NotImplementedError, ValueError, OverflowError, KeyError) as e:
        raise SoundvjError(f"{p}: damaged ({type(e).__name__}: {one_line(e)})") from None
    except OSError as e:
        raise SoundvjError(f"{p}: cannot be read ({one_line(e)})") from None


def _read_archive(p: Path, archive: zipfile.ZipFile) -> SetLog:
    members = {info.filename: info for info in archive.infolist()}
    for name in (META_MEMBER, TIMELINE_MEMBER):
        if name not in members:
            raise SoundvjError(f"{p}: missing member {name} (members: {', '.join(sorted(members)) or 'none'})")
    meta_info = members[META_MEMBER]
    if meta_info.file_size > MAX_META_BYTES:
        raise SoundvjError(f"{p}: {META_MEMBER} is {meta_info.file_size} bytes; expected at most {MAX_META_BYTES}")
    with archive.open(meta_info) as f:
        raw = f.read(MAX_META_BYTES + 1)
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SoundvjError(f"{p}: {META_MEMBER}: not valid JSON ({one_line(e)})") from None
    meta = SetMeta.from_json(doc, f"{p}: {META_MEMBER}")
    sound_name = meta.sound_member
    if sound_name not in members:
        raise SoundvjError(f"{p}: missing member {sound_name} (members: {', '.join(sorted(members))})")
    events = _read_timeline(p, archive, members[TIMELINE_MEMBER], meta)
    sound = members[sound_name]
    if sound.compress_type != zipfile.ZIP_STORED:
        raise SoundvjError(f"{p}: {sound_name} is compressed; a set log stores its sound as it is")
    _check_crc(archive, sound)
    return SetLog(p, meta, tuple(events), _data_offset(archive, sound), sound.file_size)


def _read_timeline(p: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, meta: SetMeta) -> list[TimedEvent]:
    events: list[TimedEvent] = []
    previous = meta.start.params
    last_t = 0.0
    end = meta.seconds
    read = 0
    with archive.open(info) as f:
        for number, line in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), start=1):
            where = f"{p}: {TIMELINE_MEMBER} line {number}"
            read += len(line)
            if read > MAX_TIMELINE_BYTES:
                raise SoundvjError(f"{p}: {TIMELINE_MEMBER} is over {MAX_TIMELINE_BYTES} bytes")
            if len(line) > MAX_LINE_BYTES:
                raise SoundvjError(f"{where}: longer than {MAX_LINE_BYTES} bytes")
            if not line.strip():
                continue
            timed, previous = decode_event(line, previous, where)
            if timed.t < last_t:
                raise SoundvjError(f"{where}: t = {timed.t:g} is before the previous event's {last_t:g}")
            if timed.t > end + 1.0:
                raise SoundvjError(f"{where}: t = {timed.t:g} is after the end of the sound ({end:g} s)")
            last_t = timed.t
            events.append(timed)
    if len(events) != meta.events:
        raise SoundvjError(f"{p}: {TIMELINE_MEMBER} has {len(events)} events; {META_MEMBER} says {meta.events}")
    return events


def _check_crc(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Read a member through (zipfile checks its CRC-32 at the end)."""
    with archive.open(info) as f:
        while f.read(_READ_BLOCK):
            pass


def _data_offset(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """Where a member's bytes start: after its local header (whose name and extra field may differ in
    length from the central directory's)."""
    fp = archive.fp
    fp.seek(info.header_offset)
    header = fp.read(zipfile.sizeFileHeader)
    if len(header) != zipfile.sizeFileHeader or header[:4] != zipfile.stringFileHeader:
        raise SoundvjError(f"{archive.filename}: damaged (bad local header for {info.filename})")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + zipfile.sizeFileHeader + name_length + extra_length


class _FileSlice(io.RawIOBase):
    """Bytes [offset, offset + size) of an open file, as a seekable read-only file of their own."""

    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        self._f, self._offset, self._size, self._pos = f, offset, size, 0

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._f.close()
        super().close()

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = min(max(0, base + pos), self._size)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self._size - self._pos)
        if count <= 0:
            return 0
        self._f.seek(self._offset + self._pos)
        data = self._f.read(count)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


# -- writing ---------------------------------------------------------------------------------------

def write_set_file(path: str | os.PathLike, meta: SetMeta, timeline: Path, sound: Path) -> Path:
    """Put the set log together at `path` (atomically) from the meta and the finished timeline and
    sound files."""
    info = zipfile.ZipInfo(META_MEMBER, date_time=time.localtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    text = json.dumps(meta.to_json(), indent=1, allow_nan=False) + "\n"
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        archive.writestr(info, text)
        archive.write(timeline, TIMELINE_MEMBER, compress_type=zipfile.ZIP_DEFLATED)
        archive.write(sound, meta.sound_member, compress_type=zipfile.ZIP_STORED)
    return Path(path)


# -- value checks -----------------------------------------------------------------------------------

def _mapping(value: Any, where: str, required: tuple[str, ...] = (), optional: tuple[str, ...] | None = None
             ) -> Mapping[str, Any]:
    """`value` as a JSON object with the `required` keys and no keys beyond `optional` (None: any)."""
    if not isinstance(value, Mapping):
        raise SoundvjError(f"{where}: expected a JSON object, got {type(value).__name__}")
    for key in required:
        if key not in value:
            raise SoundvjError(f"{where}: missing {key!r}")
    if optional is not None:
        allowed = (*required, *optional)
        for key in value:
            if key not in allowed:
                raise SoundvjError(f"{where}: unknown key {short_repr(key)}; {suggest(str(key)[:100], allowed)}")
    return value


def _text(value: Any, where: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise SoundvjError(f"{where} = {short_repr(value)}: expected a string of at most {limit} characters")
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SoundvjError(f"{where} = {short_repr(value)}: expected true or false")
    return value


def _whole(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SoundvjError(f"{where} = {short_repr(value)}: expected a whole number in [{lo}, {hi}]")
    return value


def _clock(value: Any, where: str) -> ClockState | None:
    if value is None:
        return None
    obj = _mapping(value, where, required=("bpm", "beat", "source"), optional=())
    bpm = checked_number(f"{where}.bpm", obj["bpm"], *ANY_BPM)
    beat = checked_number(f"{where}.beat", obj["beat"], -1e12, 1e12)
    if obj["source"] not in CLOCK_SOURCES:
        raise SoundvjError(f"{where}.source = {short_repr(obj['source'])}: expected one of {', '.join(CLOCK_SOURCES)}")
    return ClockState(bpm=bpm, beat=beat, phase=beat % 1.0, source=obj["source"])

