"""Datasets: every loader on a tiny real dataset built in tmp_path, one training step on each,
and the errors for missing or malformed datasets."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from discbench.config import TrainConfig, TrialConfig
from discbench.data import DATASETS, DataConfig, DatasetError, SyntheticImages, load_splits
from discbench.train import build_datasets
from discbench.train import fit


pytestmark = pytest.mark.usefixtures("one_torch_thread")


RNG = np.random.default_rng(0)


def _write_image(path: Path, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = RNG.integers(0, 256, (size, size + 2, 3), dtype=np.uint8)  # not square on purpose
    Image.fromarray(pixels).save(path)


def _write_cifar_batch(path: Path, n: int, label_key: bytes, classes: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = {b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
             label_key: [i % classes for i in range(n)], b"batch_label": b"tiny"}
    with open(path, "wb") as f:
        pickle.dump(batch, f)


def make_cifar10(root: Path, per_batch: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    for i in range(1, 6):
        _write_cifar_batch(folder / f"data_batch_{i}", per_batch, b"labels", 10)
    _write_cifar_batch(folder / "test_batch", 6, b"labels", 10)
    return root


def make_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    _write_cifar_batch(folder / "train", 12, b"fine_labels", 100)
    _write_cifar_batch(folder / "test", 6, b"fine_labels", 100)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, f)
    return root


def make_image_folder(root: Path, classes=("cat", "dog"), train_per_class=4, val_per_class=2,
                      suffix=".png") -> Path:
    for c in classes:
        for i in range(train_per_class):
            _write_image(root / "train" / c / f"{c}_{i}{suffix}")
        for i in range(val_per_class):
            _write_image(root / "val" / c / f"{c}_val_{i}{suffix}")
    return root


def make_tiny_imagenet(root: Path, wnids=("n01443537", "n01629819", "n01641577")) -> Path:
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        for i in range(3):
            _write_image(folder / "train" / w / "images" / f"{w}_{i}.JPEG")
    lines = []
    for i in range(6):
        name = f"val_{i}.JPEG"
        _write_image(folder / "val" / "images" / name)
        lines.append(f"{name}\t{wnids[i % len(wnids)]}\t0\t0\t10\t10")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def data_config(dataset: str, root: Path | None = None, **extra) -> DataConfig:
    return DataConfig(dataset=dataset, root=str(root) if root else None, image_size=8, **extra)


# ---------------------------------------------------------------------------- the loaders

def test_digits_split_is_fixed_and_rgb():
    splits = load_splits(data_config("digits"))
    assert (len(splits.train) + len(splits.val), len(splits.test), splits.num_classes) == (1437, 360, 10)
    image, label = splits.train[0]
    assert image.mode == "RGB" and image.size == (8, 8) and 0 <= label < 10
    pixels = np.asarray(image)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 0] == pixels[..., 2]).all()
    assert [splits.test[i][1] for i in range(20)] == [load_splits(data_config("digits")).test[i][1]
                                                     for i in range(20)]
    train, _, _, _ = build_datasets(DataConfig(dataset="digits", image_size=16), TrainConfig().resolved())
    tensor, _ = train[0]
    assert tensor.shape == (3, 16, 16)


def test_synthetic_images_are_deterministic_and_class_conditional():
    splits = load_splits(data_config("synthetic", num_classes=5, train_limit=20, test_limit=10))
    assert (len(splits.train) + len(splits.val), len(splits.test), splits.num_classes) == (20, 10, 5)
    first, label = splits.train[3]
    again, _ = load_splits(data_config("synthetic", num_classes=5, train_limit=20)).train[3]
    assert label == splits.train.indices[3] % 5 and np.array_equal(np.asarray(first), np.asarray(again))
    big = SyntheticImages(size=10, num_classes=5, image_size=64, split=0)
    same_class = [np.asarray(big[i][0], dtype=float) for i in (0, 5)]
    other_class = np.asarray(big[1][0], dtype=float)
    # two images of one class are closer than images of different classes
    assert np.abs(same_class[0] - same_class[1]).mean() < np.abs(same_class[0] - other_class).mean()


def test_cifar_pickles(tmp_path):
    ten = load_splits(data_config("cifar10", make_cifar10(tmp_path / "c10")))
    assert (len(ten.train) + len(ten.val), len(ten.test), ten.num_classes) == (20, 6, 10)
    image, label = ten.test[1]
    assert image.size == (32, 32) and image.mode == "RGB" and label == 1
    # the folder itself may be given as the root, too
    direct = load_splits(data_config("cifar10", tmp_path / "c10" / "cifar-10-batches-py"))
    assert len(direct.train) + len(direct.val) == 20
    hundred = load_splits(data_config("cifar100", make_cifar100(tmp_path / "c100")))
    assert (len(hundred.train) + len(hundred.val), len(hundred.test), hundred.num_classes) == (12, 6, 100)


def test_cifar_pixels_are_read_as_channel_planes(tmp_path):
    folder = make_cifar10(tmp_path) / "cifar-10-batches-py"
    red = np.zeros((1, 3072), np.uint8)
    red[0, :1024] = 255  # first plane is red
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": red, b"labels": [0]}, f)
    image, _ = load_splits(data_config("cifar10", tmp_path)).test[0]
    assert np.asarray(image)[5, 7].tolist() == [255, 0, 0]


@pytest.mark.parametrize("dataset", ["imagefolder", "imagenet"])
def test_image_folder_trees(tmp_path, dataset):
    splits = load_splits(data_config(dataset, make_image_folder(tmp_path)))
    assert (len(splits.train) + len(splits.val), len(splits.test), splits.num_classes) == (8, 4, 2)
    assert splits.classes == ("cat", "dog")
    assert [splits.test[i][1] for i in range(4)] == [0, 0, 1, 1]


def test_imagenette_inside_its_archive_folder(tmp_path):
    make_image_folder(tmp_path / "imagenette2-320", classes=("n01440764", "n02102040"), suffix=".JPEG")
    splits = load_splits(data_config("imagenette", tmp_path))
    assert (len(splits.train) + len(splits.val), splits.num_classes) == (8, 2)


def test_tiny_imagenet_uses_val_annotations(tmp_path):
    splits = load_splits(data_config("tiny_imagenet", make_tiny_imagenet(tmp_path)))
    assert (len(splits.train) + len(splits.val), len(splits.test), splits.num_classes) == (9, 6, 3)
    assert [splits.test[i][1] for i in range(6)] == [0, 1, 2, 0, 1, 2]


def test_limits_take_a_fixed_subset_of_all_classes(tmp_path):
    make_image_folder(tmp_path, classes=("a", "b", "c", "d"), train_per_class=10)
    splits = load_splits(data_config("imagefolder", tmp_path, train_limit=12, test_limit=3))
    labels = [splits.train[i][1] for i in range(len(splits.train))]
    assert len(splits.train) + len(splits.val) == 12 and len(splits.test) == 3 and len(set(labels)) > 1
    again = load_splits(data_config("imagefolder", tmp_path, train_limit=12))
    assert labels == [again.train[i][1] for i in range(len(again.train))]


BUILDERS = {
    "cifar10": make_cifar10,
    "cifar100": make_cifar100,
    "imagefolder": make_image_folder,
    "imagenet": make_image_folder,
    "imagenette": make_image_folder,
    "tiny_imagenet": make_tiny_imagenet,
    "synthetic": None,
}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(BUILDERS))
def test_one_training_epoch_on_each_dataset(tmp_path, dataset):
    build = BUILDERS[dataset]
    root = build(tmp_path / "data") if build else None
    # imagefolder at 40 px takes the random-resized-crop branch (inputs > 32 px), the rest at 8 px
    image_size, patch_size = (40, 8) if dataset == "imagefolder" else (8, 4)
    cfg = TrialConfig(
        data={"dataset": dataset, "root": str(root) if root else None, "image_size": image_size, "batch_size": 4,
              "train_limit": 8 if dataset == "synthetic" else None,
              "test_limit": 4 if dataset == "synthetic" else None},
        model={"name": "vim_micro", "patch_size": patch_size},
        train={"preset": "deit", "epochs": 1, "warmup_epochs": 0, "device": "cpu"},
        measure={"throughput": False})
    log = []
    result = fit(cfg, tmp_path / "trial", on_epoch=log.append)
    assert result["status"] == "ok" and len(log) == 1 and np.isfinite(log[0]["train_loss"])


# ------------------------------------------------------------------------------ the errors

def test_missing_root_says_where_to_get_the_dataset(tmp_path):
    with pytest.raises(DatasetError, match=r"needs data.root.*cifar-10-python.tar.gz"):
        load_splits(data_config("cifar10"))
    with pytest.raises(DatasetError, match=r"does not exist.*tiny-imagenet-200.zip"):
        load_splits(data_config("tiny_imagenet", tmp_path / "nowhere"))


def test_cifar_missing_batch_and_malformed_pickles(tmp_path):
    folder = make_cifar10(tmp_path) / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=r"expected data_batch_3 in .*found .*data_batch_1"):
        load_splits(data_config("cifar10", tmp_path))
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match=r"data_batch_3 is not a readable python pickle"):
        load_splits(data_config("cifar10", tmp_path))
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"pixels": []}, f)
    with pytest.raises(DatasetError, match=r"should be a dict with keys b'data' and b'labels'"):
        load_splits(data_config("cifar10", tmp_path))
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DatasetError, match=r"shape \(n, 3072\).*\(2, 100\)"):
        load_splits(data_config("cifar10", tmp_path))


def test_image_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"expected the folder .*train"):
        load_splits(data_config("imagefolder", tmp_path))
    make_image_folder(tmp_path / "flat")
    for image in (tmp_path / "flat" / "val" / "cat").iterdir():
        image.rename(tmp_path / "flat" / "val" / image.name)
    for folder in (tmp_path / "flat" / "val").iterdir():
        if folder.is_dir():
            for image in folder.iterdir():
                image.rename(tmp_path / "flat" / "val" / image.name)
            folder.rmdir()
    with pytest.raises(DatasetError, match=r"no class folders \(4 loose image files: sort them into"):
        load_splits(data_config("imagenet", tmp_path / "flat"))
    make_image_folder(tmp_path / "extra")
    _write_image(tmp_path / "extra" / "val" / "bird" / "b.png")
    with pytest.raises(DatasetError, match=r"class folders that .*train lacks: bird"):
        load_splits(data_config("imagefolder", tmp_path / "extra"))
    make_image_folder(tmp_path / "empty")
    (tmp_path / "empty" / "train" / "fish").mkdir()
    with pytest.raises(DatasetError, match=r"fish .* hold no image files"):
        load_splits(data_config("imagefolder", tmp_path / "empty"))


def test_tiny_imagenet_errors(tmp_path):
    root = make_tiny_imagenet(tmp_path / "a")
    (root / "tiny-imagenet-200" / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DatasetError, match=r"expected .*val_annotations.txt"):
        load_splits(data_config("tiny_imagenet", root))
    root = make_tiny_imagenet(tmp_path / "b")
    annotations = root / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + "val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(DatasetError, match=r"line 7 names class 'n99999999'"):
        load_splits(data_config("tiny_imagenet", root))
    annotations.write_text("val_9.JPEG\tn01443537\t0\t0\t1\t1\n")
    with pytest.raises(DatasetError, match=r"val_9.JPEG, which does not exist"):
        load_splits(data_config("tiny_imagenet", root))


def test_too_few_images_for_one_batch_is_an_error_before_training(tmp_path):
    cfg = TrialConfig(data={"dataset": "imagefolder", "root": str(make_image_folder(tmp_path / "d")),
                            "image_size": 8, "batch_size": 16},
                      model={"name": "vim_micro", "patch_size": 4}, train={"epochs": 1})
    with pytest.raises(DatasetError, match=r"7 training images per worker is fewer than data.batch_size 16"):
        fit(cfg, tmp_path / "trial")


def test_num_classes_only_for_generated_datasets():
    with pytest.raises(ValueError, match=r"num_classes is only for generated datasets \(synthetic\)"):
        DataConfig(dataset="digits", num_classes=3)
    splits = load_splits(DataConfig(dataset="synthetic", num_classes=3, train_limit=6, test_limit=3))
    assert splits.num_classes == 3 and sorted({splits.train[i][1] for i in range(len(splits.train))}) == [0, 1, 2]


# --------------------------------------------------------------------------- the registry

def test_an_unknown_dataset_is_refused_with_the_registered_names():
    with pytest.raises(ValueError, match="'digits', 'synthetic', 'cifar10'.*'sequential_digits'"):
        DataConfig(dataset="mnist")


@pytest.mark.parametrize("name", [n for n, d in DATASETS.items() if not d.needs_root])
def test_the_registered_facts_are_what_the_dataset_loads(name):
    """Classes, split sizes and item shape as DatasetInfo states them, for every dataset that
    needs no files."""
    info = DATASETS[name]
    data = DataConfig(dataset=name, image_size=8)
    splits = load_splits(data)
    assert splits.num_classes == info.num_classes == info.classes(data)
    assert (len(splits.train) + len(splits.val), len(splits.test)) == info.sizes
    item, label = splits.train[0]
    if info.modality == "sequence":
        assert tuple(item.shape) == info.input_size(data) == (info.default_length, info.channels)
    else:
        train, _, _, _ = build_datasets(data, TrainConfig().resolved())
        assert tuple(train[0][0].shape) == info.input_size(data) == (3, 8, 8) and item.mode == "RGB"
    assert 0 <= label < info.num_classes


def test_missing_root_is_a_study_error_only_for_datasets_that_need_one(tmp_path):
    from discbench.data import DATASETS
    from discbench.study import StudyError, load_study

    needing = [n for n, d in DATASETS.items() if d.needs_root]
    assert "cifar10" in needing and "mnist1d" not in needing
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndescription: d\nmethods: [zoh]\ndata: {dataset: cifar10}\n"
                    "model: {name: vim_micro}\n")
    with pytest.raises(StudyError, match="needs data.root"):
        load_study(path)


# ----------------------------------------------------------------------- sequence datasets

def test_mnist1d_items_are_sequences_of_the_configured_length():
    from discbench.data import DATASETS

    for length in (40, 17):
        splits = load_splits(DataConfig(dataset="mnist1d", seq_length=length))
        assert (len(splits.train) + len(splits.val), len(splits.test), splits.num_classes) == (4000, 1000, 10)
        signal, label = splits.train[0]
        assert signal.dtype == torch.float32 and signal.shape == (length, DATASETS["mnist1d"].channels)
        labels = [splits.test[i][1] for i in range(len(splits.test))]
        assert set(labels) == set(range(10))
    default = load_splits(DataConfig(dataset="mnist1d")).train[0][0]
    assert default.shape == (40, 1)


def test_mnist1d_generator_draws_do_not_depend_on_the_length():
    """The package's own datasets at two lengths are the same signals resampled (up to its
    per-length normalisation): checked against the generator itself."""
    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.transform import interpolate

    from discbench.data import mnist1d_native

    native = mnist1d_native()[0]  # (4000, 72), generated at the native length
    for length in (40, 100):
        args = get_dataset_args()
        args.final_seq_length = length
        theirs = make_dataset(args)["x"]
        ours = interpolate(native.T, length).T  # the generator's own (end-aligned) resampling
        # theirs = s · ours + c: the draws agree; only the normalisation constants differ
        slope, intercept = np.polyfit(ours.ravel(), theirs.ravel(), 1)
        assert np.abs(slope * ours + intercept - theirs).max() < 1e-9
        assert abs(slope - 1) > 1e-6  # …which do differ, hence discbench's own resampling


def test_mnist1d_lengths_are_resamplings_with_one_scale():
    """Every length is the native signals resampled (no per-length renormalisation); at the
    native length they are the native signals; a finer length interpolates between them."""
    from discbench.data import MNIST1D_NATIVE_LENGTH, mnist1d_native, resample

    native = mnist1d_native()[2]  # test signals
    at_native = load_splits(DataConfig(dataset="mnist1d", seq_length=MNIST1D_NATIVE_LENGTH)).test
    assert np.array_equal(at_native.signals[..., 0].numpy(), native.astype(np.float32))
    for length in (20, 144):
        val = load_splits(DataConfig(dataset="mnist1d", seq_length=length)).test.signals[..., 0].numpy()
        np.testing.assert_allclose(val, resample(native, length), rtol=1e-6, atol=1e-6)
    # a smooth signal sampled at cell centres comes back at any length
    centres = lambda n: (np.arange(n) + 0.5) / n  # noqa: E731
    smooth = np.sin(2 * np.pi * centres(72))[None]
    np.testing.assert_allclose(resample(smooth, 40)[0], np.sin(2 * np.pi * centres(40)), atol=2e-3)
    long, short = (load_splits(DataConfig(dataset="mnist1d", seq_length=n)).train.signals for n in (144, 20))
    assert abs(long.std() / short.std() - 1) < 0.05


def test_mnist1d_leaves_the_global_random_state_alone(tmp_path, monkeypatch):
    import random

    from discbench.data import DataConfig, _mnist1d_generated, load_splits, mnist1d_native

    monkeypatch.setenv("DISCBENCH_CACHE", str(tmp_path))  # empty: the generator runs
    _mnist1d_generated.cache_clear()
    np.random.seed(5)
    random.seed(5)
    mnist1d_native()
    load_splits(DataConfig(dataset="mnist1d_paper"))
    assert np.random.rand() == np.random.RandomState(5).rand()
    assert random.random() == random.Random(5).random()


def test_mnist1d_generation_is_kept_on_disk_and_generated_again_when_unreadable(tmp_path, monkeypatch):
    from unittest import mock

    from discbench.data import _mnist1d_generated, mnist1d_native

    def fresh():  # as a new trial process would: nothing in memory
        _mnist1d_generated.cache_clear()
        return mnist1d_native()

    monkeypatch.setenv("DISCBENCH_CACHE", str(tmp_path))
    generated = fresh()
    [kept] = tmp_path.iterdir()  # one file, no partial one left beside it
    assert kept.name.startswith("mnist1d-") and kept.suffix == ".npz"
    with mock.patch("mnist1d.data.make_dataset", side_effect=AssertionError("generated again")):
        read = fresh()
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(generated, read))
    kept.write_bytes(b"cut short")
    again = fresh()
    assert all(np.array_equal(a, b) for a, b in zip(generated, again))
    assert [p.name for p in tmp_path.iterdir()] == [kept.name] and np.load(kept)["x"].shape == (4000, 72)
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    monkeypatch.setenv("DISCBENCH_CACHE", str(blocked / "cache"))  # cannot be made: generated, not kept
    assert all(np.array_equal(a, b) for a, b in zip(generated, fresh()))
    _mnist1d_generated.cache_clear()


def test_sequential_digits_are_the_digits_pixels_in_raster_order():
    from sklearn.datasets import load_digits

    images = load_splits(DataConfig(dataset="digits", image_size=8))
    seq = load_splits(DataConfig(dataset="sequential_digits"))
    assert (len(seq.train) + len(seq.val), len(seq.test), seq.num_classes) == (1437, 360, 10)
    signal, label = seq.test[3]
    assert signal.shape == (64, 1) and label == images.test[3][1]
    grey = np.asarray(images.test[3][0])[..., 0].astype(float).ravel()
    # the same image, pixel for pixel (standardised): a perfect linear relation
    assert np.corrcoef(grey, signal[:, 0].numpy())[0, 1] > 0.999
    pixels = load_digits().images.reshape(-1, 64)
    assert signal[:, 0].numpy().std() > 0 and pixels.shape[1] == 64


def test_permuted_sequences_use_one_fixed_permutation():
    from discbench.data import PERMUTATION_SEED

    plain = load_splits(DataConfig(dataset="sequential_digits"))
    permuted = load_splits(DataConfig(dataset="sequential_digits", permute=True))
    again = load_splits(DataConfig(dataset="sequential_digits", permute=True))
    order = np.random.default_rng(PERMUTATION_SEED).permutation(64)
    assert not np.array_equal(order, np.arange(64))
    for split in ("train", "val", "test"):
        ours, base = getattr(permuted, split).signals, getattr(plain, split).signals
        assert torch.equal(ours, base[:, order])  # the same order for every item and split
        assert torch.equal(ours, getattr(again, split).signals)
    assert permuted.train.labels == plain.train.labels


@pytest.mark.parametrize("data,message", [
    (dict(dataset="digits", seq_length=20), "data.seq_length is for sequence data"),
    (dict(dataset="cifar10", permute=True), "data.permute is for sequence data"),
    (dict(dataset="sequential_digits", seq_length=32), "fixed length of 64 tokens, got 32; datasets "
                                                       "that can be made at any length: mnist1d"),
])
def test_sequence_options_on_the_wrong_dataset_are_clear_errors(data, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**data)


@pytest.mark.parametrize("trial,message", [
    (dict(train={"preset": "deit"}), r"train.augment: True, train.mixup: 0.8, train.cutmix: 1.0: image "
                                     r"augmentations, but dataset 'mnist1d' is sequence data"),
    (dict(train={"mixup": 0.2}), "train.mixup: 0.2: image augmentations"),
    (dict(measure={"resolutions": [32]}), "measure.resolutions is for image data"),
    (dict(data={"dataset": "sequential_digits"}, measure={"eval_lengths": [32]}),
     "dataset 'sequential_digits' cannot be resampled to other lengths; datasets that can: mnist1d"),
    (dict(data={"dataset": "mnist1d", "permute": True}, measure={"eval_lengths": [32]}),
     "a permuted sequence"),
    (dict(data={"dataset": "digits"}, measure={"eval_lengths": [32]}), "dataset 'digits' cannot be resampled"),
])
def test_image_only_and_transfer_options_are_checked_against_the_data(trial, message):
    spec = {"data": {"dataset": "mnist1d"}, "model": {"name": "seqmamba_micro"}, **trial}
    with pytest.raises(ValueError, match=message):
        TrialConfig(**spec)


@pytest.mark.parametrize("dataset,model,message", [
    ("mnist1d", "vim_micro", "model.name 'vim_micro' cannot read dataset 'mnist1d', which is sequence "
                             "data; use one of mnist1d_cnn, mnist1d_gru, mnist1d_logistic, mnist1d_mlp, "
                             + ", ".join(f"{family}_{size}" for family in ("seqcnn", "seqgru", "seqmamba", "seqssd",
                                                                         "seqtransformer")
                                         for size in sorted(("nano", "micro", "mini", "tiny", "small")))),
    ("digits", "seqmamba_micro", "cannot read dataset 'digits', which is image data"),
])
def test_a_model_that_cannot_read_the_data_is_a_clear_error(dataset, model, message):
    from discbench.train import model_arguments

    with pytest.raises(ValueError, match=message):
        model_arguments(TrialConfig(data={"dataset": dataset}, model={"name": model}), 10)


@pytest.mark.slow
@pytest.mark.parametrize("data", [{"dataset": "mnist1d", "seq_length": 24},
                                  {"dataset": "sequential_digits", "permute": True}])
def test_one_training_epoch_on_sequence_data(tmp_path, data):
    cfg = TrialConfig(data={**data, "train_limit": 64, "test_limit": 32, "batch_size": 16},
                      model={"name": "seqmamba_micro", "kwargs": {"depth": 1}},
                      train={"preset": "digits", "epochs": 1, "device": "cpu"},
                      measure={"throughput": True, "batch_sizes": [8], "repeats": 1, "warmup": 0})
    log = []
    result = fit(cfg, tmp_path / "trial", on_epoch=log.append)
    assert result["status"] == "ok" and len(log) == 1 and np.isfinite(log[0]["train_loss"])
    # inference throughput is the train trial kind's (tests/test_train.py checks its rows for sequences)
    assert "infer_images_per_s" not in result and result["transfer"] == []


# ------------------------------------------------------------------------ the three splits

def test_validation_is_a_fixed_stratified_share_of_the_training_split():
    from discbench.data import carve_validation, dataset_labels, mnist1d_native

    splits = load_splits(DataConfig(dataset="mnist1d"))
    source_train, source_labels = mnist1d_native()[0], mnist1d_native()[1]
    assert len(splits.train) + len(splits.val) == len(source_labels) and len(splits.test) == 1000
    # train and val are disjoint and together the whole training split, item for item
    both = np.concatenate([splits.train.signals.numpy(), splits.val.signals.numpy()])[..., 0]
    rows = {row.tobytes() for row in both}
    assert len(rows) == len(source_labels)
    # stratified: every class holds out round(10 %) of its items
    counts = np.bincount(source_labels, minlength=10)
    assert np.array_equal(np.bincount(dataset_labels(splits.val), minlength=10), np.round(0.1 * counts))
    # one draw: the same items whatever the trial, and another fraction holds out more
    again = load_splits(DataConfig(dataset="mnist1d", seq_length=72))
    assert np.array_equal(again.val.signals.numpy()[..., 0],
                          source_train[carve_validation(source_labels, 0.1)[1]].astype(np.float32))
    assert len(load_splits(DataConfig(dataset="mnist1d", val_fraction=0.25)).val) == int(np.round(0.25 * counts).sum())
    # the test split is the generator's test set, untouched by the carving
    assert np.array_equal(splits.test.signals.numpy()[..., 0], load_splits(
        DataConfig(dataset="mnist1d", val_fraction=0.3)).test.signals.numpy()[..., 0])


def test_a_class_draw_does_not_depend_on_the_other_classes():
    from discbench.data import carve_validation

    labels = np.repeat(np.arange(3), 20)
    _, held = carve_validation(labels, 0.2)
    _, held_without_two = carve_validation(labels[labels != 2], 0.2)
    assert np.array_equal(held[labels[held] != 2], held_without_two)
    assert len(held) == 12


def test_too_small_to_hold_out_a_validation_split():
    with pytest.raises(DatasetError, match=r"cannot be divided into train and val"):
        load_splits(DataConfig(dataset="mnist1d", train_limit=1))


def test_no_validation_split_for_a_published_protocol(tmp_path):
    """data.val_fraction 0: the whole training split trains (a published protocol that chooses
    nothing), the epochs record no validation numbers, and the final numbers are test's."""
    splits = load_splits(DataConfig(dataset="mnist1d_paper", val_fraction=0))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4000, 0, 1000)
    cfg = TrialConfig(data={"dataset": "mnist1d", "seq_length": 16, "train_limit": 64, "test_limit": 32,
                            "batch_size": 16, "val_fraction": 0},
                      model={"name": "seqgru_micro"}, train={"preset": "digits", "epochs": 1, "device": "cpu"},
                      measure={"throughput": False})
    log = []
    result = fit(cfg, tmp_path / "trial", on_epoch=log.append)
    assert math.isnan(log[0]["top1"]) and math.isnan(log[0]["val_loss"])
    assert result["status"] == "ok" and 0 <= result["top1"] <= 100
