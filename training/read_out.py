"""A linear read-out of the sound embedding: which kind of sound a window is.

E_I's choice of kind (`stage.kind_fit_steps` of `train inverter`) and the folds over sources (`soundvj
data folds`) both fit it here, so the folds estimate what the shipped choice does on sources it never
heard.

    logits = W · layer_norm(embedding) + b          (layer_norm without affine: E_I's `norm` at rest)

Why this fit and not a few hundred steps inside the inverter's loop: the choice is linear and the
embeddings of every training window fit in memory, so it can see every window many times. Fitted
inside the loop on 8 windows a step, the choice moved by up to 0.08 per class from seed to seed, so
no change of data could be judged by it. Three things make it steady and carry it to other sources:

* every class weighs the same, and within a class each group (its recordings, or its sources:
  packages or recording authors), so a long recording or a big package does not decide what the
  class sounds like;
* the fit sees each feature standardised, with Gaussian noise of `noise` standard deviations added
  to every window it draws, which keeps the read-out from leaning on a few features of one source;
* minibatches drawn by those weights, from a fixed seed.

The standardisation is folded into W and b at the end, so the result is an ordinary Linear layer over
the layer-normalised embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.errors import SoundvjError


@dataclass(frozen=True)
class ReadOutFit:
    """How the read-out is fitted (the settings `train inverter` and `data folds` pass on)."""

    steps: int = 2000
    batch: int = 512
    lr: float = 1e-3
    weight_decay: float = 1e-3
    noise: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1:
            raise SoundvjError(f"read-out fit: steps and batch must be >= 1, got {self.steps} and {self.batch}")
        if self.lr <= 0 or self.weight_decay < 0 or self.noise < 0:
            raise SoundvjError(f"read-out fit: expected lr > 0, weight decay >= 0 and noise >= 0, got "
                               f"{self.lr}, {self.weight_decay} and {self.noise}")


def group_weights(labels: torch.Tensor, groups: list[str] | None) -> torch.Tensor:
    """Sampling weights [N] summing to 1: every class weighs the same, and within a class every group
    (its sources; None: the class is one group)."""
    if groups is not None and len(groups) != len(labels):
        raise SoundvjError(f"read-out fit: {len(groups)} groups for {len(labels)} windows")
    keys = list(zip(labels.tolist(), groups if groups is not None else [""] * len(labels)))
    per_group: dict[tuple[int, str], int] = {}
    for key in keys:
        per_group[key] = per_group.get(key, 0) + 1
    groups_of_class: dict[int, int] = {}
    for label, _ in per_group:
        groups_of_class[label] = groups_of_class.get(label, 0) + 1
    weights = torch.tensor([1.0 / (per_group[key] * groups_of_class[key[0]]) for key in keys], dtype=torch.float64)
    return weights / weights.sum()


def fit_read_out(embeddings: torch.Tensor, labels: torch.Tensor, classes: int, groups: list[str] | None = None,
                 fit: ReadOutFit = ReadOutFit()) -> torch.nn.Linear:
    """A Linear(512 -> classes) over layer_norm(embeddings [N, 512]) for labels [N] (see the module
    docstring). Runs on the embeddings' device; torch's global RNG is left as it was."""
    if embeddings.ndim != 2 or len(embeddings) != len(labels) or not len(labels):
        raise SoundvjError(f"read-out fit: expected embeddings [N, D] and N labels, got {list(embeddings.shape)} "
                           f"and {len(labels)}")
    device = embeddings.device
    generator = torch.Generator(device="cpu").manual_seed(fit.seed)
    with torch.no_grad():
        features = F.layer_norm(embeddings.float(), embeddings.shape[1:])
        mean, std = features.mean(dim=0), features.std(dim=0) + 1e-3
        standard = (features - mean) / std
    weights = group_weights(labels, groups)
    with torch.random.fork_rng(devices=[]):  # Linear's own init draws from the global RNG
        layer = torch.nn.Linear(embeddings.shape[1], classes).to(device)
    with torch.no_grad():  # a seeded start of its own
        bound = 1.0 / embeddings.shape[1] ** 0.5
        layer.weight.copy_((torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound)
        layer.bias.copy_((torch.rand(layer.bias.shape, generator=generator) * 2 - 1) * bound)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
    labels = labels.to(device)
    with torch.enable_grad():
        for _ in range(fit.steps):
            drawn = torch.multinomial(weights, fit.batch, replacement=True, generator=generator).to(device)
            noise = torch.randn((fit.batch, standard.shape[1]), generator=generator).to(device) * fit.noise
            loss = F.cross_entropy(layer(standard[drawn] + noise), labels[drawn])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        weight = layer.weight / std
        layer.bias.copy_(layer.bias - weight @ mean)
        layer.weight.copy_(weight)
    return layer.eval()
