"""The assembled model: a StyleGAN3 generator, the three sound models and the mel settings they expect.

A soundvj model file carries all of it. An NVIDIA pickle (or a converted bare generator) carries only
the generator: it gets seeded, untrained sound models, and the caller is told so in one line.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from core import model_file
from core.audio.demo import demo_soundscape
from core.audio.mel import MelConfig
from core.audio.windows import WindowConfig, mel_windows
from core.default_model import default_generator
from core.device import pick_device
from core.errors import SoundvjError, short_repr
from core.model_file import (
    build_generator,
    builtin_model_file,
    generator_from_pickle,
    is_builtin_model,
    model_kind,
    read_model_file,
    save_model,
)
from core.sound import SoundModels, SoundModelsConfig
from core.sound.sound_embedding import MEL as EMBEDDING_MEL
from core.stylegan3.networks import Generator
from core.stylegan3.ops import backend as ops_backend

SOUND_SEED = 7
# Untrained stand-ins only need to be sound-dependent and fast: width 8 keeps E_A + E_I a small
# part of a frame's time on a 2-core CPU.
SEEDED_SOUND_WIDTH = 8


@dataclass
class SoundvjModel:
    generator: Generator
    sound: SoundModels
    mel_config: MelConfig
    source: str
    sound_is_seeded: bool  # True: the sound models are untrained stand-ins
    metadata: dict[str, str] = field(default_factory=dict)  # free-form model-file fields (training data, credits)
    file: Path | None = None  # the file it was read from (None: built in memory, e.g. the random weights)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def to(self, device: torch.device) -> "SoundvjModel":
        self.generator.to(device)
        self.sound.to(device)
        return self


SEEDED_DELTA_SCALE = 0.3  # stepper deltas relative to the generator's latent spread
SPREAD_SAMPLES = 2048


@torch.no_grad()
def latent_covariance_root(G: Generator) -> torch.Tensor:
    """C^(1/2) of the mapped latents' covariance around w_avg [w_dim, w_dim]: it turns unit noise
    into offsets shaped like the generator's own latent distribution."""
    z = torch.randn([SPREAD_SAMPLES, G.z_dim], device=G.mapping.w_avg.device)
    c = torch.zeros([SPREAD_SAMPLES, G.c_dim], device=z.device)
    w = (G.mapping(z, c)[:, 0] - G.mapping.w_avg).double()
    eigvals, eigvecs = torch.linalg.eigh(w.T @ w / (w.shape[0] - 1))
    return (eigvecs * eigvals.clamp_min(0).sqrt()) @ eigvecs.T


def seeded_sound_models(G: Generator, seed: int = SOUND_SEED, width: int = SEEDED_SOUND_WIDTH,
                        mel: MelConfig | None = None) -> SoundModels:
    """Untrained sound models sized for `G` and windows of `mel` (default: the project's mel), the
    same for the same generator and seed.

    Untrained output layers would offset w isotropically, off the generator's latent distribution
    (every picture turns into the same flat average). Their last layers are therefore shaped by the
    generator's latent covariance: loud sound moves E_I's target about one latent spread, in
    directions the generator actually uses, and the stepper's deltas (and so the noise knob) move
    SEEDED_DELTA_SCALE of that.
    """
    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        root = latent_covariance_root(G).float().cpu()
        mel = mel if mel is not None else MelConfig()
        config = SoundModelsConfig.for_generator(num_ws=G.num_ws, w_dim=G.w_dim, width=width, n_mels=mel.n_mels)
        config = dataclasses.replace(
            config,
            inversion_encoder=dataclasses.replace(config.inversion_encoder, offset_init_std=1.0),
            latent_stepper=dataclasses.replace(config.latent_stepper, delta_init_std=SEEDED_DELTA_SCALE),
        )
        sound = SoundModels(config)
    finally:
        torch.random.set_rng_state(rng_state)
    _standardise_heads(sound, mel)
    with torch.no_grad():
        for head in sound.inversion_encoder.styles:
            head.linear.weight.copy_(root @ head.linear.weight)
            head.linear.bias.copy_(root @ head.linear.bias)
        fc = sound.latent_stepper.out_fc.weight  # [num_ws * w_dim, fc_in]
        fc.copy_((root @ fc.view(G.num_ws, G.w_dim, -1)).view_as(fc))
    sound.set_w_avg(G.mapping.w_avg.detach().cpu())
    return sound.eval().requires_grad_(False)


@torch.no_grad()
def _standardise_heads(sound: SoundModels, mel: MelConfig) -> None:
    """Centre and scale each E_I head's input over a reference soundscape (folded into its linear
    layer). An untrained backbone answers every sound with nearly the same features; removing that
    common part leaves the part that differs between sounds, so different sounds get different pictures."""
    windows = mel_windows(demo_soundscape(seconds=24.0, sample_rate=mel.sample_rate), mel, WindowConfig(fps=4.0))
    inputs: list[torch.Tensor] = []
    hooks = [h.linear.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
             for h in sound.inversion_encoder.styles]
    try:
        sound.inversion_encoder.eval().offsets(windows)
    finally:
        for hook in hooks:
            hook.remove()
    for head, feats in zip(sound.inversion_encoder.styles, inputs):
        mean, scale = feats.mean(dim=0), feats.std(dim=0).mean().clamp_min(1e-6)
        head.linear.bias.copy_(head.linear.bias - head.linear.weight @ mean / scale)
        head.linear.weight.div_(scale)


def _sound_config_json(sound: SoundModels, mel: MelConfig) -> dict:
    return {"models": sound.config.to_dict(), "mel": dataclasses.asdict(mel)}


def _sound_from_file(path: Path, config: dict, state: dict[str, torch.Tensor], G: Generator) -> tuple[SoundModels, MelConfig]:
    unknown = set(config) - {"models", "mel"}
    if unknown:
        raise SoundvjError(f"{path}: sound.config has unknown key(s) {sorted(unknown)}; expected models, mel")
    try:
        models_config = SoundModelsConfig.from_dict(config.get("models", {}))
        mel = MelConfig(**config.get("mel", {}))
    except TypeError as e:
        raise SoundvjError(f"{path}: sound.config does not fit ({e})") from None
    except SoundvjError as e:
        raise SoundvjError(f"{path}: sound.config: {e}") from None
    stepper = models_config.latent_stepper
    if (stepper.num_ws, stepper.w_dim) != (G.num_ws, G.w_dim):
        raise SoundvjError(
            f"{path}: the sound models are for num_ws {stepper.num_ws}, w_dim {stepper.w_dim}; "
            f"the generator has num_ws {G.num_ws}, w_dim {G.w_dim}"
        )
    if models_config.uses_sound_embedding and mel != EMBEDDING_MEL:
        raise SoundvjError(f"{path}: sound.config: heads over the sound embedding need its mel settings "
                           f"{dataclasses.asdict(EMBEDDING_MEL)}, got {dataclasses.asdict(mel)}")
    _check_sound_shapes(path, models_config, state)
    sound = SoundModels(models_config)
    result = sound.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        bad = (result.missing_keys or result.unexpected_keys)[0]
        raise SoundvjError(
            f"{path}: sound model weights do not fit sound.config "
            f"({len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected, e.g. {bad})"
        )
    return sound.eval().requires_grad_(False), mel


def _check_sound_shapes(path: Path, config: SoundModelsConfig, state: dict[str, torch.Tensor]) -> None:
    """The weights in the file against the shapes `config` implies, worked out on the meta device:
    a config that asks for gigabytes is refused before anything is allocated."""
    with torch.device("meta"):
        expected = {k: v.shape for k, v in SoundModels(config).state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        bad = (missing or unexpected)[0]
        raise SoundvjError(
            f"{path}: sound model weights do not fit sound.config "
            f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {short_repr(bad)[1:-1]})"
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != tuple(shape):
            raise SoundvjError(
                f"{path}: sound model weight {key} has shape {list(state[key].shape)}, sound.config needs {list(shape)}"
            )


def _warn(message: str) -> None:
    print(f"soundvj: warning: {message}", file=sys.stderr)


def load_model(
    path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    warn: Callable[[str], None] = _warn,
) -> SoundvjModel:
    """Generator + sound models, ready to run on `device`; `path` None or "default" is the embedded model."""
    dev = pick_device(device)
    embedded = False
    if is_builtin_model(path):
        shipped = builtin_model_file(path)
        if shipped is None:
            G = default_generator()
            model = SoundvjModel(G, seeded_sound_models(G), MelConfig(), "embedded default (random weights)", True)
            return _choose_ops_backend(model.to(dev))
        path, embedded = shipped, shipped == model_file.SHIPPED_DEFAULT  # not a SOUNDVJ_DEFAULT_MODEL file
    path = Path(path)
    if model_kind(path) == "pickle":
        G, sound_config, sound_state, source = generator_from_pickle(path), None, None, f"NVIDIA pickle {path.name}"
        metadata = {}
    else:
        contents = read_model_file(path)
        G = build_generator(contents.generator_config, contents.generator_state, path)
        sound_config, sound_state, source = contents.sound_config, contents.sound_state, contents.source
        metadata = dict(contents.metadata)
    if sound_state is None:
        warn(f"{path} has no sound models; using seeded untrained ones (motion follows the sound's "
             "loudness and spectrum, not its meaning)")
        model = SoundvjModel(G, seeded_sound_models(G), MelConfig(), source or str(path), True, metadata)
    else:
        sound, mel = _sound_from_file(path, sound_config or {}, sound_state, G)
        model = SoundvjModel(G, sound, mel, source or str(path), False, metadata)
    model.file = path.absolute()
    if embedded:  # what the status bar and render's summary call it
        model.source = f"embedded default (trained, {G.img_resolution} px)"
    return _choose_ops_backend(model.to(dev))


def _choose_ops_backend(model: SoundvjModel) -> SoundvjModel:
    """The fastest StyleGAN3 ops for this model on this machine: measured once (< 3 s), then cached."""
    ops_backend.choose_for_model(model.generator)
    return model


def save_full_model(path: str | os.PathLike, model: SoundvjModel, source: str = "") -> Path:
    """Write generator, sound models and mel settings into one model file."""
    return save_model(
        path,
        model.generator,
        sound_state=model.sound.state_dict(),
        sound_config=_sound_config_json(model.sound, model.mel_config),
        source=source or model.source,
        metadata=model.metadata,
    )
