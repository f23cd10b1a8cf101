"""Per-video-frame mel windows, offline (whole clip) and streaming (live chunks), identical by construction.

The one timing rule both paths share:

* Mel frames sit on a fixed grid anchored at the first audio sample: mel frame m covers samples
  [m * hop - n_fft, m * hop) and so *ends* at sample m * hop. Samples before 0 are silence.
* Video frame t has timestamp t / fps and ends at sample e_t = floor(t * sample_rate / fps)
  (`frame_end_sample`; a 1e-6-sample nudge keeps exact integers from flooring one too low).
* Its window is the W consecutive mel frames ending with the newest one that ends at or before e_t,
  i.e. m_last = e_t // hop. The window is causal and lags the timestamp by less than one hop
  (11.6 ms at 44.1 kHz / 512), which buys a shared grid: the offline path computes the mel once
  and slices, the live path computes each mel frame once as samples arrive.
* W = 1 + (L - n_fft) // hop with L = round(window_seconds * sample_rate): every mel frame whose
  n_fft span fits in the last L samples (83 frames for 1 s at 44.1 kHz, 40 for 0.5 s).

Since a mel frame is a pure function of its own n_fft samples, both paths compute the same numbers
(up to float rounding in batched FFTs, far below 1e-5). The grid does not depend on the window
length either, so the live path keeps enough mel history for the longest allowed window and can
change W while playing without a reset.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from core.audio.mel import MelConfig, MelSpectrogramFrontEnd
from core.errors import SoundvjError


@dataclass(frozen=True)
class WindowConfig:
    """Video frame rate and how much audio each frame hears (the preset's fps and window length)."""

    fps: float = 24.0
    window_seconds: float = 1.0

    def __post_init__(self) -> None:
        for name, hi in (("fps", 1000.0), ("window_seconds", 60.0)):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not number or not 0 < value <= hi:
                raise SoundvjError(f"window.{name}: expected a number in (0, {hi:g}], got {value!r}")


@dataclass(frozen=True)
class FrameWindow:
    """The mel window of video frame `index` (timestamp `time` = index / fps), shape [n_mels, W]."""

    index: int
    time: float
    mel: torch.Tensor


def _half_up(x: float) -> int:
    # Python's round() is banker's rounding; frame counts and window lengths round halves up.
    return math.floor(x + 0.5)


def frame_end_sample(t: int, sample_rate: int, fps: float) -> int:
    """Index one past the last sample video frame t may hear: floor(t * sample_rate / fps)."""
    return math.floor(t * sample_rate / fps + 1e-6)


def window_mel_frames(mel_config: MelConfig, window_config: WindowConfig) -> int:
    """W, the fixed number of mel frames in every window for these settings."""
    length = _half_up(window_config.window_seconds * mel_config.sample_rate)
    if length < mel_config.n_fft:
        raise SoundvjError(
            f"window.window_seconds: {window_config.window_seconds:g} s is {length} samples at "
            f"{mel_config.sample_rate} Hz; expected at least n_fft={mel_config.n_fft} samples"
        )
    return 1 + (length - mel_config.n_fft) // mel_config.hop


def num_video_frames(num_samples: int, sample_rate: int, fps: float) -> int:
    """Default frame count for a clip: round(duration * fps), halves up."""
    return _half_up(num_samples / sample_rate * fps)


def _finite(samples: torch.Tensor, where: str) -> tuple[torch.Tensor, int]:
    """Replace NaN/inf with silence (warned, counted): a glitching input must not stop a live show."""
    bad = ~torch.isfinite(samples)
    count = int(bad.sum())
    if count:
        warnings.warn(f"{where}: replaced {count} NaN/inf samples with silence", RuntimeWarning, stacklevel=3)
        samples = torch.where(bad, torch.zeros((), dtype=samples.dtype, device=samples.device), samples)
    return samples, count


def mel_windows(
    samples: torch.Tensor,
    mel_config: MelConfig,
    window_config: WindowConfig,
    num_frames: int | None = None,
    front_end: MelSpectrogramFrontEnd | None = None,
) -> torch.Tensor:
    """All frames' windows of a mono clip [n] -> [T, n_mels, W], on the samples' device.

    T defaults to round(duration * fps). Frames past the end of the audio hear trailing silence.
    Pass `front_end` to reuse one (it must have been built from `mel_config`).
    """
    if not isinstance(samples, torch.Tensor) or samples.dim() != 1:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise SoundvjError(f"samples: expected a mono float tensor [n], got {shape}")
    sr, hop, n_fft = mel_config.sample_rate, mel_config.hop, mel_config.n_fft
    w = window_mel_frames(mel_config, window_config)
    total = num_video_frames(samples.shape[0], sr, window_config.fps) if num_frames is None else num_frames
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise SoundvjError(f"num_frames: expected a non-negative integer or None, got {num_frames!r}")
    if total == 0:
        return samples.new_zeros((0, mel_config.n_mels, w), dtype=torch.float32)
    front_end = front_end if front_end is not None else MelSpectrogramFrontEnd(mel_config)
    samples, _ = _finite(samples.to(torch.float32), "mel_windows")

    last_mel = [frame_end_sample(t, sr, window_config.fps) // hop for t in range(total)]
    # Left pad of n_fft + (W - 1) * hop puts mel frame m at padded frame m + W - 1, so frame 0's
    # window (m = -(W-1) .. 0) is pure padding; right-pad/trim so the last needed frame exists.
    left = n_fft + (w - 1) * hop
    needed = last_mel[-1] * hop
    padded = torch.nn.functional.pad(samples[:needed], (left, max(0, needed - samples.shape[0])))
    mel = front_end(padded)  # [n_mels, last_mel[-1] + W]
    # Window t is padded frames m_last .. m_last + W - 1.
    index = torch.tensor(last_mel, device=mel.device)
    return mel.unfold(1, w, 1).index_select(1, index).permute(1, 0, 2).contiguous()


class StreamingWindower:
    """Live/offline-equal windows from audio pushed in chunks of any size, with bounded memory.

    * Offline renderer: `for fw in windower.push(chunk): render(fw.index, fw.mel)` yields every
      video frame once its timestamp is covered by the audio pushed so far, in order.
    * Live app: push whatever arrives and read `latest()` (the window ending at the newest mel
      frame, i.e. "now"); the list push returns can be ignored.

    Live changes, no reset: `set_window_seconds` (up to `max_window_seconds`) and `set_fps`.

    Keeps fewer than n_fft raw samples and the last `max_window_frames` mel frames, whatever the
    chunk sizes. NaN/inf in chunks become silence (counted in `nonfinite_samples`, warned) rather
    than raising.
    """

    def __init__(
        self,
        mel_config: MelConfig,
        window_config: WindowConfig,
        device: str | torch.device = "cpu",
        max_window_seconds: float = 4.0,
    ):
        self.mel_config = mel_config
        self.device = torch.device(device)
        self.max_window_seconds = max_window_seconds
        # The mel history is sized for the longest window so a live switch never lacks frames.
        self.max_window_frames = window_mel_frames(mel_config, WindowConfig(window_seconds=max_window_seconds))
        self.window_config = window_config
        self.window_frames = self._checked_window_frames(window_config)
        self.front_end = MelSpectrogramFrontEnd(mel_config).to(self.device)
        self.reset()

    def reset(self) -> None:
        """Back to time 0: silence before the first sample, next video frame 0."""
        c = self.mel_config
        # Samples [tail_start, samples_seen) that the next mel frame (m = 1) still needs: silence before 0.
        self._tail = np.zeros(c.n_fft - c.hop, dtype=np.float32)
        self._tail_start = c.hop - c.n_fft
        self._pending: list[np.ndarray] = []  # samples pushed since the last mel frame was computed
        self._samples_seen = 0
        self._next_mel = 1  # mel frames m <= 0 cover only pre-start silence
        silence = self.front_end(torch.zeros(c.n_fft, device=self.device))  # [n_mels, 1]
        # Frames next_mel - max_window_frames .. next_mel - 1; pre-start frames are silence, as offline.
        self._recent_mel = silence.repeat(1, self.max_window_frames)
        self._next_frame = 0
        self.nonfinite_samples = 0

    @property
    def samples_seen(self) -> int:
        return self._samples_seen

    @property
    def buffered_samples(self) -> int:
        """Raw samples held for framing; stays below n_fft whatever the chunk sizes."""
        return self._tail.size + sum(p.size for p in self._pending)

    @property
    def next_frame(self) -> int:
        """Index of the next video frame push() will yield."""
        return self._next_frame

    @property
    def mel_history_frames(self) -> int:
        """Mel frames kept; always max_window_frames, whatever the current window length."""
        return self._recent_mel.shape[1]

    def set_window_seconds(self, seconds: float) -> None:
        """Change the window length for every later push() and latest(), keeping the mel history.

        Right away the windows equal a fresh windower's (offline `mel_windows`') with the new
        length over the same audio, silence-padded before the first sample exactly as offline.
        """
        new_config = dataclasses.replace(self.window_config, window_seconds=seconds)  # validates
        frames = self._checked_window_frames(new_config)
        self.window_config, self.window_frames = new_config, frames

    def set_fps(self, fps: float) -> None:
        """Change the video frame rate for every later push().

        Frame indices are the new rate's frame numbers (time = index / fps stays true), so they jump
        rather than continue by one. Before any push the next frame is 0. After that, it is the
        first frame of the new rate whose end the audio pushed so far does not yet cover; frames of
        the new rate lying in audio already pushed are skipped (never reported), which keeps
        timestamps strictly increasing and every later window inside the kept mel history.
        """
        new_config = dataclasses.replace(self.window_config, fps=fps)  # validates
        if self._next_frame > 0:
            sr, seen = self.mel_config.sample_rate, self._samples_seen
            t = math.floor(seen * fps / sr)  # estimate; the loops make it exact despite rounding
            while t > 0 and frame_end_sample(t - 1, sr, fps) > seen:
                t -= 1
            while frame_end_sample(t, sr, fps) <= seen:
                t += 1
            self._next_frame = t
        self.window_config = new_config

    def _checked_window_frames(self, window_config: WindowConfig) -> int:
        if window_config.window_seconds > self.max_window_seconds:
            raise SoundvjError(
                f"window.window_seconds: {window_config.window_seconds:g} s is above this windower's "
                f"max_window_seconds={self.max_window_seconds:g}"
            )
        return window_mel_frames(self.mel_config, window_config)

    def push(self, chunk: np.ndarray | torch.Tensor) -> list[FrameWindow]:
        """Append mono float samples; return the windows of video frames newly covered, oldest first."""
        data = self._as_numpy(chunk)
        if data.size:
            self._pending.append(data)
            self._samples_seen += data.size
        c, fps = self.mel_config, self.window_config.fps
        ends = []
        while (end := frame_end_sample(self._next_frame + len(ends), c.sample_rate, fps)) <= self._samples_seen:
            ends.append(end)
        previous = self._recent_mel
        new_mel = self._advance_mel() if self._samples_seen >= self._next_mel * c.hop else None
        if not ends:
            return []
        # Frames not yet yielded end after the previous push's samples (set_fps keeps this true), so
        # their windows (W <= max_window_frames) start no earlier than `previous`'s first frame.
        history = previous if new_mel is None else torch.cat([previous, new_mel], dim=1)
        first_m = self._next_mel - history.shape[1]
        out = []
        for end in ends:
            start_col = end // c.hop - self.window_frames + 1 - first_m
            t = self._next_frame
            out.append(FrameWindow(t, t / fps, history[:, start_col : start_col + self.window_frames].clone()))
            self._next_frame += 1
        return out

    def latest(self) -> torch.Tensor:
        """The window ending at the newest complete mel frame ("now"), [n_mels, W]."""
        return self._recent_mel[:, -self.window_frames :].clone()

    def _as_numpy(self, chunk: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(chunk, torch.Tensor):
            chunk = chunk.detach().to("cpu").numpy()
        # Copy: sound card callbacks reuse their buffers, and pending samples must not change under us.
        data = np.array(chunk, dtype=np.float32, copy=True)
        if data.ndim == 2 and 1 in data.shape:
            data = data.reshape(-1)  # [n, 1] from a sound card callback, or [1, n]
        if data.ndim != 1:
            raise SoundvjError(f"audio chunk: expected mono samples [n], got shape {data.shape}")
        bad = ~np.isfinite(data)
        if bad.any():
            count = int(bad.sum())
            self.nonfinite_samples += count
            warnings.warn(f"audio chunk: replaced {count} NaN/inf samples with silence", RuntimeWarning, stacklevel=3)
            data = np.where(bad, np.float32(0.0), data)
        return data

    def _advance_mel(self) -> torch.Tensor:
        """Compute every mel frame the samples now cover, once; keep the history and the framing tail."""
        c = self.mel_config
        buffer = np.concatenate([self._tail, *self._pending])
        self._pending = []
        last_m = self._samples_seen // c.hop
        lo = self._next_mel * c.hop - c.n_fft - self._tail_start
        hi = last_m * c.hop - self._tail_start
        new_mel = self.front_end(torch.from_numpy(buffer[lo:hi]).to(self.device))  # frames next_mel .. last_m
        self._recent_mel = torch.cat([self._recent_mel, new_mel], dim=1)[:, -self.max_window_frames :]
        self._next_mel = last_m + 1
        # Keep from the start of the next mel frame's span; it is always within the buffer.
        keep_from = self._next_mel * c.hop - c.n_fft
        self._tail = buffer[keep_from - self._tail_start :].copy()
        self._tail_start = keep_from
        return new_mel
