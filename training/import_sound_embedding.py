"""`soundvj train import-embedding CHECKPOINT -o OUT`: the aiSFX package's checkpoint as soundvj's
sound-embedding weights (safetensors, half precision), converted once.

The package ships `aisfx/models/checkpoint.pth`, a pickle of (state_dict, dataset table). It is read
with torch's weights-only unpickler, which builds tensors and plain containers and nothing else (the
dataset table's numpy integers are the only other objects it is allowed to make), and only after the
file's SHA-256 matches the known checkpoint of aisfx 0.1.2. The embedding network's tensors (the
convolutions and batch norms; the package's classifier heads are left out) are written in float16,
which halves the 18.8 MB and changes the embedding by less than the run-to-run spread of its inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.atomic_write import atomic_path
from core.errors import SoundvjError
from core.sound.sound_embedding import NAME, file_sha256

CHECKPOINT_SHA256 = "499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5"  # aisfx 0.1.2
PREFIX = "embedding_net."
METADATA = {
    "name": NAME,
    "source": "aisfx 0.1.2 (PyPI), aisfx/models/checkpoint.pth, model X-Sequential-CE",
    "licence": "CC-BY-4.0",
    "credit": "Alison Bernice Ma and Alexander Lerch, Representation Learning for the Automatic Indexing "
              "of Sound Effects Libraries, ISMIR 2022",
}


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The embedding network's tensors of the package's checkpoint, checked by hash, unpickled safely."""
    if not path.is_file():
        raise SoundvjError(f"{path}: not found (expected aisfx's models/checkpoint.pth)")
    if file_sha256(path) != CHECKPOINT_SHA256:
        raise SoundvjError(f"{path}: not aisfx 0.1.2's checkpoint (SHA-256 differs)")
    # The dataset table's np.int64 values: the pickle names numpy's scalar constructor by its old path.
    scalar = np.dtype(np.int64).type(0).__reduce__()[0]
    allowed = [(scalar, "numpy.core.multiarray.scalar"), np.dtype, type(np.dtype(np.int64))]
    try:
        with torch.serialization.safe_globals(allowed):
            state, _datasets = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the weights-only unpickler refuses anything else
        raise SoundvjError(f"{path}: cannot read the checkpoint safely ({str(e).splitlines()[0]})") from None
    return {k[len(PREFIX):]: v for k, v in state.items()
            if k.startswith(PREFIX) and not k.endswith("num_batches_tracked")}


def convert(checkpoint: Path, out: Path) -> Path:
    from safetensors.torch import save_file

    tensors = {k: v.to(torch.float16).contiguous() for k, v in read_checkpoint(checkpoint).items()}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=METADATA)
    return out
