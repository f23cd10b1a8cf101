"""soundvj core: StyleGAN3, the sound models, the audio front end and the frame pipeline (no Qt)."""

from core.model_file import load_generator
from core.stylegan3.networks import Generator

__all__ = ["Generator", "load_generator"]
