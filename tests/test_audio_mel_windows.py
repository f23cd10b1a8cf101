"""The fixed-reference mel front end and the per-frame windows (offline == streaming, causal, padded)."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from core.audio import (
    MelConfig,
    MelSpectrogramFrontEnd,
    StreamingWindower,
    WindowConfig,
    frame_end_sample,
    mel_windows,
    num_video_frames,
    window_mel_frames,
)
from core.errors import SoundvjError

SR = 44100


def sine(freq: float, seconds: float, amplitude: float = 1.0, sample_rate: int = SR) -> torch.Tensor:
    t = torch.arange(round(seconds * sample_rate), dtype=torch.float64) / sample_rate
    return (amplitude * torch.sin(2 * math.pi * freq * t)).float()


def noise(seconds: float, seed: int, amplitude: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = amplitude * torch.randn(round(seconds * SR), generator=g)
    # A loud/quiet envelope so the windows differ frame to frame and cover the dB range.
    return x * torch.linspace(0, 6 * math.pi, x.shape[0]).sin().abs()


@pytest.fixture(autouse=True)
def one_torch_thread():
    # These are many small STFTs: with 2 OpenMP threads on a 2-core machine that is busy elsewhere,
    # spin-waiting made this file 30x slower; one thread is as fast when idle and steady when not.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- mel --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def front_end() -> MelSpectrogramFrontEnd:
    return MelSpectrogramFrontEnd(MelConfig())


def test_mel_shape_range_and_causal_frame_count(front_end):
    mel = front_end(noise(1.0, 0))
    assert mel.shape == (128, 1 + (SR - 2048) // 512)  # uncentred: 83 frames, none past the end
    assert mel.dtype == torch.float32
    assert float(mel.min()) >= 0.0 and float(mel.max()) <= 1.0
    assert float(mel.max()) > 0.5 and float(mel.min()) < 0.2  # actually spans the range
    assert MelConfig().num_frames(SR) == mel.shape[1] and MelConfig().num_frames(100) == 0


def test_silence_is_exactly_zero(front_end):
    assert torch.equal(front_end(torch.zeros(8192)), torch.zeros(128, 13))


def test_full_scale_sine_lands_near_the_top(front_end):
    mel = front_end(sine(1000.0, 0.5))
    assert float(mel.max()) > 0.95  # ~0 dB re full scale
    half = front_end(sine(1000.0, 0.5, amplitude=0.1))  # -20 dBFS
    assert float(half.max()) == pytest.approx(float(mel.max()) - 20 / 80, abs=0.01)


def test_reference_is_fixed_not_per_clip(front_end):
    x = noise(1.0, 1)
    loud, quiet = front_end(x), front_end(0.5 * x)
    # Halving the amplitude is -6.02 dB everywhere above the floor: not renormalised per clip.
    assert float(loud.max()) - float(quiet.max()) > 0.05
    above_floor = quiet > 0.05
    np.testing.assert_allclose((loud - quiet)[above_floor].numpy(), 20 * math.log10(2) / 80, atol=1e-3)


def test_batch_matches_single(front_end):
    a, b = noise(0.3, 2), sine(300.0, 0.3, 0.2)
    batched = front_end(torch.stack([a, b]))
    assert batched.shape == (2, 128, front_end(a).shape[1])
    torch.testing.assert_close(batched[0], front_end(a), atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[1], front_end(b), atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none on this machine")
def test_mel_follows_the_input_device(front_end):
    x = noise(0.3, 3)
    on_gpu = MelSpectrogramFrontEnd(MelConfig())(x.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), front_end(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "field,kwargs",
    [("hop", {"hop": 0}), ("hop", {"hop": 4096}), ("n_mels", {"n_mels": 0}), ("top_db", {"top_db": -1.0}),
     ("ref_power", {"ref_power": 0.0}), ("sample_rate", {"sample_rate": 44100.5}), ("n_fft", {"n_fft": True})],
)
def test_mel_config_rejects_bad_fields(field, kwargs):
    with pytest.raises(SoundvjError, match=f"mel.{field}:") as info:
        MelConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_mel_input_errors(front_end):
    with pytest.raises(SoundvjError, match="at least n_fft=2048"):
        front_end(torch.zeros(100))
    with pytest.raises(SoundvjError, match=r"\[n\] or \[batch, n\]"):
        front_end(torch.zeros(1, 2, 4096))


# --- windows: timing rule ---------------------------------------------------------------------


def test_window_length_is_fixed_by_settings():
    assert window_mel_frames(MelConfig(), WindowConfig(window_seconds=1.0)) == 83
    assert window_mel_frames(MelConfig(), WindowConfig(window_seconds=0.5)) == 40
    assert window_mel_frames(MelConfig(sample_rate=22050), WindowConfig(window_seconds=1.0)) == 40
    with pytest.raises(SoundvjError, match="window.window_seconds: 0.01 s"):
        window_mel_frames(MelConfig(), WindowConfig(window_seconds=0.01))
    bad = (({"fps": 0}, "fps"), ({"window_seconds": -1}, "window_seconds"), ({"fps": float("nan")}, "fps"))
    for kwargs, field in bad:
        with pytest.raises(SoundvjError, match=f"window.{field}:"):
            WindowConfig(**kwargs)


def test_frame_end_sample_floors_once():
    assert frame_end_sample(0, SR, 24.0) == 0
    assert frame_end_sample(24, SR, 24.0) == SR
    assert frame_end_sample(1, SR, 24.0) == 1837  # 1837.5 floors
    assert frame_end_sample(1, SR, 29.97) == math.floor(SR / 29.97)
    assert frame_end_sample(30, 48000, 30000 / 1001) == 48048  # exact despite float fps


@pytest.mark.parametrize("seconds,fps,expected", [(2.0, 24.0, 48), (1.51, 29.97, 45), (1.0, 30.0, 30), (0.25, 2.0, 1)])
def test_frame_count_is_rounded_duration_times_fps(seconds, fps, expected):
    x = noise(seconds, 4)
    assert num_video_frames(x.shape[0], SR, fps) == expected == round(x.shape[0] / SR * fps + 1e-9)
    assert mel_windows(x, MelConfig(), WindowConfig(fps=fps, window_seconds=0.5)).shape[0] == expected


def test_offline_windows_match_a_direct_per_frame_reference():
    mel_config, window_config = MelConfig(), WindowConfig(fps=29.97, window_seconds=0.5)
    x = noise(1.3, 5)
    windows = mel_windows(x, mel_config, window_config)
    w = window_mel_frames(mel_config, window_config)
    span = 2048 + (w - 1) * 512
    padded = torch.cat([torch.zeros(span), x])
    fe = MelSpectrogramFrontEnd(mel_config)
    assert windows.shape == (39, 128, w)
    for t in (0, 1, 7, 20, 38):
        end = frame_end_sample(t, SR, 29.97) // 512 * 512  # the newest mel frame ending at or before t/fps
        reference = fe(padded[end : end + span])  # = samples [end - span, end), silence before 0
        torch.testing.assert_close(windows[t], reference, atol=1e-5, rtol=0)


def test_timestamp_on_the_hop_grid_includes_the_mel_frame_ending_exactly_there():
    # fps = sr / hop puts every timestamp on a mel-frame end: the rounding edge case.
    mel_config, window_config = MelConfig(), WindowConfig(fps=SR / 512, window_seconds=0.25)
    x = noise(0.3, 12)
    offline = mel_windows(x, mel_config, window_config)
    windower = StreamingWindower(mel_config, window_config)
    streamed = [f.mel for size in (700, 1, 3000, 9000, 999) for f in windower.push(x[windower.samples_seen :][:size])]
    fe = MelSpectrogramFrontEnd(mel_config)
    for t in (4, 10, 25):
        assert frame_end_sample(t, SR, window_config.fps) == 512 * t
        newest = fe(x[512 * t - 2048 : 512 * t])[:, 0]
        torch.testing.assert_close(offline[t][:, -1], newest, atol=1e-5, rtol=0)
        torch.testing.assert_close(streamed[t][:, -1], newest, atol=1e-5, rtol=0)


def test_frame_zero_is_silence_and_early_frames_are_left_padded():
    windows = mel_windows(0.5 * noise(1.0, 6) + 0.1, MelConfig(), WindowConfig(fps=24.0))
    assert torch.equal(windows[0], torch.zeros(128, 83))
    # Frame 12 (0.5 s) hears ~0.5 s of audio: its oldest columns are padding, its newest are not.
    assert torch.equal(windows[12][:, :40], torch.zeros(128, 40))
    assert bool((windows[12][:, -40:].amax(0) > 0.3).all())


def test_windows_are_causal():
    x = noise(1.0, 7)
    later = x.clone()
    cut = frame_end_sample(10, SR, 24.0)
    later[cut:] = torch.randn(later.shape[0] - cut)  # change only what frame 10 must not hear
    a = mel_windows(x, MelConfig(), WindowConfig(), num_frames=24)
    b = mel_windows(later, MelConfig(), WindowConfig(), num_frames=24)
    assert torch.equal(a[:11], b[:11])
    assert not torch.equal(a[11:], b[11:])


def test_frames_past_the_end_hear_trailing_silence():
    x = noise(0.5, 8)
    windows = mel_windows(x, MelConfig(), WindowConfig(window_seconds=0.5), num_frames=40)
    assert windows.shape[0] == 40
    assert torch.equal(windows[-1], torch.zeros(128, 40))  # 1.6 s: more than a window after the end


# --- windows: streaming == offline ------------------------------------------------------------


def chunk_sizes(rng: np.random.Generator, total: int, style: str) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < total:
        if style == "tiny":
            sizes.append(1 if len(sizes) < 3000 else int(rng.integers(1, 4000)))  # sample-by-sample at first
        elif style == "huge":
            sizes.append(int(rng.integers(30000, 70000)))  # bigger than a whole window
        else:
            sizes.append(int(rng.choice([1, 2, 63, 511, 512, 513, 1024, 2047, 4410, 20000])))
    return sizes


@pytest.mark.parametrize("fps", [24.0, 30.0, 29.97])
@pytest.mark.parametrize("window_seconds", [1.0, 0.5])
@pytest.mark.parametrize("style", ["tiny", "mixed", "huge"])
def test_streaming_equals_offline(fps, window_seconds, style):
    mel_config, window_config = MelConfig(), WindowConfig(fps=fps, window_seconds=window_seconds)
    x = noise(2.2, 9)
    offline = mel_windows(x, mel_config, window_config)
    rng = np.random.default_rng(zlib.crc32(f"{fps}/{window_seconds}/{style}".encode()))  # stable across runs
    windower = StreamingWindower(mel_config, window_config)
    got = []
    position = 0
    samples = x.numpy()
    for i, size in enumerate(chunk_sizes(rng, samples.shape[0], style)):
        piece = samples[position : position + size]
        got.extend(windower.push(torch.from_numpy(piece) if i % 2 else piece))  # tensors and arrays
        position += size
        assert windower.buffered_samples < mel_config.n_fft  # bounded, whatever the chunk size
    assert [fw.index for fw in got] == list(range(len(got)))
    assert len(got) >= offline.shape[0]  # it may also cover a frame at the very end
    streamed = torch.stack([fw.mel for fw in got[: offline.shape[0]]])
    assert float((streamed - offline).abs().max()) <= 1e-5
    assert got[5].time == pytest.approx(5 / fps)


def test_latest_is_the_window_ending_now():
    mel_config, window_config = MelConfig(), WindowConfig(fps=24.0)
    x = noise(1.0, 10)
    windower = StreamingWindower(mel_config, window_config)
    assert torch.equal(windower.latest(), torch.zeros(128, 83))  # before any audio: silence
    frames = windower.push(x[: SR - 100])
    assert frames[-1].index == 23
    frames = windower.push(x[SR - 100 :])  # exactly 1 s: frame 24 ends at sample 44100
    assert frames[-1].index == 24
    # 44100 // 512 = 86: the newest mel frame is also frame 24's newest.
    torch.testing.assert_close(windower.latest(), frames[-1].mel, atol=0, rtol=0)
    windower.reset()
    assert windower.samples_seen == 0 and windower.next_frame == 0


def test_streaming_replaces_nan_with_silence_and_keeps_going():
    mel_config, window_config = MelConfig(), WindowConfig(window_seconds=0.5)
    x = noise(1.0, 11)
    broken = x.clone()
    broken[5000:5010] = float("nan")
    broken[9000] = float("inf")
    windower = StreamingWindower(mel_config, window_config)
    with pytest.warns(RuntimeWarning, match="NaN/inf"):
        got = windower.push(broken[:20000]) + windower.push(broken[20000:])
    assert windower.nonfinite_samples == 11
    cleaned = torch.nan_to_num(broken, nan=0.0, posinf=0.0)
    offline = mel_windows(cleaned, mel_config, window_config)
    assert float((torch.stack([f.mel for f in got[:24]]) - offline).abs().max()) <= 1e-5
    assert bool(torch.isfinite(offline).all())


def test_streaming_rejects_multichannel_chunks():
    windower = StreamingWindower(MelConfig(), WindowConfig())
    # [n, 1] from a sound card is fine; frame 0 (t = 0) is covered as soon as anything arrives.
    assert [f.index for f in windower.push(np.zeros((10, 1), np.float32))] == [0]
    with pytest.raises(SoundvjError, match="audio chunk: expected mono"):
        windower.push(np.zeros((10, 2), np.float32))


# --- windows: live changes of window length and fps -------------------------------------------


def push_in_chunks(windower: StreamingWindower, samples: torch.Tensor, seed: int) -> list:
    rng = np.random.default_rng(seed)
    got, position = [], 0
    for size in chunk_sizes(rng, samples.shape[0], "mixed"):
        got.extend(windower.push(samples[position : position + size]))
        position += size
    return got


def max_error(frames: list, samples: torch.Tensor, window_config: WindowConfig) -> float:
    """Largest difference from offline windows of the same frame indices (offline covers the last one too)."""
    offline = mel_windows(samples, MelConfig(), window_config, num_frames=frames[-1].index + 1)
    return float((torch.stack([f.mel for f in frames]) - offline[[f.index for f in frames]]).abs().max())


@pytest.mark.parametrize("new_seconds", [0.5, 2.0])
def test_window_length_switch_keeps_history_and_equals_offline(new_seconds):
    mel_config = MelConfig()
    x = noise(3.0, 13)
    cut = 2 * SR  # frame 48 at 24 fps ends here, and so does mel frame 172
    windower = StreamingWindower(mel_config, WindowConfig(fps=24.0, window_seconds=1.0))
    before = push_in_chunks(windower, x[:cut], seed=1)
    assert before[-1].index == 48 and windower.latest().shape == (128, 83)

    windower.set_window_seconds(new_seconds)
    new_config = WindowConfig(fps=24.0, window_seconds=new_seconds)
    assert windower.window_config == new_config and windower.window_frames == window_mel_frames(mel_config, new_config)
    offline = mel_windows(x, mel_config, new_config, num_frames=73)  # the stream also covers frame 72 (3 s)
    # Right after the switch: "now" is frame 48's window with the new length, no reset, no padding.
    torch.testing.assert_close(windower.latest(), offline[48], atol=1e-5, rtol=0)
    assert not bool((windower.latest()[:, 0] == 0).all())  # 2 s of audio fill even the 2 s window
    after = push_in_chunks(windower, x[cut:], seed=2)
    assert [f.index for f in after] == list(range(49, 73))
    assert max_error(after, x, new_config) <= 1e-5
    torch.testing.assert_close(windower.latest(), offline[-1][:, -windower.window_frames :], atol=1e-5, rtol=0)


def test_window_switch_right_after_start_is_silence_padded_like_offline():
    mel_config = MelConfig()
    x = 0.5 * noise(1.0, 14) + 0.1
    windower = StreamingWindower(mel_config, WindowConfig(window_seconds=0.5))
    windower.set_window_seconds(2.0)  # before any audio: a fresh windower's silence
    assert torch.equal(windower.latest(), torch.zeros(128, 169))  # 2 s = 169 mel frames
    windower.set_window_seconds(0.5)
    early = windower.push(x[:SR // 4])  # frames 0..6 with 0.5 s
    windower.set_window_seconds(2.0)  # only 0.25 s heard: the rest must be the offline padding
    offline = mel_windows(x, mel_config, WindowConfig(window_seconds=2.0), num_frames=25)
    torch.testing.assert_close(windower.latest(), offline[6], atol=1e-5, rtol=0)
    late = windower.push(x[SR // 4 :])
    assert max_error(early, x, WindowConfig(window_seconds=0.5)) <= 1e-5 and early[-1].index == 6
    assert max_error(late, x, WindowConfig(window_seconds=2.0)) <= 1e-5
    assert [f.index for f in late] == list(range(7, 25))
    # 1 s of audio in a 2 s window (169 frames ending at mel frame 86): frames -82..0 are silence.
    assert torch.equal(late[-1].mel[:, :83], torch.zeros(128, 83))
    assert bool(late[-1].mel[:, 83:].amax(0).gt(0.3).all())
    torch.testing.assert_close(windower.latest(), offline[24], atol=1e-5, rtol=0)


def test_window_switch_errors_are_one_line_and_change_nothing():
    windower = StreamingWindower(MelConfig(), WindowConfig(), max_window_seconds=2.0)
    assert windower.max_window_frames == window_mel_frames(MelConfig(), WindowConfig(window_seconds=2.0)) == 169
    windower.push(noise(0.5, 15))
    before = windower.latest()
    for bad, fragment in ((2.5, "above this windower's max_window_seconds=2"), (0.01, "at least n_fft"),
                          (-1.0, "expected a number"), (float("nan"), "expected a number")):
        with pytest.raises(SoundvjError, match=fragment) as info:
            windower.set_window_seconds(bad)
        assert "\n" not in str(info.value)
    assert windower.window_config == WindowConfig() and torch.equal(windower.latest(), before)
    windower.set_window_seconds(2.0)  # the maximum itself is allowed
    with pytest.raises(SoundvjError, match="above this windower's max_window_seconds=4"):
        StreamingWindower(MelConfig(), WindowConfig(window_seconds=5.0))


def test_memory_stays_bounded_across_live_changes():
    mel_config = MelConfig()
    windower = StreamingWindower(mel_config, WindowConfig())
    assert windower.max_window_frames == 341  # 4 s at 44.1 kHz / 512
    rng = np.random.default_rng(16)
    samples = noise(8.0, 16).numpy()
    position = 0
    for i, size in enumerate(chunk_sizes(rng, samples.shape[0], "mixed")):
        windower.push(samples[position : position + size])
        position += size
        if i % 7 == 0:
            windower.set_window_seconds(float(rng.choice([0.1, 0.5, 1.0, 2.5, 4.0])))
        assert windower.buffered_samples < mel_config.n_fft + mel_config.hop
        assert windower.buffered_samples < mel_config.n_fft
        assert windower.mel_history_frames == windower.max_window_frames
        assert windower.latest().shape == (128, windower.window_frames)


@pytest.mark.parametrize("new_fps", [30.0, 12.0, 29.97])
def test_fps_switch_continues_with_the_first_uncovered_frame_of_the_new_rate(new_fps):
    mel_config = MelConfig()
    x = noise(3.0, 17)
    cut = 33333  # mid-frame at both rates
    windower = StreamingWindower(mel_config, WindowConfig(fps=24.0, window_seconds=4.0))
    before = push_in_chunks(windower, x[:cut], seed=3)
    windower.set_fps(new_fps)
    first = windower.next_frame
    assert frame_end_sample(first - 1, SR, new_fps) <= cut < frame_end_sample(first, SR, new_fps)
    after = push_in_chunks(windower, x[cut:], seed=4)
    assert [f.index for f in after] == list(range(first, first + len(after))) and len(after) > 10
    assert after[0].time == pytest.approx(first / new_fps) and after[0].time > before[-1].time
    # Same windows as a fresh windower at the new rate, even with the longest window.
    assert max_error(after, x, WindowConfig(fps=new_fps, window_seconds=4.0)) <= 1e-5


def test_fps_switch_before_any_audio_starts_at_frame_zero():
    x = noise(1.0, 18)
    windower = StreamingWindower(MelConfig(), WindowConfig(fps=24.0))
    windower.set_fps(30.0)
    got = windower.push(x)
    assert [f.index for f in got] == list(range(31))
    assert max_error(got, x, WindowConfig(fps=30.0)) <= 1e-5
    with pytest.raises(SoundvjError, match="window.fps:"):
        windower.set_fps(0.0)
