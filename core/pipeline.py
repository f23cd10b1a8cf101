"""The frame pipeline: one object, stepped once per output frame, the same in the live app and offline.

    mel window -> E_A (512-d sound embedding) and E_I (w_hat = w_avg + offsets)
                  (or, for heads over the pretrained sound embedding, embedding on key frames
                   -> E_A and E_I heads: see core.sound.embedding_schedule)
               -> latent stepper (GRU, noise, alpha blend toward w_hat + d)
               -> truncation (psi) -> StyleGAN3 synthesis -> frame

State between steps: the last latent `w` (before truncation), the GRU hidden state and the noise RNG.
Frame t uses the window that ends at t / fps, so frame 0 already answers the first sound.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from core.audio.mel import MelConfig
from core.audio.windows import StreamingWindower, WindowConfig
from core.model import SoundvjModel
from core.params import Params, spec
from core.sound.embedding_heads import embed_windows
from core.sound.embedding_schedule import EmbeddingSchedule


@dataclass
class StageTimes:
    """Seconds spent per stage since the last reset (for benchmarks and the live app's status line)."""

    sound_models: float = 0.0
    stepper: float = 0.0
    synthesis: float = 0.0
    frames: int = 0

    def as_ms_per_frame(self) -> dict[str, float]:
        n = max(self.frames, 1)
        return {k: 1000 * getattr(self, k) / n for k in ("sound_models", "stepper", "synthesis")}


def apply_gain_db(mel: torch.Tensor, gain_db: float, top_db: float) -> torch.Tensor:
    """Input gain on normalised log-mel: a dB shift is a constant offset of gain/top_db.

    Done on the window (not the samples) so a gain move shows on the very next frame, live or
    offline alike. Digital silence (x == 0) stays silent rather than being lifted to the floor.
    """
    if gain_db == 0:
        return mel
    return torch.where(mel > 0, (mel + gain_db / top_db).clamp(0, 1), mel)


def input_transform(rotate_deg: float, pan_x: float, pan_y: float) -> torch.Tensor:
    """StyleGAN3's input `transform` buffer for an image rotated by `rotate_deg` and panned by
    (pan_x, pan_y) image widths. The buffer is the inverse of the image transform."""
    a = math.radians(rotate_deg)
    c, s = math.cos(a), math.sin(a)
    image = torch.tensor([[c, s, pan_x], [-s, c, pan_y], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return torch.linalg.inv(image).to(torch.float32)


@dataclass
class _State:
    w: torch.Tensor  # [1, num_ws, w_dim], the latent of the last frame, untruncated
    hidden: torch.Tensor | None
    noise_rng: torch.Generator
    frame_index: int = 0
    times: StageTimes = field(default_factory=StageTimes)


class FramePipeline:
    """Stateful per-frame stepping: `step(window)` -> frame [3, H, W] in the generator's [-1, 1] range."""

    def __init__(self, model: SoundvjModel, params: Params | None = None):
        self.model = model
        self.device = model.device
        self._params = params if params is not None else Params()
        self._embeddings = EmbeddingSchedule(embed_windows) if model.sound.config.uses_sound_embedding else None
        self._apply_image_params()
        self.reset()

    def embed_in_background(self, enabled: bool) -> None:
        """Live: compute the sound embedding of key frames on its own thread, so no frame waits for it
        (a no-op for models without the pretrained embedding). Results are the same either way."""
        if self._embeddings is not None:
            self._embeddings.run_in_background(enabled)

    def close(self) -> None:
        """Stop the background embedding thread, if any."""
        self.embed_in_background(False)

    # -- parameters -------------------------------------------------------------------------------

    @property
    def params(self) -> Params:
        return self._params

    @property
    def mel_config(self) -> MelConfig:
        return self.model.mel_config

    def window_config(self) -> WindowConfig:
        return WindowConfig(fps=self._params.fps, window_seconds=self._params.window_seconds)

    def make_windower(self) -> StreamingWindower:
        """A fresh streaming windower for the current fps / window length and the model's mel settings;
        it keeps enough mel history for the longest window the parameter registry allows."""
        return StreamingWindower(
            self.mel_config, self.window_config(), device="cpu",
            max_window_seconds=float(spec("window_seconds").maximum),
        )

    def set_params(self, params: Params) -> bool:
        """Take a new parameter snapshot between frames. Returns True if it restarted the latent
        sequence (a new seed). window_seconds / fps changes go to the owner's windower through its
        `set_window_seconds` / `set_fps` (no reset); `make_windower()` is only for a fresh stream."""
        old, self._params = self._params, params
        self._apply_image_params()
        if params.seed != old.seed:
            self.reset()
            return True
        return False

    def _apply_image_params(self) -> None:
        p = self._params
        transform = input_transform(p.rotate_deg, p.pan_x, p.pan_y).to(self.device)
        self.model.generator.synthesis.input.transform.copy_(transform)

    # -- state ------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the first frame: the seed's latent, an empty GRU state, the seed's noise stream."""
        G = self.model.generator
        rng = torch.Generator(device="cpu").manual_seed(self._params.seed)
        z = torch.randn([1, G.z_dim], generator=rng)
        c = torch.zeros([1, G.c_dim])
        with torch.no_grad():
            w0 = G.mapping(z.to(self.device), c.to(self.device))  # untruncated: psi applies at render time
        self._state = _State(w=w0, hidden=None, noise_rng=rng)
        if self._embeddings is not None:
            self._embeddings.reset()

    @property
    def frame_index(self) -> int:
        return self._state.frame_index

    @property
    def latent(self) -> torch.Tensor:
        """The current (untruncated) latent [num_ws, w_dim]."""
        return self._state.w[0]

    @property
    def times(self) -> StageTimes:
        return self._state.times

    # -- stepping ---------------------------------------------------------------------------------

    @torch.no_grad()
    def step_latents(self, windows: torch.Tensor) -> torch.Tensor:
        """Advance the latent state by T frames for windows [T, n_mels, W]; returns untruncated ws [T, num_ws, w_dim].

        The sound models run batched over the T windows; the stepper runs frame by frame (it is
        recurrent), so the result equals T single steps.
        """
        if windows.ndim == 2:
            windows = windows.unsqueeze(0)
        p, s, sound = self._params, self._state, self.model.sound
        t0 = time.perf_counter()
        mel = apply_gain_db(windows.to(self.device, torch.float32), p.gain_db, self.mel_config.top_db)
        if self._embeddings is not None:
            embeddings = self._embeddings.embeddings(mel, p.fps)
            embeds = sound.audio_encoder.from_embedding(embeddings)
            w_hats = sound.inversion_encoder.from_embedding(embeddings, p.focus)
        else:
            embeds = sound.audio_encoder(mel)
            w_hats = sound.inversion_encoder(mel)
        t1 = time.perf_counter()
        alpha = p.alphas()
        out = []
        for t in range(mel.shape[0]):
            s.w, s.hidden = sound.latent_stepper.step(
                s.w, w_hats[t : t + 1], embeds[t : t + 1], s.hidden, alpha, p.noise, s.noise_rng
            )
            out.append(s.w[0])
        t2 = time.perf_counter()
        s.times.sound_models += t1 - t0
        s.times.stepper += t2 - t1
        s.frame_index += mel.shape[0]
        return torch.stack(out)

    @torch.no_grad()
    def synthesize(self, ws: torch.Tensor) -> torch.Tensor:
        """Frames [T, 3, H, W] (float, about [-1, 1]) from untruncated ws [T, num_ws, w_dim], with psi."""
        G = self.model.generator
        t0 = time.perf_counter()
        w_avg = G.mapping.w_avg
        ws = w_avg.lerp(ws, self._params.psi) if self._params.psi != 1 else ws
        frames = G.synthesis(ws, noise_mode="const", force_fp32=True)
        if frames.device.type == "cuda":
            torch.cuda.synchronize(frames.device)  # honest stage timings
        self._state.times.synthesis += time.perf_counter() - t0
        self._state.times.frames += ws.shape[0]
        return frames

    def step(self, window: torch.Tensor) -> torch.Tensor:
        """One output frame [3, H, W] from one mel window [n_mels, W]."""
        return self.synthesize(self.step_latents(window.unsqueeze(0)))[0]

    def step_batch(self, windows: torch.Tensor) -> torch.Tensor:
        """T output frames [T, 3, H, W] from T consecutive windows: the offline path, equal to T steps."""
        return self.synthesize(self.step_latents(windows))
