"""Mp4Writer / probe_media: files are written for real, then decoded back with PyAV."""

import json
import os
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from core.errors import SoundvjError
from core.video_writer import Mp4Writer, check_output_path, probe_media, to_uint8_rgb

W, H = 64, 48
SR = 44100
SECONDS = 1.5


def sine(freq: float, seconds: float, sr: int = SR, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([wave] * channels) if channels > 1 else wave


def chirp(seconds: float, sr: int = SR) -> np.ndarray:
    # A sweep has one sharp cross-correlation peak, so it shows any time shift (e.g. unhandled AAC priming).
    t = np.arange(int(seconds * sr)) / sr
    f0, f1 = 200.0, 4000.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (0.5 * np.sin(phase)).astype(np.float32)


def noise_frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def render(path: Path, fps, seconds: float = SECONDS, audio=None, sample_rate=SR, frames=None) -> int:
    with Mp4Writer(path, fps, W, H, audio, sample_rate if audio is not None else None, preset="ultrafast") as w:
        count = round(seconds * float(w.fps)) if frames is None else frames
        for i in range(count):
            w.write(noise_frame(i))
    return count


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        chunks = [f.to_ndarray() for f in c.decode(stream)]
        return np.concatenate(chunks, axis=1), stream.codec_context.sample_rate


def decode_rgb_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def leftovers(folder: Path) -> list[str]:
    """Hidden files beside the output: the writer's temp file and the writability probe."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("fps", [24, 30, 29.97])
def test_frame_count_exact_and_audio_matches_video_duration(tmp_path, fps):
    out = tmp_path / "out.mp4"
    written = render(out, fps, audio=sine(440, 2.0), sample_rate=SR)
    info = probe_media(out)
    assert info.frame_count == written
    assert (info.width, info.height) == (W, H)
    assert info.video_codec == "h264"
    expected_fps = Fraction(30000, 1001) if fps == 29.97 else Fraction(fps)
    assert info.fps == pytest.approx(float(expected_fps))
    assert info.video_duration == pytest.approx(written / float(expected_fps), abs=1e-3)
    assert abs(info.audio_duration - info.video_duration) < 1 / info.fps
    assert (info.has_audio, info.audio_codec, info.channels, info.sample_rate) == (True, "aac", 2, SR)


@pytest.mark.parametrize("audio_seconds", [0.5, 4.0])
def test_audio_shorter_or_longer_than_video_is_padded_or_trimmed(tmp_path, audio_seconds):
    out = tmp_path / "out.mp4"
    render(out, 24, audio=sine(440, audio_seconds), sample_rate=SR)
    info = probe_media(out)
    assert info.audio_duration == pytest.approx(SECONDS, abs=1 / 24)
    samples, _ = decode_audio(out)
    if audio_seconds < SECONDS:
        # Past the input's end there is (near) silence.
        assert np.abs(samples[:, int(0.8 * SR) : int(1.4 * SR)]).max() < 0.02


def test_audio_is_interleaved_with_video_not_queued_until_close(tmp_path):
    with Mp4Writer(tmp_path / "out.mp4", 30, W, H, sine(440, 2.0), SR, preset="ultrafast") as w:
        for i in range(30):
            w.write(noise_frame(i))
            video_samples = (i + 1) * SR / 30
            # Audio keeps within one AAC frame (1024 samples) of the video written so far.
            assert video_samples - 1024 <= w.audio_samples_sent <= video_samples


def test_decoded_sine_keeps_its_frequency_and_mono_stays_mono(tmp_path):
    out = tmp_path / "out.mp4"
    render(out, 30, audio=torch.from_numpy(sine(440, SECONDS, channels=1)), sample_rate=SR)
    info = probe_media(out)
    assert (info.audio_codec, info.channels) == ("aac", 1)
    samples, sr = decode_audio(out)
    spectrum = np.abs(np.fft.rfft(samples[0]))
    peak_hz = np.argmax(spectrum) * sr / samples.shape[1]
    assert abs(peak_hz - 440) < 2


def test_decoded_audio_is_aligned_with_input_so_priming_is_hidden(tmp_path):
    out = tmp_path / "out.mp4"
    sweep = chirp(SECONDS)
    render(out, 24, audio=np.stack([sweep, -sweep]), sample_rate=SR)
    decoded, _ = decode_audio(out)
    n = len(sweep)
    left = decoded[0, :n]
    lags = np.arange(-2048, 2049)
    xcorr = [np.dot(left[max(0, k) : n + min(0, k)], sweep[max(0, -k) : n - max(0, k)]) for k in lags]
    assert abs(lags[int(np.argmax(xcorr))]) <= 2
    # Right channel is the inverted sweep: the channels aren't swapped or mixed.
    assert np.corrcoef(decoded[0, :n], sweep)[0, 1] > 0.95
    assert np.corrcoef(decoded[1, :n], sweep)[0, 1] < -0.95


def test_nonstandard_sample_rate_is_resampled_to_48k(tmp_path):
    out = tmp_path / "out.mp4"
    render(out, 24, audio=sine(440, SECONDS, sr=22000), sample_rate=22000)
    info = probe_media(out)
    assert info.sample_rate == 48000
    samples, sr = decode_audio(out)
    peak_hz = np.argmax(np.abs(np.fft.rfft(samples[0]))) * sr / samples.shape[1]
    assert abs(peak_hz - 440) < 2


def test_solid_colours_survive_in_every_accepted_frame_form(tmp_path):
    out = tmp_path / "out.mp4"
    red_hwc = np.zeros((H, W, 3), np.uint8)
    red_hwc[..., 0] = 255
    red_float = torch.full((3, H, W), -1.0)
    red_float[0] = 1.0
    forms = [
        red_hwc,  # numpy HWC uint8
        torch.from_numpy(red_hwc),  # torch HWC uint8
        torch.from_numpy(red_hwc).permute(2, 0, 1).contiguous(),  # torch CHW uint8
        red_float,  # the generator's raw [-1,1] CHW output
        red_float[None],  # ... with its batch dimension
    ]
    with Mp4Writer(out, 24, W, H, preset="ultrafast") as w:
        for frame in forms:
            w.write(frame)
    frames = decode_rgb_frames(out)
    assert len(frames) == len(forms)
    for rgb in frames:
        assert np.abs(rgb.reshape(-1, 3).mean(0) - [255, 0, 0]).max() < 6


def test_to_uint8_rgb_maps_generator_range_and_layout():
    img = torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1).expand(3, 2, 4)
    out = to_uint8_rgb(img)
    assert out.dtype == torch.uint8 and out.shape == (2, 4, 3)
    assert out[0, 0].tolist() == [0, 128, 255]


def test_no_audio_means_no_audio_stream(tmp_path):
    out = tmp_path / "out.mp4"
    written = render(out, 24)
    info = probe_media(out)
    assert info.frame_count == written
    assert (info.has_audio, info.audio_codec, info.audio_duration) == (False, None, None)


def test_exception_in_with_leaves_no_output_and_no_temp_file(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="render failed"):
        with Mp4Writer(out, 24, W, H, sine(440, 1.0), SR, preset="ultrafast") as w:
            for i in range(30):  # enough for the encoder to emit packets, so the temp file exists
                w.write(noise_frame(i))
            # While rendering, only the hidden temp file exists, never OUT itself.
            assert not out.exists()
            assert w.temp_path.exists() and w.temp_path.parent == tmp_path
            assert w.temp_path.name.startswith(".") and not w.temp_path.name.endswith(".mp4")
            raise RuntimeError("render failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_interrupt_keeps_existing_output_unchanged(tmp_path, interrupt):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the previous render")
    with pytest.raises(interrupt):
        with Mp4Writer(out, 24, W, H, preset="ultrafast") as w:
            for i in range(5):
                w.write(noise_frame(i))
            raise interrupt()
    assert out.read_bytes() == b"the previous render"
    assert leftovers(tmp_path) == []


def test_abort_and_dropped_writer_clean_up(tmp_path):
    out = tmp_path / "out.mp4"
    w = Mp4Writer(out, 24, W, H, preset="ultrafast")
    w.write(noise_frame(0))
    w.abort()
    assert list(tmp_path.iterdir()) == []
    # Never closed: garbage collection removes the temp file too.
    w = Mp4Writer(out, 24, W, H, preset="ultrafast")
    for i in range(30):
        w.write(noise_frame(i))
    temp = w.temp_path
    assert temp.exists()
    del w
    assert not temp.exists() and not out.exists()


def test_clean_close_replaces_existing_output(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the previous render")
    written = render(out, 24, frames=3)
    assert probe_media(out).frame_count == written
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_odd_size_is_a_clear_error(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(SoundvjError, match=r"even.*65x48") as err:
        Mp4Writer(out, 24, 65, 48)
    assert str(out) in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_check_output_path_missing_folder(tmp_path):
    out = tmp_path / "no-such-folder" / "out.mp4"
    with pytest.raises(SoundvjError, match="does not exist") as err:
        check_output_path(out)
    assert str(out) in str(err.value) and "\n" not in str(err.value)


def test_check_output_path_directory(tmp_path):
    folder = tmp_path / "clip.mp4"
    folder.mkdir()
    with pytest.raises(SoundvjError, match="is a folder") as err:
        check_output_path(folder)
    assert str(folder) in str(err.value)


def test_check_output_path_extension(tmp_path):
    with pytest.raises(SoundvjError, match=r"\.mp4") as err:
        check_output_path(tmp_path / "out.avi")
    assert "out.avi" in str(err.value)
    assert check_output_path(tmp_path / "out.MOV") == tmp_path / "out.MOV"
    assert leftovers(tmp_path) == []


def can_create_file_in(folder: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder no one here can create files in. chmod stops ordinary users but not root, so as root
    this falls back to /sys, where sysfs refuses new files (EACCES) even to root."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if not can_create_file_in(folder):
            yield folder
        elif not can_create_file_in(Path("/sys")):
            yield Path("/sys")
        else:
            pytest.skip("no folder here refuses writes to this user (root with a writable /sys)")
    finally:
        folder.chmod(0o755)


def test_check_output_path_read_only_folder(read_only_folder):
    out = read_only_folder / "out.mp4"
    with pytest.raises(SoundvjError, match="cannot write") as err:
        check_output_path(out)
    assert str(out) in str(err.value) and "\n" not in str(err.value)


def test_probe_media_rejects_missing_and_garbage_files(tmp_path):
    with pytest.raises(SoundvjError, match="no such file"):
        probe_media(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(SoundvjError, match="junk.mp4") as err:
        probe_media(junk)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed; PyAV checks above cover it")
def test_ffprobe_agrees_on_codecs_and_durations(tmp_path):
    out = tmp_path / "out.mp4"
    render(out, 29.97, audio=sine(440, 2.0), sample_rate=SR)
    shown = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(out)], capture_output=True, text=True, check=True
    )
    streams = {s["codec_type"]: s for s in json.loads(shown.stdout)["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert streams["video"]["pix_fmt"] == "yuv420p"
    assert streams["audio"]["codec_name"] == "aac"
    assert int(streams["audio"]["channels"]) == 2
    assert abs(float(streams["video"]["duration"]) - float(streams["audio"]["duration"])) < 1 / 29.97


# --- live (streaming) audio: chunks arrive through write_audio() while frames are written ---


def record_live(path: Path, fps, frames: int, audio: np.ndarray, seed: int = 0) -> dict:
    """Feed `frames` frames and `audio` ([channels, n]) in random-sized chunks, jittered around the
    video's clock, the way a recorder thread would; returns how many chunks came before/after the frames.
    Checks after every call that audio is encoded as soon as both it and the video are there."""
    rng = np.random.default_rng(seed)
    channels, n = audio.shape
    cuts = np.cumsum(rng.integers(1, 3000, n // 200 + 2))
    chunks = np.split(audio, cuts[cuts < n], axis=1)
    chunks = [c[0] if channels == 1 and i % 2 else c for i, c in enumerate(chunks)]  # mono as [n] or [1, n]
    fed = {"before": 0, "after": 0, "samples": 0}

    def feed(w: Mp4Writer) -> None:
        chunk = chunks.pop(0)
        w.write_audio(torch.from_numpy(chunk) if len(chunks) % 3 == 0 else chunk)
        fed["samples"] += chunk.shape[-1]
        check(w)

    def check(w: Mp4Writer) -> None:
        video_samples = int(w.frame_count * SR / w.fps)
        encodable = min(video_samples, fed["samples"])
        assert encodable - 1024 < w.audio_samples_sent <= encodable
        assert w.audio_samples_sent + w.audio_samples_buffered == fed["samples"]

    with Mp4Writer(path, fps, W, H, sample_rate=SR, audio_channels=channels, preset="ultrafast") as w:
        for _ in range(2):  # the sound card starts before the first frame is rendered
            feed(w)
            fed["before"] += 1
        for i in range(frames):
            clock = (i + rng.uniform(-2, 2)) / float(w.fps) * SR
            while len(chunks) > 2 and fed["samples"] < clock:  # the last two come after the last frame
                feed(w)
            w.write(noise_frame(i))
            check(w)
        while chunks:
            feed(w)
            fed["after"] += 1
    return fed


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("fps", [24, 29.97])
def test_live_audio_in_random_chunks_matches_input_and_video(tmp_path, fps, channels):
    out = tmp_path / "out.mp4"
    rate = Fraction(30000, 1001) if fps == 29.97 else Fraction(fps)
    frames = 45
    n = round(frames * SR / rate)
    sweep = chirp(n / SR)
    tone = sine(440, n / SR, channels=1)
    audio = np.stack([sweep, tone][:channels])
    fed = record_live(out, fps, frames, audio, seed=channels)
    assert fed["before"] > 0 and fed["after"] > 0

    info = probe_media(out)
    assert info.frame_count == frames
    assert (info.audio_codec, info.channels, info.sample_rate) == ("aac", channels, SR)
    assert abs(info.audio_duration - info.video_duration) < 1 / float(rate)

    decoded, sr = decode_audio(out)
    assert decoded.shape[0] == channels
    left = decoded[0, :n]
    lags = np.arange(-2048, 2049)
    xcorr = [np.dot(left[max(0, k) : n + min(0, k)], sweep[max(0, -k) : n - max(0, k)]) for k in lags]
    assert abs(lags[int(np.argmax(xcorr))]) <= 2
    assert np.corrcoef(left, sweep)[0, 1] > 0.95
    if channels == 2:
        right = decoded[1, :n]
        peak_hz = np.argmax(np.abs(np.fft.rfft(right))) * sr / len(right)
        assert abs(peak_hz - 440) < 2
        assert np.corrcoef(right, tone)[0, 1] > 0.95  # channels neither swapped nor mixed


@pytest.mark.parametrize("audio_seconds", [0.5, 4.0])
def test_live_audio_shorter_is_padded_and_longer_is_trimmed(tmp_path, audio_seconds):
    out = tmp_path / "out.mp4"
    tone = sine(440, audio_seconds, channels=1)[None]
    record_live(out, 24, round(SECONDS * 24), tone)
    info = probe_media(out)
    assert info.frame_count == round(SECONDS * 24)
    assert info.audio_duration == pytest.approx(SECONDS, abs=1 / 24)
    decoded, sr = decode_audio(out)
    head = decoded[0, : int(0.45 * SR)]
    assert abs(np.argmax(np.abs(np.fft.rfft(head))) * sr / len(head) - 440) < 3
    if audio_seconds < SECONDS:
        assert np.abs(decoded[:, int(0.55 * SR) : int(1.45 * SR)]).max() < 0.02
    else:
        # The input runs on right up to the end (not padded), and nothing past the video is kept.
        tail = slice(int(1.0 * SR), int(1.45 * SR))
        assert np.corrcoef(decoded[0, tail], tone[0, tail])[0, 1] > 0.95
        assert decoded.shape[1] < round(SECONDS * SR) + 1024


def test_live_audio_surplus_is_dropped_at_close_not_encoded_early(tmp_path):
    # Audio far ahead of the video waits in the buffer; close() drops what lies past the last frame.
    out = tmp_path / "out.mp4"
    with Mp4Writer(out, 24, W, H, sample_rate=SR, audio_channels=2, preset="ultrafast") as w:
        w.write_audio(sine(440, 3.0))
        assert (w.audio_samples_sent, w.audio_samples_buffered) == (0, 3 * SR)
        for i in range(12):
            w.write(noise_frame(i))
        assert w.audio_samples_sent == SR // 2 - (SR // 2) % 1024
    assert w.audio_samples_buffered == 0
    info = probe_media(out)
    assert info.audio_duration == pytest.approx(0.5, abs=1 / 24)


def test_live_audio_nan_and_inf_become_silence(tmp_path):
    out = tmp_path / "out.mp4"
    garbage = np.full((2, SR), np.nan, np.float32)
    garbage[0, ::2] = np.inf
    garbage[1, ::3] = -np.inf
    with Mp4Writer(out, 24, W, H, sample_rate=SR, audio_channels=2, preset="ultrafast") as w:
        w.write_audio(garbage)
        w.write_audio(np.full((2, SR), 7.0, np.float32))  # clipped to full scale, still encodable
        for i in range(48):
            w.write(noise_frame(i))
    decoded, _ = decode_audio(out)
    assert np.isfinite(decoded).all()
    assert np.abs(decoded[:, : int(0.9 * SR)]).max() < 0.02


def test_live_audio_with_no_video_after_it_is_rejected_like_any_empty_recording(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="no frames"):
        with Mp4Writer(out, 24, W, H, sample_rate=SR, audio_channels=1, preset="ultrafast") as w:
            w.write_audio(sine(440, 1.0, channels=1))
    assert list(tmp_path.iterdir()) == []


def test_write_audio_programming_errors_are_clear_and_leave_the_writer_usable(tmp_path):
    out = tmp_path / "out.mp4"
    with Mp4Writer(out, 24, W, H, preset="ultrafast") as w:
        with pytest.raises(ValueError, match="no audio track.*audio_channels"):
            w.write_audio(sine(440, 0.1))
        w.write(noise_frame(0))
    with Mp4Writer(out, 24, W, H, sine(440, 1.0), SR, preset="ultrafast") as w:
        with pytest.raises(ValueError, match="whole track up front"):
            w.write_audio(sine(440, 0.1))
        w.write(noise_frame(0))
    with Mp4Writer(out, 24, W, H, sample_rate=SR, audio_channels=2, preset="ultrafast") as w:
        with pytest.raises(ValueError, match=r"expects \[2, n\].*got shape \(4410,\)"):
            w.write_audio(sine(440, 0.1, channels=1))
        with pytest.raises(ValueError, match=r"got shape \(4410, 2\); it looks like \[n, channels\]"):
            w.write_audio(sine(440, 0.1).T)
        with pytest.raises(ValueError, match="float samples.*int16"):
            w.write_audio((sine(440, 0.1) * 32767).astype(np.int16))
        assert w.audio_samples_buffered == 0  # nothing half-appended
        w.write_audio(sine(440, 0.1))
        w.write(noise_frame(0))
    assert probe_media(out).channels == 2
    with Mp4Writer(out, 24, W, H, sample_rate=SR, audio_channels=1, preset="ultrafast") as w:
        with pytest.raises(ValueError, match=r"expects \[1, n\] or \[n\]"):
            w.write_audio(sine(440, 0.1, channels=2))
        w.write(noise_frame(0))
    with pytest.raises(RuntimeError, match="after close"):
        w.write_audio(sine(440, 0.1, channels=1))
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sample_rate=SR, audio_channels=3), "1 or 2"),
        (dict(audio_channels=2), "sample_rate is required"),
        (dict(sample_rate=22000, audio_channels=2), "natively.*22000"),
        (dict(audio=np.zeros((2, 10), np.float32), sample_rate=SR, audio_channels=2), "not both"),
    ],
)
def test_live_audio_constructor_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Mp4Writer(tmp_path / "out.mp4", 24, W, H, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_live_recording_exception_leaves_no_output_and_keeps_existing(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the previous recording")
    with pytest.raises(RuntimeError, match="sound card gone"):
        with Mp4Writer(out, 24, W, H, sample_rate=SR, audio_channels=2, preset="ultrafast") as w:
            for i in range(30):
                w.write_audio(sine(440, 1 / 24))
                w.write(noise_frame(i))
            assert w.temp_path.exists() and w.audio_samples_sent > 0
            raise RuntimeError("sound card gone")
    assert out.read_bytes() == b"the previous recording"
    assert leftovers(tmp_path) == []
