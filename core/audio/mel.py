"""Log-mel front end: samples -> mel power -> dB against a FIXED reference -> [0, 1].

Framing is causal: no centre padding, so mel frame j of a signal covers samples
[j * hop, j * hop + n_fft) and never looks past its own end. Callers that want frames to end at a
given sample pad on the left (see `core.audio.windows`).

The dB reference is fixed, not the per-clip maximum, so a window computed live and the same window
computed offline give the same numbers and loudness keeps its meaning. Mel power is expressed in
units of a full-scale sine: the STFT power is divided by (sum(window) / 2) ** 2, the power a sine of
amplitude 1 puts in its own FFT bin. With `ref_power` = 1.0, a full-scale sine therefore reads about
0 dB (x ~= 1) in the mel band it falls in (about -3 dB, x ~= 0.96, when it sits between two bands),
a -20 dBFS sine reads ~-20 dB (x ~= 0.75), and digital silence reads exactly 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchaudio

from core.errors import SoundvjError

_POWER_FLOOR = 1e-20  # below any top_db we accept (-200 dB), so silence always clamps to x = 0


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise SoundvjError(f"mel.{name}: expected an integer in [{lo}, {hi}], got {value!r}")


def _check_float(name: str, value: object, lo: float, hi: float, lo_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        bracket = "(" if lo_open else "["
        raise SoundvjError(f"mel.{name}: expected a number in {bracket}{lo:g}, {hi:g}], got {value!r}")


@dataclass(frozen=True)
class MelConfig:
    """The mel front end's settings; the defaults are docs/method.md's (44.1 kHz, 2048/512, 128 bands, 80 dB)."""

    sample_rate: int = 44100
    n_fft: int = 2048
    hop: int = 512
    n_mels: int = 128
    top_db: float = 80.0  # dynamic range kept below the reference; maps [-top_db, 0] dB to [0, 1]
    ref_power: float = 1.0  # 0 dB, in full-scale-sine units (see module docstring)

    def __post_init__(self) -> None:
        _check_int("sample_rate", self.sample_rate, 1000, 768_000)
        _check_int("n_fft", self.n_fft, 16, 65536)
        # hop > n_fft would leave samples no frame sees.
        _check_int("hop", self.hop, 1, self.n_fft)
        _check_int("n_mels", self.n_mels, 1, self.n_fft // 2 + 1)
        _check_float("top_db", self.top_db, 0.0, 200.0, lo_open=True)
        _check_float("ref_power", self.ref_power, 0.0, 1e12, lo_open=True)

    def num_frames(self, num_samples: int) -> int:
        """Mel frames in a signal of `num_samples` (uncentred framing; 0 if shorter than n_fft)."""
        return 0 if num_samples < self.n_fft else 1 + (num_samples - self.n_fft) // self.hop


class MelSpectrogramFrontEnd(torch.nn.Module):
    """Samples [n] or [batch, n] -> normalised log-mel [n_mels, frames] or [batch, n_mels, frames] in [0, 1].

    Runs on the input's device: the filterbank and window follow the samples (moved once, then cached).
    """

    def __init__(self, config: MelConfig | None = None):
        super().__init__()
        self.config = config if config is not None else MelConfig()
        c = self.config
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=c.sample_rate,
            n_fft=c.n_fft,
            win_length=c.n_fft,
            hop_length=c.hop,
            f_min=0.0,
            f_max=None,
            n_mels=c.n_mels,
            window_fn=torch.hann_window,
            power=2.0,
            center=False,  # causal: a frame ends at its last sample, no look-ahead padding
            norm=None,  # triangles peak at 1, so a sine reads the same level in any band
            mel_scale="htk",
        )
        window_sum = float(self.mel.spectrogram.window.sum())
        self._full_scale_power = (window_sum / 2.0) ** 2  # |FFT|^2 of a unit sine in its own bin

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        c = self.config
        if not isinstance(samples, torch.Tensor) or samples.dim() not in (1, 2):
            shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
            raise SoundvjError(f"mel input: expected a float tensor [n] or [batch, n], got {shape}")
        if samples.shape[-1] < c.n_fft:
            raise SoundvjError(f"mel input: expected at least n_fft={c.n_fft} samples, got {samples.shape[-1]}")
        if self.mel.spectrogram.window.device != samples.device:
            self.to(samples.device)
        power = self.mel(samples.to(torch.float32))
        power = power / (self._full_scale_power * c.ref_power)
        db = 10.0 * torch.log10(power.clamp_min(_POWER_FLOOR))
        return db.clamp(-c.top_db, 0.0) / c.top_db + 1.0
