"""soundvj core: StyleGAN3, the sound models, the audio front end and the frame pipeline (no Qt)."""

from core.stylegan3.networks import Generator

__all__ = ["Generator", "load_generator"]


def __getattr__(name: str):
    # Imported lazily: loading pulls in safetensors and the pickle reader, which most callers never need.
    if name == "load_generator":
        from core.model_file import load_generator

        return load_generator
    raise AttributeError(name)
