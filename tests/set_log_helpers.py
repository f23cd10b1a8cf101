"""Set logs made for tests: written by the real writer side (`TimelineEncoder`, `AudioWriter`,
`write_set_file`), or a real one rewritten member by member to damage it on purpose."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np

from core.audio.windows import frame_end_sample
from core.audio_writer import AudioWriter
from core.control import ModulationMatrix
from core.params import Params
from core.set_log import ModelIdentity, SetMeta, SetStart, TimelineEncoder, write_set_file
from core.show_control import ShowEvent

SR = 44100
TINY = ModelIdentity("tiny test model", None)  # tests.pipeline_helpers.tiny_model(): built in memory


def sixteen_bit_noise(seconds: float, seed: int = 0, amp: float = 0.3) -> np.ndarray:
    """White noise on the 16-bit grid (as a 16-bit sound card or WAV gives it): FLAC keeps it exactly."""
    x = np.random.default_rng(seed).standard_normal(int(seconds * SR)) * amp
    return (np.round(np.clip(x, -1, 1) * 32767) / 32768).astype(np.float32)


def write_set(path: Path, sound: np.ndarray, events: list[tuple[float, ShowEvent]], params: Params | None = None,
              codec: str = "flac", model: ModelIdentity = TINY, matrix: ModulationMatrix = ModulationMatrix()) -> Path:
    """A set log at `path`: `sound` (mono at SR) and `events` as (audio time, event), starting at `params`."""
    params = params or Params()
    start = SetStart(at=0.0, params=params, fade_from=None, fade_seconds=0.0, fade_elapsed=0.0, look="",
                     frozen=False, clock=None, matrix=matrix, model=model)
    sound_path, timeline_path = path.with_name(path.name + ".sound"), path.with_name(path.name + ".timeline")
    writer = AudioWriter(sound_path, SR, codec)
    writer.write(sound)
    writer.close()
    encoder = TimelineEncoder(params, lambda _model: model)
    count = 0
    with open(timeline_path, "w", encoding="utf-8") as f:
        for t, event in events:
            line = encoder.line(t, event)
            if line is not None:
                f.write(line + "\n")
                count += 1
    meta = SetMeta(sample_rate=SR, start=start, sound_codec=codec, sound_samples=sound.size, events=count)
    write_set_file(path, meta, timeline_path, sound_path)
    sound_path.unlink()
    timeline_path.unlink()
    return path


def rewrite_set(source: Path, target: Path, replace: dict[str, bytes | None]) -> Path:
    """`source` copied member by member to `target`, with members replaced (bytes) or left out (None)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            if info.filename in replace:
                data = replace[info.filename]
                if data is None:
                    continue
            else:
                data = old.read(info)
            new.writestr(zipfile.ZipInfo(info.filename, date_time=time.localtime()[:6]), data,
                         compress_type=info.compress_type)
    return target


def member_ranges(path: Path) -> dict[str, tuple[int, int]]:
    """Where each member's (possibly compressed) bytes lie in the archive: name -> (start, end)."""
    out = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
        for info in archive.infolist():
            f.seek(info.header_offset + 26)
            name_length, extra_length = np.frombuffer(f.read(4), dtype="<u2")
            start = info.header_offset + 30 + int(name_length) + int(extra_length)
            out[info.filename] = (start, start + info.compress_size)
    return out


def frame_time(k: int, fps: float) -> float:
    """The audio time at which frame k's sound ends (what replay and the set log call the frame's time)."""
    return frame_end_sample(k, SR, fps) / SR

