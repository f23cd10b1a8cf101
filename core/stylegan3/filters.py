"""Kaiser-windowed low-pass FIR design for StyleGAN3's resampling filters.

Written without scipy, matching `scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs)` (a separable
1-D filter) and NVIDIA's radially symmetric jinc filter for the R config. The fixtures' stored filters
check this design to float32 precision.
"""

from __future__ import annotations

import numpy as np
import torch


def kaiser_beta(attenuation_db: float) -> float:
    """Kaiser's empirical window parameter for a stopband attenuation (dB)."""
    a = attenuation_db
    if a > 50:
        return 0.1102 * (a - 8.7)
    if a > 21:
        return 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    return 0.0


def kaiser_attenuation(numtaps: int, width: float) -> float:
    """Attenuation (dB) reached by `numtaps` taps for a transition `width` (as a fraction of Nyquist)."""
    return 2.285 * (numtaps - 1) * np.pi * width + 7.95


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor | None:
    """float32 low-pass filter; None stands for the 1-tap identity, as in NVIDIA's modules."""
    if numtaps < 1:
        raise ValueError(f"numtaps must be >= 1, got {numtaps}")
    if numtaps == 1:
        return None
    nyquist = fs / 2
    beta = kaiser_beta(kaiser_attenuation(numtaps, width / nyquist))
    window = np.kaiser(numtaps, beta)
    if not radial:
        m = np.arange(numtaps) - (numtaps - 1) / 2
        c = cutoff / nyquist
        h = c * np.sinc(c * m) * window
        return torch.as_tensor(h / h.sum(), dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    arg = torch.as_tensor(2 * cutoff * np.pi * r, dtype=torch.float64, device="cpu")  # numpy below, even when
    # the default device is "meta" (model_file checks a config's shapes on it before building)
    j1 = torch.special.bessel_j1(arg).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(r > 0, j1 / (np.pi * np.where(r > 0, r, 1)), cutoff)  # limit at r=0 is `cutoff`
    f = f * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)
