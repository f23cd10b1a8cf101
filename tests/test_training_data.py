"""Training data: the procedural dataset, frames at the training fps paired with core's mel windows,
the decoded cache, skipped clips, layouts (folder per class, CSV, audio-only) and the held-out split."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

import training.data.decoded as decoded_module
from core.audio.decode import load_mono
from core.audio.mel import MelConfig
from core.audio.windows import WindowConfig, mel_windows, window_mel_frames
from core.errors import SoundvjError
from core.video_writer import Mp4Writer, probe_media
from training.data.config import DataConfig
from training.data.datasets import open_datasets
from training.data.clips import list_clips
from training.data.decoded import decode_frames
from training.data.synth import CLASSES, SynthSettings, make_clip, write_dataset

MEL = MelConfig()
SMALL = SynthSettings(clips_per_class=3, seconds=1.5, size=32)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, SMALL)
    return root


def data_config(path: Path, tmp_path: Path, **kw) -> DataConfig:
    return DataConfig(path=str(path), cache_dir=str(tmp_path / "cache"), **kw)


def write_clip(path: Path, frames: np.ndarray, audio: np.ndarray | None, fps: float = 24.0, sr: int = 44100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    with Mp4Writer(path, fps, w, h, audio=None if audio is None else audio[None], sample_rate=sr if audio is not None else None) as out:
        for frame in frames:
            out.write(frame)


def tone(seconds: float, freq: float = 440.0, sr: int = 44100, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The procedural dataset


def spectral_centroid(audio: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / 44100)
    return float((power * freqs).sum() / power.sum())


def spectral_flatness(audio: np.ndarray, lo: float = 50.0, hi: float = 2000.0) -> float:
    power = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / 44100)
    band = power[(freqs >= lo) & (freqs <= hi)] + 1e-20
    return float(np.exp(np.log(band).mean()) / band.mean())


def test_synth_classes_each_have_their_own_sound_and_look():
    assert len(CLASSES) >= 5
    clips = {name: make_clip(name, 0, SMALL) for name in CLASSES}
    centroid = {name: spectral_centroid(a) for name, (a, _) in clips.items()}
    kurtosis = {name: float(((a - a.mean()) ** 4).mean() / a.var() ** 2) for name, (a, _) in clips.items()}
    assert max(centroid["hum"], centroid["wind"]) < 1000 < centroid["chirps"] < 6000 < centroid["rain"]
    flatness = {name: spectral_flatness(a) for name, (a, _) in clips.items()}
    assert flatness["wind"] > 10 * flatness["hum"]  # both low; wind is noise, hum a tone
    assert kurtosis["crackle"] > 3 * max(kurtosis["hum"], kurtosis["wind"])  # impulsive clicks
    colours = {name: v.reshape(-1, 3).mean(0) for name, (_, v) in clips.items()}
    names = list(colours)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.linalg.norm(colours[a] - colours[b]) > 30, f"{a} and {b} look alike"
    motion = {name: np.abs(np.diff(v.astype(float), axis=0)).mean() for name, (_, v) in clips.items()}
    assert all(m > 0.3 for m in motion.values())  # every class moves
    # Reproducible: a clip is a function of (seed, class, index).
    again_audio, again_video = make_clip("rain", 0, SMALL)
    assert np.array_equal(again_audio, clips["rain"][0]) and np.array_equal(again_video, clips["rain"][1])
    assert not np.array_equal(make_clip("rain", 1, SMALL)[0], clips["rain"][0])


def test_synth_writes_mp4_clips_with_sound(synth_dir):
    files = sorted(synth_dir.glob("*/*.mp4"))
    assert len(files) == len(CLASSES) * SMALL.clips_per_class
    assert sorted(p.name for p in synth_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) == sorted(CLASSES)
    info = probe_media(files[0])
    assert info.has_video and info.has_audio
    assert (info.width, info.height) == (32, 32) and info.frame_count == 36
    assert abs(info.audio_duration - 1.5) < 0.01


# ---------------------------------------------------------------------------------------------
# Frames and windows


def test_frames_are_taken_at_the_training_fps(tmp_path):
    # A 12 fps clip whose frame i has grey level 20 * i: at 24 fps each shows twice, at 6 fps every other one.
    levels = np.arange(12) * 20
    frames = np.repeat(levels[:, None, None, None], 16 * 16 * 3, axis=1).reshape(12, 16, 16, 3).astype(np.uint8)
    path = tmp_path / "ramp.mp4"
    write_clip(path, frames, tone(1.0), fps=12)

    def grey(decoded: np.ndarray) -> list[int]:
        return [int(np.rint(f.mean() / 20)) for f in decoded]

    assert grey(decode_frames(path, 24, 24, 16)) == [i // 2 for i in range(24)]
    assert grey(decode_frames(path, 6, 6, 16)) == [0, 2, 4, 6, 8, 10]
    assert grey(decode_frames(path, 12, 100, 16)) == list(range(12))  # never past the video's end


def write_mkv_ramp(path: Path, frames: int, rate: int) -> None:
    """An H.264/AAC .mkv (millisecond timestamps) whose frame i has grey level 10 * i."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=rate)
        video.width = video.height = 16
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        for i in range(frames):
            image = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 10 * i, np.uint8), format="rgb24")
            container.mux(video.encode(image))
        container.mux(video.encode())
        samples = tone(frames / rate, sr=48000)[None]
        for k in range(0, samples.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, k : k + 1024]), format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, k
            container.mux(audio.encode(chunk))
        container.mux(audio.encode())


def test_frames_at_the_training_fps_from_millisecond_timestamps(tmp_path):
    path = tmp_path / "ramp.mkv"
    write_mkv_ramp(path, 24, 12)
    decoded = decode_frames(path, 24, 48, 16)
    assert [int(np.rint(f.mean() / 10)) for f in decoded] == [i // 2 for i in range(48)]


def test_frames_are_centre_cropped_and_resized(tmp_path):
    # 48 x 32: a red band on the left and right 8 columns, green in the middle square.
    frame = np.zeros((32, 48, 3), dtype=np.uint8)
    frame[:, :8] = frame[:, 40:] = (255, 0, 0)
    frame[:, 8:40] = (0, 255, 0)
    path = tmp_path / "wide.mp4"
    write_clip(path, np.stack([frame] * 4), tone(0.5), fps=8)
    out = decode_frames(path, 8, 4, 16)
    assert out.shape == (4, 16, 16, 3)
    assert out[..., 1].mean() > 200 and out[..., 0].mean() < 40  # only the green square is left


def test_items_pair_frames_with_the_windows_core_gives_at_inference(synth_dir, tmp_path):
    config = data_config(synth_dir, tmp_path, clip_frames=10, item_stride=4)
    train, holdout, report = open_datasets(config, MEL, 32, verbose=False)
    assert train.classes == tuple(sorted(CLASSES)) == holdout.classes
    assert len(train) == sum(1 for c in train.clips for _ in range(0, c.num_frames - 10 + 1, 4))
    item = train[5]
    w = window_mel_frames(MEL, WindowConfig(24.0, 1.0))
    assert item["mel"].shape == (10, MEL.n_mels, w) and item["mel"].dtype == torch.float32
    assert item["frames"].shape == (10, 3, 32, 32)
    assert -1.0 <= item["frames"].min() and item["frames"].max() <= 1.0
    clip = train.clips[item["clip"]]
    assert item["label"].item() == train.classes.index(clip.entry.label)
    start = item["start"]
    expected_mel = mel_windows(load_mono(clip.entry.path, MEL.sample_rate), MEL, WindowConfig(24.0, 1.0))
    assert torch.equal(item["mel"], expected_mel[start : start + 10])  # the same code, the same numbers
    expected_frames = decode_frames(clip.entry.path, 24.0, clip.num_frames, 32)[start : start + 10]
    as_uint8 = ((item["frames"] + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(as_uint8, expected_frames)
    whole = train.whole_clip(item["clip"])
    assert whole["mel"].shape[0] == whole["frames"].shape[0] == clip.num_frames == 36


def test_held_out_split_is_per_class_disjoint_and_stable(synth_dir, tmp_path):
    config = data_config(synth_dir, tmp_path, holdout_fraction=0.34)
    train, holdout, report = open_datasets(config, MEL, 32, verbose=False)
    train_paths = {c.entry.path for c in train.clips}
    holdout_paths = {c.entry.path for c in holdout.clips}
    assert not train_paths & holdout_paths
    assert len(train_paths | holdout_paths) == 15
    assert sorted(c.entry.label for c in holdout.clips) == sorted(CLASSES)  # one per class
    assert (report.train_clips, report.holdout_clips) == (10, 5)
    _, again, _ = open_datasets(config, MEL, 32, verbose=False)
    assert {c.entry.path for c in again.clips} == holdout_paths


def test_decoded_cache_is_reused_and_follows_file_changes(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for label, freq in (("low", 200.0), ("high", 3000.0)):
        write_clip(root / label / "a.mp4", np.full((30, 16, 16, 3), 100, np.uint8), tone(1.25, freq))
    config = data_config(root, tmp_path, clip_frames=2)
    first, _, _ = open_datasets(config, MEL, 16, verbose=False)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(decoded_module, "load_mono", no_decoding)
    cached, _, _ = open_datasets(config, MEL, 16, verbose=False)
    assert torch.equal(cached[0]["mel"], first[0]["mel"])
    monkeypatch.undo()
    # A changed file (new size and mtime) is decoded again.
    write_clip(root / "low" / "a.mp4", np.full((36, 16, 16, 3), 200, np.uint8), tone(1.5, 200.0))
    changed, _, _ = open_datasets(config, MEL, 16, verbose=False)
    low = changed.classes.index("low")
    clip = next(c for c in changed.clips if changed.labels[changed.clips.index(c)] == low)
    assert clip.num_frames == 36
    # Other settings, other cache entries.
    other, _, _ = open_datasets(data_config(root, tmp_path, clip_frames=2, fps=12.0), MEL, 16, verbose=False)
    assert other.clips[0].num_frames != changed.clips[0].num_frames


def test_corrupt_silent_and_short_clips_are_skipped_and_counted(tmp_path):
    root = tmp_path / "data"
    frames = np.full((36, 16, 16, 3), 90, np.uint8)
    for label in ("a", "b"):
        for i in range(2):
            write_clip(root / label / f"ok{i}.mp4", frames, tone(1.5, 300.0 * (i + 1)))
    (root / "a" / "corrupt.mp4").write_bytes(b"\x00" * 100)
    write_clip(root / "a" / "silent.mp4", frames, np.zeros(66150, np.float32))
    write_clip(root / "b" / "short.mp4", frames[:12], tone(0.5))
    write_clip(root / "b" / "mute.mp4", frames, None)  # no audio track at all
    train, holdout, report = open_datasets(data_config(root, tmp_path, holdout_fraction=0.0), MEL, 16, verbose=False)
    kinds = sorted(p.kind for p in report.problems)
    assert kinds == ["silent", "too-short", "unreadable", "unreadable"]
    assert {p.path.name for p in report.problems} == {"corrupt.mp4", "silent.mp4", "short.mp4", "mute.mp4"}
    mute = next(p for p in report.problems if p.path.name == "mute.mp4")
    assert mute.reason == "unreadable: has no audio stream (contains video)"
    assert len(train.clips) == 4 and not holdout.clips
    summary = report.summary()
    assert "4 of 8 clips usable" in summary and "1 silent, 1 too-short, 2 unreadable" in summary


def test_one_class_or_no_clips_is_a_one_line_error(tmp_path):
    root = tmp_path / "data"
    write_clip(root / "only" / "a.mp4", np.full((30, 16, 16, 3), 9, np.uint8), tone(1.25))
    with pytest.raises(SoundvjError) as err:
        open_datasets(data_config(root, tmp_path), MEL, 16, verbose=False)
    assert "1 class (only); expected at least 2 classes" in str(err.value) and "\n" not in str(err.value)
    (root / "empty").mkdir()
    with pytest.raises(SoundvjError, match="no video clips found"):
        open_datasets(data_config(root / "empty", tmp_path), MEL, 16, verbose=False)
    with pytest.raises(SoundvjError, match="data.path: not set"):
        open_datasets(DataConfig(), MEL, 16, verbose=False)


def write_wav(path: Path, audio: np.ndarray, sr: int = 22050) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sr)
        f.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def test_audio_dataset_from_a_csv(tmp_path):
    root = tmp_path / "sounds"
    rows = ["path,label"]
    for label, freq in (("low", 150.0), ("high", 4000.0)):
        for i in range(2):
            write_wav(root / f"{label}{i}.wav", tone(1.2, freq * (1 + i / 10), sr=22050))
            rows.append(f"{label}{i}.wav,{label}")
    csv_path = root / "labels.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    config = data_config(csv_path, tmp_path, kind="audio", clip_frames=3, holdout_fraction=0.0)
    train, _, report = open_datasets(config, MEL, None, verbose=False)
    assert train.classes == ("high", "low") and report.problems == ()
    item = train[0]
    assert "frames" not in item and item["mel"].shape[:2] == (3, MEL.n_mels)
    expected = mel_windows(load_mono(train.clips[0].entry.path, MEL.sample_rate), MEL, WindowConfig(24.0, 1.0))
    assert torch.equal(item["mel"], expected[:3])


def test_csv_rows_are_checked(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a.wav,low\nb.wav\n")
    with pytest.raises(SoundvjError, match=r"bad.csv' line 2: expected 'path,label'"):
        list_clips(bad, "audio")
    bad.write_text("a.txt,low\n")
    with pytest.raises(SoundvjError, match="is not one of"):
        list_clips(bad, "audio")
    with pytest.raises(SoundvjError, match="not found"):
        list_clips(tmp_path / "missing.csv", "audio")


def test_mel_strip_packing_is_exact_or_refused():
    from training.data.decoded import pack_windows

    audio = torch.from_numpy(tone(1.3, 700.0)) * torch.linspace(0, 1, 57330)
    windows = mel_windows(audio, MEL, WindowConfig(24.0, 0.5))
    from core.audio.windows import frame_end_sample

    starts = [frame_end_sample(t, MEL.sample_rate, 24.0) // MEL.hop for t in range(windows.shape[0])]
    strip = pack_windows(windows, starts)
    assert strip is not None and strip.shape[1] < windows.shape[0] * windows.shape[2] / 5
    assert pack_windows(windows + torch.rand_like(windows), starts) is None  # inconsistent overlaps
    assert pack_windows(windows, [m + (t % 2) for t, m in enumerate(starts)]) is None  # wrong offsets
