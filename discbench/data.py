"""Datasets: one registry (`DATASETS`) of everything known about each dataset (classes,
modality, input size, which `DataConfig` options it takes), the trial's data section
(`DataConfig`), and the raw splits of every dataset, checked before training. Adding a dataset
is one loader and one `DatasetInfo` here. The recipe's transforms are training's (train.py).

Image datasets yield `(PIL.Image in RGB mode, int label)` before transforms, so one transform
pipeline (and every timm augmentation) serves all of them; after transforms an item is
`(float tensor (3, image_size, image_size), int label)`, normalised with ImageNet's mean and std.
Sequence datasets yield `(float tensor (L, channels), int label)` and take no transforms.

Every trial sees three splits (`load_splits`): test is the dataset's own held-out split (the
folder `val/` of an ImageFolder tree, CIFAR's test batch, MNIST-1D's test set), and val is a
stratified share of the dataset's training split (data.val_fraction, one fixed draw), so that
every choice can be made without looking at what the report scores.

Layouts (`root` is `data.root`; the folder in brackets may be `root` itself or sit inside it):

    digits         scikit-learn's 8×8 digits (ships with scikit-learn), grey values replicated to
                   3 channels (so the RGB models and augmentations apply unchanged); a fixed
                   stratified split (random_state 0): 1437 train / 360 test images, 10 classes
    synthetic      generated: class c is a fixed random colour pattern (seeded by c) plus
                   per-image Gaussian noise (seeded by split and index); any size and classes
    cifar10        [cifar-10-batches-py]/data_batch_1..5, test_batch (python pickles)
    cifar100       [cifar-100-python]/train, test (python pickles, fine labels)
    imagefolder    root/train/<class>/<image>, root/val/<class>/<image>
    imagenet       the same layout (val/ sorted into one folder per class)
    imagenette     [imagenette2-320 | imagenette2 | imagenette2-160]/train|val/<wnid>/*.JPEG
    tiny_imagenet  [tiny-imagenet-200]/wnids.txt, train/<wnid>/images/*.JPEG,
                   val/images/*.JPEG with val/val_annotations.txt (file <tab> wnid <tab> box)

Sequence datasets (no files; `data.permute: true` puts the tokens in one fixed random order):

    mnist1d            MNIST-1D (Greydanus 2020) from the mnist1d package's generator: 4000 train
                       / 1000 test signals, 1 channel, 10 classes, any length `data.seq_length`
                       (default 40): one set of signals resampled (see `mnist1d_native`); the
                       generator's output is kept in `generated_cache_dir()` between processes
    mnist1d_paper      MNIST-1D exactly as published: the generator's default dataset, 40 samples
                       as it samples and normalises them (4000 / 1000 signals); fixed length
    sequential_digits  scikit-learn's 8×8 digits as 64 one-pixel tokens in raster order (the
                       `digits` split), standardised with the training pixels' mean and std
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import random
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from PIL import Image
from pydantic import Field, model_validator
from torch.utils.data import Dataset, Subset

from .schema import NO_EFFECT_ON_RESULT, Strict

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MNIST1D_NATIVE_LENGTH = 72  # the generator's template_len + padding[1]: its signals' own length
MNIST1D_PAPER_LENGTH = 40  # the generator's default final_seq_length: the published dataset's
PERMUTATION_SEED = 0  # the one fixed token permutation of data.permute
VALIDATION_SEED = 0  # the one fixed draw of the validation split (carve_validation)


class DatasetError(ValueError):
    """A dataset that is missing or not in the expected layout; the message says what was
    expected where, what was found, and where to get the dataset."""


@dataclass(frozen=True)
class SourceSplits:
    """What a dataset's loader returns: its own training split and its own held-out split (the
    test split: MNIST-1D's test set, digits' held-out part, CIFAR's test batch, ImageNet's val),
    with int labels: PIL RGB images (untransformed) for image data, float tensors (L, channels)
    for sequence data."""

    train: Dataset
    test: Dataset
    num_classes: int
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Splits:
    """A trial's three splits (`load_splits`): train and val carved from the dataset's training
    split (`carve_validation`), test the dataset's own held-out split. Every choice (tuning,
    stopping, the per-epoch records) reads val; only a trial's final numbers read test."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    classes: tuple[str, ...]


class ArrayImages(Dataset):
    """Images held in memory as uint8 arrays (n, H, W, 3) with labels (n,)."""

    def __init__(self, images: np.ndarray, labels: Sequence[int]):
        self.images = images
        self.labels = [int(label) for label in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index], mode="RGB"), self.labels[index]


class ImageFiles(Dataset):
    """Images read from files on access: samples are (path, label)."""

    def __init__(self, samples: Sequence[tuple[Path, int]]):
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        with Image.open(path) as image:
            return image.convert("RGB"), label


class SyntheticImages(Dataset):
    """Deterministic class-conditional images: item i has label i mod num_classes and is that
    class's pattern (a 4×4 random colour grid, seeded by the class, upsampled bicubically to
    image_size) plus Gaussian noise (std 48 grey levels, seeded by (split, i))."""

    NOISE_STD = 48.0

    def __init__(self, size: int, num_classes: int, image_size: int, split: int):
        self.size, self.num_classes, self.image_size, self.split = size, num_classes, image_size, split

    def __len__(self) -> int:
        return self.size

    def pattern(self, label: int) -> np.ndarray:
        grid = np.random.default_rng([7, label]).integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(grid, mode="RGB").resize((self.image_size,) * 2, Image.BICUBIC)
        return np.asarray(image, dtype=np.float32)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} synthetic images")
        label = index % self.num_classes
        noise = np.random.default_rng([self.split, index]).normal(
            0.0, self.NOISE_STD, (self.image_size, self.image_size, 3))
        pixels = np.clip(self.pattern(label) + noise, 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, mode="RGB"), label


# ---------------------------------------------------------------------------------- loaders


def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits: images (1797, 8, 8) with values 0..16, labels, and the fixed
    stratified split (train indices, val indices) shared by `digits` and `sequential_digits`."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    train_idx, val_idx = train_test_split(np.arange(len(digits.target)), test_size=0.2, random_state=0,
                                          stratify=digits.target)
    return digits.images, digits.target, train_idx, val_idx


def _digits(data: DataConfig) -> SourceSplits:
    images, labels, train_idx, val_idx = _digits_split()
    grey = np.round(images * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 -> 0..255
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    classes = tuple(str(c) for c in range(10))
    return SourceSplits(ArrayImages(rgb[train_idx], labels[train_idx]),
                  ArrayImages(rgb[val_idx], labels[val_idx]), 10, classes)


def _synthetic(data: DataConfig) -> SourceSplits:
    classes = DATASETS["synthetic"].classes(data)
    default_train, default_test = DATASETS["synthetic"].sizes
    n_train = data.train_limit or default_train
    n_test = data.test_limit or default_test
    return SourceSplits(SyntheticImages(n_train, classes, data.image_size, split=0),
                  SyntheticImages(n_test, classes, data.image_size, split=1),
                  classes, tuple(str(c) for c in range(classes)))


def _need_root(data: DataConfig) -> Path:
    if data.root is None:
        raise DatasetError(f"dataset {data.dataset!r} needs data.root (or --data-root): the folder "
                           f"that holds it; get it from {DATASETS[data.dataset].source}")
    root = Path(data.root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset {data.dataset!r}: data.root {root} does not exist or is not a "
                           f"folder; get the dataset from {DATASETS[data.dataset].source}")
    return root


def _locate(root: Path, subfolders: Sequence[str], marker: str) -> Path:
    """The first of root/<subfolder> or root itself that contains `marker`."""
    for candidate in [root / s for s in subfolders] + [root]:
        if (candidate / marker).exists():
            return candidate
    return root


def _listing(folder: Path, limit: int = 8) -> str:
    if not folder.is_dir():
        return "nothing (the folder does not exist)"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "an empty folder"
    shown = ", ".join(names[:limit]) + (f", … ({len(names)} entries)" if len(names) > limit else "")
    return shown


def _read_cifar_pickle(path: Path, label_key: bytes, dataset: str) -> tuple[np.ndarray, list[int]]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DatasetError(f"dataset {dataset!r}: {path} is not a readable python pickle ({exc}); "
                           f"re-download it from {DATASETS[dataset].source}") from exc
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DatasetError(f"dataset {dataset!r}: {path} should be a dict with keys b'data' and "
                           f"{label_key!r}; found {found}; re-download it from {DATASETS[dataset].source}")
    pixels = np.asarray(batch[b"data"])
    labels = list(batch[label_key])
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3 * 32 * 32 \
            or len(labels) != len(pixels):
        raise DatasetError(f"dataset {dataset!r}: {path} b'data' should be uint8 of shape (n, 3072) "
                           f"with n labels; found {pixels.dtype} {pixels.shape} with {len(labels)} "
                           f"labels; re-download it from {DATASETS[dataset].source}")
    images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # CHW planes -> HWC
    return images, [int(x) for x in labels]


def _cifar(data: DataConfig, folder_name: str, train_files: Sequence[str], test_file: str,
           label_key: bytes) -> SourceSplits:
    num_classes = DATASETS[data.dataset].num_classes
    root = _locate(_need_root(data), [folder_name], test_file)
    missing = [name for name in (*train_files, test_file) if not (root / name).is_file()]
    if missing:
        raise DatasetError(
            f"dataset {data.dataset!r}: expected {', '.join(missing)} in {root} (or in "
            f"{root / folder_name}); found {_listing(root)}; get it from {DATASETS[data.dataset].source}")
    parts = [_read_cifar_pickle(root / name, label_key, data.dataset) for name in train_files]
    train_images = np.concatenate([p[0] for p in parts])
    train_labels = [label for p in parts for label in p[1]]
    val_images, val_labels = _read_cifar_pickle(root / test_file, label_key, data.dataset)
    for name, labels in (("training", train_labels), ("test", val_labels)):
        bad = [x for x in labels if not 0 <= x < num_classes]
        if bad:
            raise DatasetError(f"dataset {data.dataset!r}: {name} labels must be in 0..{num_classes - 1}; "
                               f"found {bad[0]} in {root}")
    classes = tuple(str(c) for c in range(num_classes))
    return SourceSplits(ArrayImages(train_images, train_labels), ArrayImages(val_images, val_labels),
                  num_classes, classes)


def _cifar10(data: DataConfig) -> SourceSplits:
    return _cifar(data, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                  b"labels")


def _cifar100(data: DataConfig) -> SourceSplits:
    return _cifar(data, "cifar-100-python", ["train"], "test", b"fine_labels")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_folders(split_dir: Path, dataset: str) -> list[Path]:
    if not split_dir.is_dir():
        raise DatasetError(f"dataset {dataset!r}: expected the folder {split_dir} with one sub-folder "
                           f"of images per class; found {_listing(split_dir.parent)} in "
                           f"{split_dir.parent}; get it from {DATASETS[dataset].source}")
    folders = sorted(p for p in split_dir.iterdir() if p.is_dir())
    if not folders:
        loose = _images_in(split_dir)
        hint = (f" ({len(loose)} loose image files: sort them into {split_dir}/<class>/)" if loose else "")
        raise DatasetError(f"dataset {dataset!r}: {split_dir} has no class folders{hint}; expected "
                           f"{split_dir}/<class>/<image>; get it from {DATASETS[dataset].source}")
    empty = [f.name for f in folders if not _images_in(f)]
    if empty:
        raise DatasetError(f"dataset {dataset!r}: class folder(s) {', '.join(empty[:5])} in {split_dir} "
                           f"hold no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return folders


def _image_folder_tree(data: DataConfig, subfolders: Sequence[str] = ()) -> SourceSplits:
    root = _locate(_need_root(data), subfolders, "train")
    train_folders = _class_folders(root / "train", data.dataset)
    val_folders = _class_folders(root / "val", data.dataset)
    classes = tuple(f.name for f in train_folders)
    val_classes = tuple(f.name for f in val_folders)
    if set(val_classes) - set(classes):
        extra = sorted(set(val_classes) - set(classes))
        raise DatasetError(f"dataset {data.dataset!r}: {root / 'val'} has class folders that "
                           f"{root / 'train'} lacks: {', '.join(extra[:5])}; both must use the same "
                           f"class names")
    if len(classes) < 2:
        raise DatasetError(f"dataset {data.dataset!r}: {root / 'train'} has {len(classes)} class "
                           f"folder; a classification dataset needs at least 2")
    index = {name: i for i, name in enumerate(classes)}
    train = [(p, i) for i, f in enumerate(train_folders) for p in _images_in(f)]
    val = [(p, index[f.name]) for f in val_folders for p in _images_in(f)]
    return SourceSplits(ImageFiles(train), ImageFiles(val), len(classes), classes)


def _imagefolder(data: DataConfig) -> SourceSplits:
    return _image_folder_tree(data)


def _imagenette(data: DataConfig) -> SourceSplits:
    return _image_folder_tree(data, ["imagenette2-320", "imagenette2", "imagenette2-160"])


def _tiny_imagenet(data: DataConfig) -> SourceSplits:
    root = _locate(_need_root(data), ["tiny-imagenet-200"], "wnids.txt")
    source = DATASETS["tiny_imagenet"].source
    wnids_file = root / "wnids.txt"
    annotations = root / "val" / "val_annotations.txt"
    for needed in (wnids_file, root / "train", root / "val" / "images", annotations):
        if not needed.exists():
            raise DatasetError(f"dataset 'tiny_imagenet': expected {needed} (layout: wnids.txt, "
                               f"train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt); "
                               f"found {_listing(needed.parent)} in {needed.parent}; get it from {source}")
    wnids = sorted({line.strip() for line in wnids_file.read_text().splitlines() if line.strip()})
    if len(wnids) < 2:
        raise DatasetError(f"dataset 'tiny_imagenet': {wnids_file} lists {len(wnids)} class ids; "
                           f"expected one WordNet id per line (200 in the real dataset)")
    index = {w: i for i, w in enumerate(wnids)}
    train = []
    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        images = _images_in(folder) if folder.is_dir() else []
        if not images:
            raise DatasetError(f"dataset 'tiny_imagenet': expected training images in {folder} for "
                               f"class {wnid} (listed in {wnids_file}); found {_listing(folder)}")
        train += [(p, index[wnid]) for p in images]
    val = []
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise DatasetError(f"dataset 'tiny_imagenet': {annotations} line {number} should be "
                               f"'<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>'; found {line!r}")
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in index:
            raise DatasetError(f"dataset 'tiny_imagenet': {annotations} line {number} names class "
                               f"{wnid!r}, which {wnids_file} does not list")
        path = root / "val" / "images" / name
        if not path.is_file():
            raise DatasetError(f"dataset 'tiny_imagenet': {annotations} line {number} names {path}, "
                               f"which does not exist")
        val.append((path, index[wnid]))
    if not val:
        raise DatasetError(f"dataset 'tiny_imagenet': {annotations} lists no validation images")
    return SourceSplits(ImageFiles(train), ImageFiles(val), len(wnids), tuple(wnids))


# --------------------------------------------------------------------------- sequence data


class SequenceArrays(Dataset):
    """Sequences held in memory: float32 array (n, L, channels) and labels (n,); an item is
    (float tensor (L, channels), int label)."""

    def __init__(self, signals: np.ndarray, labels: Sequence[int]):
        if signals.ndim != 3 or len(signals) != len(labels):
            raise ValueError(f"signals must be (n, L, channels) with n labels; got {signals.shape} "
                             f"and {len(labels)} labels")
        self.signals = torch.from_numpy(np.ascontiguousarray(signals, dtype=np.float32))
        self.labels = [int(label) for label in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.signals[index], self.labels[index]


def resample(signals: np.ndarray, length: int) -> np.ndarray:
    """Signals (..., L) on `length` samples of the same interval, linearly interpolated.

    Samples sit at cell centres, t_k = (k + ½)/length of the interval (the ends held beyond
    the outermost samples), so the sample spacing is exactly interval/length at every length:
    going from L to L′ samples changes the step by exactly L/L′, the Δ scale of the
    sampling-rate transfer. (MNIST-1D's generator samples at the interval's ends instead,
    spacing interval/(L − 1); hence discbench's mnist1d at 40 is not bit-identical to the
    package's, though both are resamplings of the same signals.)
    """
    old = (np.arange(signals.shape[-1]) + 0.5) / signals.shape[-1]
    new = (np.arange(length) + 0.5) / length
    right = np.clip(np.searchsorted(old, new, side="right"), 1, len(old) - 1)
    left = right - 1
    weight = np.clip((new - old[left]) / (old[right] - old[left]), 0.0, 1.0)
    return signals[..., left] * (1.0 - weight) + signals[..., right] * weight


def generated_cache_dir() -> Path:
    """Where generated datasets are kept between processes: $DISCBENCH_CACHE, else
    $XDG_CACHE_HOME/discbench, else ~/.cache/discbench."""
    if os.environ.get("DISCBENCH_CACHE"):
        return Path(os.environ["DISCBENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "discbench"


@functools.lru_cache(maxsize=2)
def _mnist1d_generated(final_seq_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The mnist1d package's generator with its default arguments but `final_seq_length`:
    (x_train (4000, L), y_train, x_test (1000, L), y_test). The generator seeds python's and
    numpy's global RNGs; their states are restored afterwards. Nothing is downloaded.

    Generating takes about 2 s, and every trial runs in a process of its own, so the arrays are
    kept in `generated_cache_dir()` under a name that holds the package's version and a hash of
    the generator's arguments; an unreadable file is generated again, and a cache that cannot
    be written is skipped.
    """
    from importlib.metadata import version

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.final_seq_length = final_seq_length
    key = hashlib.sha256(repr(sorted(vars(args).items())).encode()).hexdigest()[:16]
    cached = generated_cache_dir() / f"mnist1d-{version('mnist1d')}-{key}.npz"
    names = ("x", "y", "x_test", "y_test")
    with contextlib.suppress(OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # else generate
        with np.load(cached) as arrays:
            return tuple(arrays[name] for name in names)
    states = random.getstate(), np.random.get_state()
    try:
        generated = make_dataset(args)
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
    arrays = tuple(np.asarray(generated[name]) for name in names)
    with contextlib.suppress(OSError):  # written whole, then renamed: no trial reads a half-written file
        cached.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=cached.parent, suffix=".npz")
        try:
            with os.fdopen(handle, "wb") as f:
                np.savez(f, **dict(zip(names, arrays)))
            os.replace(partial, cached)
        finally:
            Path(partial).unlink(missing_ok=True)
    return arrays


def mnist1d_native() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D from its procedural generator at its native length: (x_train (4000, 72),
    y_train, x_test (1000, 72), y_test), normalised by the generator (mean 0, std 1 overall).

    The generator draws every random number (padding, scale, translation, noise, shear) on
    signals of length 72 and only then interpolates to `final_seq_length`, so its datasets of
    different lengths are resamplings of the same signals (tests/test_data.py checks this);
    but it normalises each length by that length's own mean and std. So discbench generates
    once at 72 and resamples itself (`resample`): every length has exactly the scale of the
    native signals, and at 72 they are the native signals.
    """
    return _mnist1d_generated(MNIST1D_NATIVE_LENGTH)


def _permuted(signals: np.ndarray, data: DataConfig) -> np.ndarray:
    """signals (n, L, C) with the tokens in the fixed order of data.permute (pMNIST's idea)."""
    if not data.permute:
        return signals
    order = np.random.default_rng(PERMUTATION_SEED).permutation(signals.shape[1])
    return signals[:, order]


def _mnist1d(data: DataConfig) -> SourceSplits:
    x_train, y_train, x_test, y_test = mnist1d_native()
    length = sequence_length(data)
    train, val = (resample(x, length)[..., None] for x in (x_train, x_test))
    classes = tuple(str(c) for c in range(10))
    return SourceSplits(SequenceArrays(_permuted(train, data), y_train),
                  SequenceArrays(_permuted(val, data), y_test), 10, classes)


def _mnist1d_paper(data: DataConfig) -> SourceSplits:
    """MNIST-1D exactly as published: the generator's default dataset, 40 samples sampled by the
    generator itself and normalised by it (not resampled at cell centres, see mnist1d_native)."""
    x_train, y_train, x_test, y_test = _mnist1d_generated(MNIST1D_PAPER_LENGTH)
    classes = tuple(str(c) for c in range(10))
    return SourceSplits(SequenceArrays(_permuted(x_train[..., None], data), y_train),
                  SequenceArrays(_permuted(x_test[..., None], data), y_test), 10, classes)


def _sequential_digits(data: DataConfig) -> SourceSplits:
    images, labels, train_idx, val_idx = _digits_split()
    pixels = images.reshape(len(images), 64, 1) / 16.0  # raster order, values in [0, 1]
    mean, std = pixels[train_idx].mean(), pixels[train_idx].std()
    signals = _permuted((pixels - mean) / std, data)
    classes = tuple(str(c) for c in range(10))
    return SourceSplits(SequenceArrays(signals[train_idx], labels[train_idx]),
                  SequenceArrays(signals[val_idx], labels[val_idx]), 10, classes)


# ----------------------------------------------------------------------------- the registry

ITEMS = {"image": "images", "sequence": "sequences"}  # what one item of each modality is called


@dataclass(frozen=True)
class DatasetInfo:
    """Everything discbench knows about one dataset; registered once in DATASETS.

    modality: "image" items are (PIL RGB image, label) before transforms; "sequence" items are
    (float tensor (L, channels), label) and take no transforms. num_classes: its classes (None:
    as many as the user's class folders). sizes: (train, test) items of the dataset's own splits, when
    known (None: depends on the user's files). default_length: a sequence dataset's length when
    data.seq_length is not set; resamples: whether it can be made at any data.seq_length (the
    same signals resampled, for sampling-rate transfer). generated: made on demand, so
    data.train_limit / data.test_limit are its split sizes and data.num_classes may set its
    classes (num_classes is then the default).
    """

    name: str
    loader: Callable[[DataConfig], SourceSplits]
    modality: Literal["image", "sequence"]
    needs_root: bool
    source: str  # where to get it, or how it is made
    num_classes: int | None
    sizes: tuple[int, int] | None = None
    channels: int = 3
    default_length: int | None = None
    resamples: bool = False
    generated: bool = False

    @property
    def items(self) -> str:
        """What one item is called, plural ("images", "sequences"): throughput's unit."""
        return ITEMS[self.modality]

    def classes(self, data: DataConfig) -> int | None:
        """The number of classes `data` gives (None: counted in the user's files)."""
        return data.num_classes or self.num_classes

    def sequence_length(self, data: DataConfig) -> int:
        """Tokens per item: data.seq_length, else the dataset's default length."""
        if self.modality != "sequence":
            raise ValueError(f"dataset {self.name!r} is image data; it has no sequence length")
        return data.seq_length or self.default_length

    def input_size(self, data: DataConfig) -> tuple[int, ...]:
        """One item's tensor shape as the model takes it: (3, image_size, image_size) for images,
        (L, channels) for sequences (timm's pretrained_cfg["input_size"] convention)."""
        if self.modality == "sequence":
            return (self.sequence_length(data), self.channels)
        return (3, data.image_size, data.image_size)

    def validate(self, data: DataConfig) -> None:
        """Raise ValueError for a DataConfig option this dataset does not take."""
        if data.num_classes is not None and not self.generated:
            generated = [name for name, d in DATASETS.items() if d.generated]
            raise ValueError(f"data.num_classes is only for generated datasets ({', '.join(generated)}); "
                             f"dataset {self.name!r} knows its own classes (remove num_classes)")
        if self.modality != "sequence" and (data.seq_length is not None or data.permute):
            key = "seq_length" if data.seq_length is not None else "permute"
            sequences = [name for name, d in DATASETS.items() if d.modality == "sequence"]
            raise ValueError(f"data.{key} is for sequence data ({', '.join(sequences)}); dataset "
                             f"{self.name!r} is image data")
        if self.modality == "sequence" and data.seq_length not in (None, self.default_length) \
                and not self.resamples:
            resampling = [name for name, d in DATASETS.items() if d.resamples]
            raise ValueError(f"data.seq_length: dataset {self.name!r} has a fixed length of "
                             f"{self.default_length} tokens, got {data.seq_length}; datasets that can be "
                             f"made at any length: {', '.join(resampling)}")


DATASETS: dict[str, DatasetInfo] = {d.name: d for d in [
    DatasetInfo("digits", _digits, "image", False, "ships with scikit-learn (sklearn.datasets.load_digits)",
                10, (1437, 360)),
    DatasetInfo("synthetic", _synthetic, "image", False, "generated (class patterns plus noise)",
                10, (1024, 256), generated=True),
    DatasetInfo("cifar10", _cifar10, "image", True,
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (unpack it: it holds "
                "cifar-10-batches-py/)", 10, (50_000, 10_000)),
    DatasetInfo("cifar100", _cifar100, "image", True,
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (unpack it: it holds "
                "cifar-100-python/)", 100, (50_000, 10_000)),
    DatasetInfo("imagefolder", _imagefolder, "image", True,
                "any folder with train/<class>/<image> and val/<class>/<image> (the class "
                "folders of train and val must match)", None),
    DatasetInfo("imagenet", _imagefolder, "image", True,
                "https://image-net.org/download.php (ILSVRC2012 train and val, needs an account); "
                "unpack train into train/<wnid>/ and sort val into val/<wnid>/ (e.g. with the "
                "widely used valprep.sh)", 1000, (1_281_167, 50_000)),
    DatasetInfo("tiny_imagenet", _tiny_imagenet, "image", True,
                "http://cs231n.stanford.edu/tiny-imagenet-200.zip (unzip it: it holds "
                "tiny-imagenet-200/)", 200, (100_000, 10_000)),
    DatasetInfo("imagenette", _imagenette, "image", True,
                "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz (unpack it: it "
                "holds imagenette2-320/train and imagenette2-320/val)", 10, (9_469, 3_925)),
    DatasetInfo("mnist1d", _mnist1d, "sequence", False,
                "generated by the mnist1d package's procedural generator (never downloaded)",
                10, (4000, 1000), channels=1, default_length=40, resamples=True),
    DatasetInfo("mnist1d_paper", _mnist1d_paper, "sequence", False,
                "the mnist1d package's generator with its default arguments: the published dataset "
                "(40 samples as the generator makes them; never downloaded)",
                10, (4000, 1000), channels=1, default_length=MNIST1D_PAPER_LENGTH),
    DatasetInfo("sequential_digits", _sequential_digits, "sequence", False,
                "ships with scikit-learn (sklearn.datasets.load_digits), pixels in raster order",
                10, (1437, 360), channels=1, default_length=64),
]}


class DataConfig(Strict):
    """A trial's data section (TrialConfig.data); DATASETS[dataset].validate checks the options
    against the dataset."""

    dataset: Literal[tuple(DATASETS)] = "digits"  # type: ignore[valid-type]
    # where the user's dataset lives (DatasetInfo.needs_root says which need it)
    root: str | None = Field(None, json_schema_extra=NO_EFFECT_ON_RESULT)
    image_size: int = Field(16, gt=0)  # image data: pixels, square (ignored for sequence data)
    # sequence data: tokens per item (default: the dataset's length); only datasets that can
    # be resampled (mnist1d) take other lengths
    seq_length: int | None = Field(None, gt=1)
    permute: bool = False  # sequence data: tokens in one fixed random order (permuted MNIST)
    num_classes: int | None = Field(None, gt=1)  # generated datasets only; others know their classes
    # Use only N training / test items: a fixed random subset (seed 0, the same for every trial
    # and seed, so trials differ only in what they study). For a generated dataset these are the
    # split sizes (default: its DatasetInfo.sizes). Validation is carved from the training items.
    train_limit: int | None = Field(None, gt=0)
    test_limit: int | None = Field(None, gt=0)
    # the share of the training split held out as the validation split, stratified by class
    # (carve_validation: the same items for every trial). 0: no validation split, for a study
    # that chooses nothing and must train on the whole split (a published protocol reproduced);
    # its epochs then record no validation numbers, and it cannot be tuned or judged converged
    val_fraction: float = Field(0.1, ge=0, lt=1)
    batch_size: int = Field(64, gt=0)  # per data-parallel worker
    eval_batch_size: int | None = Field(None, gt=0)  # default: batch_size
    workers: int = Field(0, ge=0, json_schema_extra=NO_EFFECT_ON_RESULT)  # DataLoader worker processes

    @model_validator(mode="after")
    def _fits_the_dataset(self) -> DataConfig:
        DATASETS[self.dataset].validate(self)
        return self


def sequence_length(data: DataConfig) -> int:
    """Tokens per item of a sequence dataset: data.seq_length, else the dataset's default."""
    return DATASETS[data.dataset].sequence_length(data)


def input_size(data: DataConfig) -> tuple[int, ...]:
    """One item's tensor shape as the model takes it (DatasetInfo.input_size)."""
    return DATASETS[data.dataset].input_size(data)


def _fixed_subset(dataset: Dataset, limit: int | None) -> Dataset:
    """At most `limit` items: a fixed random subset (seed 0, so every trial sees the same one)."""
    if limit is None or limit >= len(dataset):
        return dataset
    chosen = np.sort(np.random.default_rng(0).permutation(len(dataset))[:limit])
    return Subset(dataset, chosen.tolist())


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """The int labels (n,) of a split, read without loading its images."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    if isinstance(dataset, ImageFiles):
        return np.array([label for _, label in dataset.samples], dtype=np.int64)
    if isinstance(dataset, SyntheticImages):
        return np.arange(len(dataset), dtype=np.int64) % dataset.num_classes
    return np.asarray(dataset.labels, dtype=np.int64)


def carve_validation(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices), both sorted: a stratified split of a training split.

    Each class c keeps round(fraction · n_c) of its n_c items for validation, drawn with a
    generator seeded by (VALIDATION_SEED, c): the same items for every trial, seed and method,
    and a class's draw does not depend on the others. At least one item is held out.
    """
    val: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        count = int(round(fraction * len(members)))
        val.append(np.random.default_rng([VALIDATION_SEED, int(c)]).permutation(members)[:count])
    held = np.sort(np.concatenate(val)) if val else np.array([], dtype=np.int64)
    if held.size == 0 and len(labels) > 1:
        held = np.array([0])
    return np.setdiff1d(np.arange(len(labels)), held), held


def load_splits(data: DataConfig) -> Splits:
    """The train / val / test splits of `data.dataset`, with the layout checked and limits applied.

    test is the dataset's own held-out split (limited to data.test_limit items); train and val
    are the dataset's training split (limited to data.train_limit items first), divided by
    `carve_validation` with data.val_fraction. Raises DatasetError when the dataset is missing
    or malformed, or too small to hold out a validation split.
    """
    info = DATASETS[data.dataset]
    source = info.loader(data)
    # a generated dataset is made at its limits already
    train = source.train if info.generated else _fixed_subset(source.train, data.train_limit)
    test = source.test if info.generated else _fixed_subset(source.test, data.test_limit)
    if data.val_fraction == 0:
        return Splits(train, _take(train, np.array([], dtype=np.int64)), test, source.num_classes, source.classes)
    train_idx, val_idx = carve_validation(dataset_labels(train), data.val_fraction)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise DatasetError(f"dataset {data.dataset!r}: {len(train)} training {info.items} cannot be divided "
                           f"into train and val (data.val_fraction {data.val_fraction:g}); raise train_limit")
    return Splits(_take(train, train_idx), _take(train, val_idx), test, source.num_classes, source.classes)


def _take(dataset: Dataset, indices: np.ndarray) -> Dataset:
    """The items at `indices`: in-memory arrays stay arrays (a copy), anything else a Subset."""
    if isinstance(dataset, SequenceArrays):
        return SequenceArrays(dataset.signals.numpy()[indices], np.asarray(dataset.labels)[indices])
    if isinstance(dataset, ArrayImages):
        return ArrayImages(dataset.images[indices], np.asarray(dataset.labels)[indices])
    return Subset(dataset, indices.tolist())
