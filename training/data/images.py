"""An image folder as a GAN training set: a folder per class (class-conditional) or a flat folder.

Layouts (`data.path`):

* `DIR/<class>/<image>`: a folder per class. Classes are the sorted folder names (folders without a
  usable image are not classes); `c_dim` = number of classes and `c` is one-hot.
* `DIR/<image>`: a flat folder; unconditional (`c_dim` 0).

Files ending .png, .jpg, .jpeg or .webp (any case) are read, converted to RGB, centre-cropped square
and resized to the generator's resolution (Lanczos). They are decoded once, when the dataset is
opened, into one uint8 tensor (64 px: 12 kB an image). Unreadable files are skipped, counted and
named on stderr; a folder with nothing usable is a one-line error. Items are dicts:
`image` float [3, R, R] in [-1, 1], `label` (class index; 0 for a flat folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from core.errors import SoundvjError, one_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
NAMED_PROBLEMS = 10  # unreadable files named on stderr; the rest are counted


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def load_image(path: Path, resolution: int) -> torch.Tensor:
    """One image as uint8 [3, R, R]: RGB, centre-cropped square, resized (raises on unreadable files)."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode != "RGB":
            img = img.convert("RGBA").convert("RGB") if "A" in img.getbands() or img.mode == "P" else img.convert("RGB")
        width, height = img.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        img = img.crop((left, top, left + side, top + side))
        if side != resolution:
            img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.view(resolution, resolution, 3).permute(2, 0, 1).contiguous()


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images of a folder (see the module docstring), decoded once at `resolution` px."""

    def __init__(self, path: str | Path, resolution: int, verbose: bool = True):
        root = Path(path)
        if not str(path):
            raise SoundvjError("data.path: expected an image folder (a folder per class, or a flat folder of images)")
        if not root.is_dir():
            raise SoundvjError(f"data.path {str(root)!r}: not a folder (expected a folder of images)")
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        per_class = [(d.name, _image_files(d)) for d in class_dirs]
        per_class = [(name, files) for name, files in per_class if files]
        flat = _image_files(root)
        if per_class and flat:
            raise SoundvjError(
                f"data.path {str(root)!r}: holds both images ({flat[0].name}, ...) and class folders "
                f"({per_class[0][0]}, ...); expected one layout: a folder per class, or only images"
            )
        self.root = root
        self.resolution = resolution
        self.conditional = bool(per_class)
        listed = [(f, i) for i, (_, files) in enumerate(per_class) for f in files] if per_class else [(f, 0) for f in flat]
        names = [name for name, _ in per_class]

        images, labels, problems = [], [], []
        from tqdm import tqdm

        show = verbose and sys.stderr.isatty() and len(listed) > 200
        for file, label in tqdm(listed, unit="image", desc="images", disable=not show, file=sys.stderr):
            try:
                images.append(load_image(file, resolution))
                labels.append(label)
            except Exception as e:  # PIL raises many kinds for broken files; the file is what matters
                problems.append((file, one_line(e, 100)))
        self.skipped = [p for p, _ in problems]
        if problems and verbose:
            print(f"data: skipped {len(problems)} unreadable image file(s) in {root}:", file=sys.stderr)
            for file, why in problems[:NAMED_PROBLEMS]:
                print(f"  {file}: {why}", file=sys.stderr)
            if len(problems) > NAMED_PROBLEMS:
                print(f"  ... and {len(problems) - NAMED_PROBLEMS} more", file=sys.stderr)
        if not images:
            found = f"{len(listed)} image file(s), none readable" if listed else "no .png/.jpg/.jpeg/.webp files"
            raise SoundvjError(f"data.path {str(root)!r}: {found}; expected a folder per class or a flat folder of images")
        used = sorted(set(labels))
        if self.conditional and len(used) != len(names):
            # A class whose every file is unreadable would be a class the generator never sees.
            empty = [names[i] for i in range(len(names)) if i not in used]
            raise SoundvjError(f"data.path {str(root)!r}: class folder(s) {', '.join(empty)} hold no readable image")
        self.classes: list[str] = names
        self.images = torch.stack(images)  # uint8 [N, 3, R, R]
        self.labels = torch.tensor(labels, dtype=torch.int64)

    @property
    def c_dim(self) -> int:
        return len(self.classes) if self.conditional else 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index].float() / 127.5 - 1.0, "label": self.labels[index]}

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        """Class indices -> c [N, c_dim] (empty [N, 0] for an unconditional set)."""
        if not self.conditional:
            return torch.zeros(labels.shape[0], 0, device=labels.device)
        return torch.nn.functional.one_hot(labels, len(self.classes)).float()

    def describe(self) -> str:
        if not self.conditional:
            return f"{len(self)} images (unconditional)"
        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return f"{len(self)} images in {len(self.classes)} classes (" + ", ".join(
            f"{n} {c}" for c, n in zip(self.classes, counts)) + ")"
