"""The live app's audio side: the sample ring, microphone input and file playback, through real
PortAudio streams on a PulseAudio null sink (see tests/pulse_audio.py). No mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import wave
from pathlib import Path

import numpy as np
import pytest

from core.audio.decode import load_mono
from core.errors import SoundvjError
from tests.pulse_audio import null_sink, output_to, pulse_server  # noqa: F401 - fixtures
from visualizer.audio_ring import SampleRing
from visualizer.file_player import FilePlayer
from visualizer.low_latency_resampler import LowLatencyResampler
from visualizer.mic_input import MicInput
from visualizer.portaudio import find_input_device, list_input_devices, rescan_devices

SR = 44100
REPO = Path(__file__).resolve().parents[1]


def tone(freq: float, seconds: float, amplitude: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def band_fraction(x: np.ndarray, lo: float, hi: float, sr: int = SR) -> tuple[float, float]:
    """(fraction of the signal's energy in [lo, hi] Hz, frequency of the strongest bin)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / sr)
    band = (freqs >= lo) & (freqs <= hi)
    return float(spectrum[band].sum() / spectrum.sum()), float(freqs[spectrum.argmax()])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def wait_for(condition, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def write_wav(path: Path, samples: np.ndarray, sr: int) -> Path:
    """int16 wav of float samples [n] or [n, channels]."""
    data = samples if samples.ndim == 2 else samples[:, None]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(data.shape[1])
        out.setsampwidth(2)
        out.setframerate(sr)
        out.writeframes((np.clip(data, -1, 1) * 32767).astype("<i2").tobytes())
    return path


# ---- the ring ---------------------------------------------------------------------------------


def test_ring_returns_exact_samples_in_order_across_wraparound():
    rng = np.random.default_rng(1)
    ring = SampleRing(1000, SR)
    written, read = [], []
    for _ in range(300):
        block = rng.standard_normal(int(rng.integers(1, 400))).astype(np.float32)
        ring.write(block)
        written.append(block)
        behind = ring.total_written - ring.read_position
        if behind > ring.capacity - 400 or rng.random() < 0.3:  # never more than capacity behind
            read.append(ring.read_new()[0])
    read.append(ring.read_new()[0])
    assert ring.overrun_samples == 0
    np.testing.assert_array_equal(np.concatenate(read), np.concatenate(written))
    assert ring.total_written == ring.read_position == sum(b.size for b in written)


def test_ring_is_bounded_and_counts_overrun():
    ring = SampleRing(100, SR)
    data = np.arange(350, dtype=np.float32)
    for at in range(0, 350, 30):
        ring.write(data[at : at + 30])
    got, _ = ring.read_new()
    np.testing.assert_array_equal(got, data[-100:])  # the newest `capacity` samples, oldest first
    assert ring.overrun_samples == 250
    ring.write(np.arange(1000, dtype=np.float32))  # one block longer than the ring keeps its end
    got, _ = ring.read_new()
    np.testing.assert_array_equal(got, np.arange(900, 1000, dtype=np.float32))
    assert ring.overrun_samples == 250 + 900
    assert ring.read_new()[0].size == 0


def test_ring_downmixes_channels_stamps_arrival_and_reports_level():
    ring = SampleRing(64, SR)
    assert np.isnan(ring.read_new()[1]) and ring.peak_and_rms() == (0.0, 0.0)
    left = np.linspace(-1, 1, 40, dtype=np.float32)
    stereo = np.stack([left, np.full(40, 0.5, np.float32)], axis=1)
    before = time.monotonic()
    ring.write(stereo)
    got, arrived = ring.read_new()
    np.testing.assert_allclose(got, (left + 0.5) / 2, rtol=0, atol=1e-7)
    assert before <= arrived <= time.monotonic()
    ring.write(np.ones((10, 1), np.float32), arrival_time=123.0)
    assert ring.read_new()[1] == 123.0
    clipping = np.zeros((8, 2), np.float32)
    clipping[3, 1] = -1.2  # one channel clips; the mono mix alone (0.6) would hide it
    ring.write(clipping)
    peak, level = ring.peak_and_rms()
    assert peak == pytest.approx(1.2) and level == pytest.approx(rms(clipping.mean(axis=1)))


def _traced_growth(write, block: np.ndarray, repeats: int = 300, trials: int = 3) -> tuple[int, int]:
    """(net bytes still allocated, peak bytes) over `repeats` calls of write(block), after a warm-up; the
    smallest of `trials` measurements. tracemalloc counts every thread's allocations, and threads left by
    earlier tests in the same process (a stream's callback, a worker finishing) now and then allocate
    during one trial; an allocation inside write happens on every call, so it shows in every trial."""
    for _ in range(10):
        write(block)
    results = []
    for _ in range(trials):
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base, _ = tracemalloc.get_traced_memory()
            for _ in range(repeats):
                write(block)
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        results.append((current - base, peak - base))
    return min(net for net, _ in results), min(peak for _, peak in results)


@pytest.mark.parametrize("shape", [(4096, 2), (4096, 1), (4096,)])
def test_ring_write_allocates_nothing(shape):
    ring = SampleRing(10_000, SR)  # 4096-sample blocks wrap around often
    block = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    net, peak = _traced_growth(ring.write, block)
    # A mono temporary alone would be 16 kB; what remains is a few small Python objects at a time.
    assert net < 1024 and peak < 2048, (net, peak, [t.name for t in threading.enumerate()])
    # The measurement can fail: a write that builds its mono mix in a temporary shows up.
    naive = np.zeros(10_000, np.float32)
    _, naive_peak = _traced_growth(lambda b: naive.__setitem__(slice(0, 4096), b.reshape(4096, -1).mean(axis=1)), block)
    assert naive_peak >= 4096 * 4


# ---- resampling -------------------------------------------------------------------------------


def test_low_latency_resampler_is_chunking_independent_and_keeps_a_tone():
    x = tone(1000, 1.0, 0.5, sr=48000)
    whole = LowLatencyResampler(48000, SR).process(x)
    resampler = LowLatencyResampler(48000, SR)
    rng = np.random.default_rng(3)
    pieces, at = [], 0
    while at < x.size:
        n = int(rng.integers(1, 700))
        pieces.append(resampler.process(x[at : at + n]))
        at += n
    chunked = np.concatenate(pieces)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)
    assert abs(whole.size - x.size * SR / 48000) <= 40  # all but the filter's look-ahead
    steady = whole[2000:-2000]
    fraction, peak = band_fraction(steady, 980, 1020)
    assert fraction > 0.99 and abs(peak - 1000) < 5
    assert rms(steady) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    up = LowLatencyResampler(22050, SR).process(tone(1000, 1.0, 0.5, sr=22050))[2000:-2000]  # and upwards
    fraction, peak = band_fraction(up, 980, 1020)
    assert fraction > 0.99 and abs(peak - 1000) < 5 and rms(up) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


# ---- devices ----------------------------------------------------------------------------------


def test_input_devices_listed_default_first(pulse_server):
    devices = list_input_devices()
    assert devices, "PortAudio lists no input device although PulseAudio runs"
    assert devices[0].is_default and sum(d.is_default for d in devices) == 1
    assert all(d.host_api and d.channels > 0 for d in devices)
    assert "pulse" in [d.name for d in devices]
    assert devices[0].label == f"{devices[0].name} ({devices[0].host_api})"
    assert find_input_device("PULS").name == "pulse"  # case-insensitive substring


def test_unknown_device_is_a_one_line_error(pulse_server):
    with pytest.raises(SoundvjError) as caught:
        find_input_device("no-such-device")
    message = str(caught.value)
    assert "\n" not in message and "'no-such-device'" in message and "'pulse'" in message
    with pytest.raises(SoundvjError, match="matches several"):
        find_input_device("e")  # in both "pulse" and "default": ambiguous, not a guess
    ring = SampleRing(SR, SR)
    with pytest.raises(SoundvjError, match="no-such-device"):
        MicInput(ring, "no-such-device").start()


def test_no_audio_devices_at_all_runs_silently(tmp_path):
    """No PortAudio device (the audio server unreachable): the input says "no-device", the file
    player plays silently on the wall clock, and nothing raises."""
    script = textwrap.dedent(
        """
        import json, sys, time, numpy as np
        from visualizer.audio_ring import SampleRing
        from visualizer.file_player import FilePlayer
        from visualizer.mic_input import MicInput
        from visualizer.portaudio import list_input_devices
        ring = SampleRing(44100 * 4, 44100)
        mic = MicInput(SampleRing(44100, 44100))
        mic.start()
        player = FilePlayer(sys.argv[1], ring)
        player.play()
        t0 = time.monotonic()
        time.sleep(0.8)
        state = player.state
        player.close()  # stops the clock, so the numbers below belong together
        elapsed = time.monotonic() - t0
        got, _ = ring.read_new()
        print(json.dumps(dict(devices=len(list_input_devices()), mic_state=mic.state, mic_error=mic.error,
                              clock=player.clock, error=player.error, state=state,
                              position=player.position, played=player.played_from_start(),
                              ring=int(got.size), elapsed=elapsed)))
        """
    )
    wav = write_wav(tmp_path / "tone.wav", tone(440, 3.0), SR)
    env = dict(os.environ, PULSE_SERVER="unix:/nonexistent/soundvj-no-server")
    done = subprocess.run(
        [sys.executable, "-c", script, str(wav)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["devices"]:
        pytest.skip("this machine has sound hardware that PortAudio lists without PulseAudio")
    assert result["mic_state"] == "no-device" and "no audio input device" in result["mic_error"]
    assert result["clock"] == "wall" and "no audio output device" in result["error"]
    assert result["state"] == "playing"
    assert 0.4 < result["position"] <= result["elapsed"] + 0.05
    assert result["played"] == result["ring"] == round(result["position"] * SR)


# ---- microphone input through the null sink's monitor -----------------------------------------


def drain_after(ring: SampleRing, seconds: float) -> np.ndarray:
    ring.read_new()
    time.sleep(seconds)
    return ring.read_new()[0]


def test_tone_played_into_the_sink_is_recorded(null_sink):
    ring = SampleRing(SR * 4, SR)
    with MicInput(ring, "pulse") as mic:
        assert mic.state == "running" and mic.device_name == "pulse" and not mic.resampling
        with null_sink.play(tone(1000, 3.0), loop=True):
            time.sleep(0.3)  # the tone reaches the monitor
            got = drain_after(ring, 1.2)
        assert mic.state == "running" and mic.error is None
    assert got.size > 0.8 * 1.2 * SR
    fraction, peak = band_fraction(got, 950, 1050)
    assert fraction > 0.95 and abs(peak - 1000) < 5, (fraction, peak)
    assert rms(got) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)  # s16 sink: close to the played level
    assert mic.state == "stopped"


def test_silence_and_noise_differ_in_rms(null_sink):
    ring = SampleRing(SR * 4, SR)
    noise = (np.random.default_rng(5).standard_normal(SR * 3) * 0.2).astype(np.float32)
    with MicInput(ring, "pulse"):
        quiet = drain_after(ring, 0.6)
        with null_sink.play(noise, loop=True):
            time.sleep(0.3)
            loud = drain_after(ring, 0.6)
    assert quiet.size > 0.5 * SR and loud.size > 0.5 * SR
    assert rms(quiet) < 1e-3 and rms(loud) > 0.1, (rms(quiet), rms(loud))


def test_device_that_cannot_do_the_rate_is_resampled(null_sink):
    ring = SampleRing(SR * 4, SR)
    with MicInput(ring, "pulse", device_rate=48000) as mic:
        assert mic.resampling and mic.device_rate_in_use == 48000
        with null_sink.play(tone(1000, 3.0), loop=True):
            time.sleep(0.3)
            got = drain_after(ring, 1.0)
    fraction, peak = band_fraction(got, 950, 1050)  # the ring is at 44.1 kHz: the tone stays at 1 kHz
    assert got.size > 0.8 * SR and fraction > 0.95 and abs(peak - 1000) < 5, (got.size, fraction, peak)


def test_unloading_the_sink_is_lost_and_rescan_then_switch_resumes(null_sink):
    ring = SampleRing(SR * 4, SR)
    changes: list[tuple[str, str | None]] = []
    mic = MicInput(ring, "pulse")
    mic.on_state_change(lambda state, error: changes.append((state, error)))
    mic.start()
    try:
        assert wait_for(lambda: ring.total_written > SR // 4, 3)
        null_sink.unload()
        assert wait_for(lambda: mic.state == "lost", 4), mic.state
        assert mic.error and "\n" not in mic.error and "'pulse'" in mic.error
        assert changes[-1] == ("lost", mic.error)
        time.sleep(0.1)
        frozen = ring.total_written
        time.sleep(0.4)
        assert ring.total_written == frozen  # nothing is written while lost

        null_sink.load()
        devices = rescan_devices()
        assert "pulse" in [d.name for d in devices]
        assert find_input_device("pulse").name == "pulse"
        assert mic.state == "lost"  # a rescan does not pick for the performer
        mic.switch("pulse")
        assert mic.state == "running" and mic.error is None and changes[-1] == ("running", None)
        with null_sink.play(tone(600, 3.0), loop=True):
            time.sleep(0.3)
            got = drain_after(ring, 0.8)
        fraction, peak = band_fraction(got, 560, 640)
        assert got.size > 0.5 * SR and fraction > 0.9 and abs(peak - 600) < 5, (got.size, fraction, peak)
    finally:
        mic.stop()


def test_switch_opens_the_new_stream_before_closing_the_old(null_sink):
    ring = SampleRing(SR * 4, SR)
    growth: list[tuple[float, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.005):
            growth.append((time.monotonic(), ring.total_written))

    with MicInput(ring, "pulse") as mic, null_sink.play(tone(800, 4.0), loop=True):
        assert wait_for(lambda: ring.total_written > SR // 4, 3)
        watcher = threading.Thread(target=watch)
        watcher.start()
        time.sleep(0.4)
        mic.switch("default")  # the ALSA default device also records PULSE_SOURCE
        time.sleep(0.8)
        stop.set()
        watcher.join()
        assert mic.state == "running" and mic.device_name == "default"
        got = drain_after(ring, 0.5)
    fraction, _ = band_fraction(got, 760, 840)
    assert fraction > 0.9
    # The longest time the ring did not grow, around the switch: no gap beyond normal block jitter.
    longest, since = 0.0, growth[0][0]
    for (t, n), (_, previous) in zip(growth[1:], growth[:-1]):
        if n != previous:
            longest, since = max(longest, t - since), t
    assert longest < 0.2, longest


# ---- file playback clocked by the output stream ------------------------------------------------


@pytest.fixture
def noise_wav(tmp_path) -> Path:
    """2 s of stereo noise at 48 kHz (so the player resamples to the ring's 44.1 kHz)."""
    noise = np.random.default_rng(7).standard_normal((96000, 2)) * 0.2
    return write_wav(tmp_path / "noise.wav", noise.astype(np.float32), 48000)


def test_file_player_feeds_the_ring_exactly_the_file_and_the_sink_hears_it(null_sink, noise_wav, monkeypatch):
    ring = SampleRing(SR * 8, SR)
    reference = load_mono(noise_wav, SR).numpy()
    with output_to(null_sink, monkeypatch), FilePlayer(noise_wav, ring) as player:
        assert player.state == "ready" and player.duration == pytest.approx(2.0, abs=1e-3)
        assert ring.total_written == 0  # nothing before play()
        player.play()
        heard = null_sink.record(0.6)  # what the output stream really played into the sink
        assert wait_for(lambda: player.state == "ended", 5)
        assert player.clock == "output" and player.error is None
        time.sleep(0.2)  # ended: silence keeps coming so the picture keeps running
        got, _ = ring.read_new()
    assert rms(heard) > 0.05
    assert player.played_from_start() == reference.size
    np.testing.assert_array_equal(got[: reference.size], reference)
    assert got.size > reference.size + 0.1 * SR and not got[reference.size :].any()


def test_file_player_position_follows_the_output_and_pause_seek_loop_work(null_sink, noise_wav, monkeypatch):
    ring = SampleRing(SR * 8, SR)
    reference = load_mono(noise_wav, SR).numpy()
    with output_to(null_sink, monkeypatch), FilePlayer(noise_wav, ring) as player:
        player.play()
        t0 = time.monotonic()
        time.sleep(0.6)
        position, elapsed = player.position, time.monotonic() - t0
        assert player.clock == "output" and 0.3 < position <= elapsed + 0.15, (position, elapsed)
        # The playhead is the output stream's: every sample it played went to the ring, no more.
        assert abs(player.played_from_start() - player.position * SR) <= 1024

        player.pause()
        time.sleep(0.1)
        held, played = player.position, player.played_from_start()
        time.sleep(0.4)
        assert player.state == "paused" and player.position == held and player.played_from_start() == played
        silent, _ = ring.read_new()
        assert silent.size > 0.2 * SR  # the clock keeps running on silence while paused

        player.seek(1.5)
        assert player.position == pytest.approx(1.5, abs=1e-4)
        ring.read_new()
        player.play()
        assert wait_for(lambda: player.state == "ended", 3)
        after_seek, _ = ring.read_new()
        start = int(np.flatnonzero(after_seek)[0])  # silence of the paused blocks, then the file
        tail = reference[round(1.5 * SR) :]
        np.testing.assert_array_equal(after_seek[start : start + tail.size], tail)

        player.loop = True
        base = player.played_from_start()
        player.play()  # after the end: from the start, and round again
        assert wait_for(lambda: player.played_from_start() > base + reference.size + 0.3 * SR, 5)
        assert player.state == "playing" and player.position < 2.0
        player.pause()
        looped, _ = ring.read_new()
    looped = looped[np.flatnonzero(looped)[0] :]
    np.testing.assert_array_equal(looped[: reference.size], reference)
    np.testing.assert_array_equal(looped[reference.size : reference.size + 4410], reference[:4410])


def test_missing_file_is_a_one_line_error(tmp_path):
    ring = SampleRing(SR, SR)
    with pytest.raises(SoundvjError) as caught:
        FilePlayer(tmp_path / "missing.wav", ring)
    assert "\n" not in str(caught.value) and "missing.wav" in str(caught.value)


def test_file_player_keeps_the_playhead_when_the_output_device_disappears(null_sink, noise_wav, monkeypatch):
    ring = SampleRing(SR * 8, SR)
    with output_to(null_sink, monkeypatch), FilePlayer(noise_wav, ring, loop=True) as player:
        player.play()
        assert wait_for(lambda: player.position > 0.3, 3) and player.clock == "output"
        null_sink.unload()
        assert wait_for(lambda: player.clock == "wall", 3), (player.clock, player.error)
        assert player.error and "\n" not in player.error and "wall clock" in player.error
        before, written = player.played_from_start(), ring.total_written
        time.sleep(0.5)
        # Silent now, but the playhead and the ring keep the file's pace.
        assert player.state == "playing"
        assert 0.3 * SR < player.played_from_start() - before < 0.8 * SR
        # (the clock thread may add one block between the two reads)
        assert abs((ring.total_written - written) - (player.played_from_start() - before)) <= player.blocksize


def test_rescan_while_playing_and_recording_reopens_both_streams(null_sink, noise_wav, monkeypatch):
    """PortAudio closes every stream when it re-initialises: the input and the player reopen theirs
    by name, and the file still reaches the ring whole and in order."""
    reference = load_mono(noise_wav, SR).numpy()
    mic_ring, file_ring = SampleRing(SR * 4, SR), SampleRing(SR * 8, SR)
    with output_to(null_sink, monkeypatch), MicInput(mic_ring, "pulse") as mic, FilePlayer(noise_wav, file_ring) as player:
        player.play()
        assert wait_for(lambda: player.position > 0.5 and mic_ring.total_written > SR // 4, 3)
        rescan_devices()
        assert mic.state == "running" and mic.device_name == "pulse" and player.clock == "output"
        recorded_before = mic_ring.total_written
        assert wait_for(lambda: player.state == "ended", 5)
        assert mic_ring.total_written > recorded_before + SR // 4  # the reopened input delivers
        got, _ = file_ring.read_new()
    np.testing.assert_array_equal(got[: reference.size], reference)


def test_a_stall_is_lost_and_running_again_when_the_device_recovers(null_sink, noise_wav, monkeypatch):
    """A hang shorter than GIVE_UP_SECONDS: the input is "lost" (writes nothing) and then running again
    by itself; the player's wall clock stands in and hands back, the file reaching the ring unbroken."""
    reference = load_mono(noise_wav, SR).numpy()
    mic_ring, file_ring = SampleRing(SR * 4, SR), SampleRing(SR * 10, SR)
    with output_to(null_sink, monkeypatch), MicInput(mic_ring, "pulse") as mic, \
            FilePlayer(noise_wav, file_ring, loop=True) as player:
        player.play()
        assert wait_for(lambda: player.position > 0.3 and mic_ring.total_written > SR // 4, 3)
        null_sink.suspend(True)
        assert wait_for(lambda: mic.state == "lost" and player.clock == "wall", 2), (mic.state, player.clock)
        assert "'pulse'" in mic.error and "stalled" in player.error
        frozen, position = mic_ring.total_written, player.position
        time.sleep(0.4)
        assert mic_ring.total_written == frozen and player.position > position + 0.2
        null_sink.suspend(False)
        assert wait_for(lambda: mic.state == "running" and player.clock == "output", 2), (mic.state, player.clock)
        assert mic.error is None and player.error is None
        assert wait_for(lambda: mic_ring.total_written > frozen + SR // 4, 2)
        player.pause()
        got, _ = file_ring.read_new()
    played = player.played_from_start()
    assert played > 1.2 * SR
    np.testing.assert_array_equal(got[:played], np.tile(reference, played // reference.size + 1)[:played])
