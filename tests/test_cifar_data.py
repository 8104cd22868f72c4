"""CIFAR-10 sources: the official archive layout (a tiny archive built here) and an image folder
(a small real subset of the JPEG copy in shared/datasets, when present)."""

import io
import pickle
import tarfile

import numpy as np
import pytest

from lenet_keras import data, dataformats, pipeline
from lenet_keras.config import DataConfig
from lenet_keras.errors import ChecksumError, ConfigError, DataNotFoundError

NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def _tiny_archive(path, per_batch=4, corrupt=False):
    """An archive in the official layout: 5 training batches + test batch of `per_batch` images."""
    rng = np.random.default_rng(0)
    expected = {"train": [], "test": []}
    with tarfile.open(path, "w:gz") as archive:
        def add(name, obj):
            payload = pickle.dumps(obj) if not (corrupt and name == "test_batch") else b"garbage"
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))

        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            images = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
            labels = rng.integers(0, 10, per_batch).tolist()
            flat = images.transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # official: R, G, B planes
            add(name, {b"data": flat, b"labels": labels})
            expected["test" if name == "test_batch" else "train"].append((images, labels))
        add("batches.meta", {b"label_names": NAMES})
    return expected


def test_official_layout_reads_channels_last_in_official_order(tmp_path, monkeypatch):
    archive = tmp_path / "cifar10" / dataformats.CIFAR10_ARCHIVE
    archive.parent.mkdir()
    expected = _tiny_archive(archive)
    monkeypatch.setattr(dataformats, "CIFAR10_SHA256", dataformats.sha256_of_file(archive))
    d = data.load_cifar10(DataConfig(dataset="cifar10", validation_split=0.2), [tmp_path])
    train_images = np.concatenate([images for images, _ in expected["train"]])
    assert d.class_names[:2] == ("airplane", "automobile") and d.image_shape == (32, 32, 3)
    np.testing.assert_array_equal(np.concatenate([d.train_images, d.val_images]), train_images)
    np.testing.assert_array_equal(d.val_images, train_images[16:])  # the last 20%: batch 5
    assert d.validation == ("the last 4 of all 20 official training images, in file order "
                            "(data_batch_1 .. data_batch_5)")
    np.testing.assert_array_equal(d.test_labels, expected["test"][0][1])
    assert d.checksums == {dataformats.CIFAR10_ARCHIVE: dataformats.CIFAR10_SHA256}


def test_archive_with_other_checksum_is_refused(tmp_path):
    _tiny_archive(tmp_path / dataformats.CIFAR10_ARCHIVE)
    with pytest.raises(ChecksumError, match=f"expected {dataformats.CIFAR10_SHA256}"):
        data.load_cifar10(DataConfig(dataset="cifar10"), [tmp_path])


def test_corrupted_archive_content_is_refused(tmp_path, monkeypatch):
    archive = tmp_path / dataformats.CIFAR10_ARCHIVE
    _tiny_archive(archive, corrupt=True)
    monkeypatch.setattr(dataformats, "CIFAR10_SHA256", dataformats.sha256_of_file(archive))
    with pytest.raises(ChecksumError, match="not the official CIFAR-10 python archive layout"):
        data.load_cifar10(DataConfig(dataset="cifar10"), [tmp_path])


def test_missing_archive_offline_says_how_to_use_an_image_folder(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        data.load_cifar10(DataConfig(dataset="cifar10"), [tmp_path], download_to=tmp_path / "dl",
                          url="http://127.0.0.1:9/cifar-10-python.tar.gz")
    message = str(info.value)
    assert "CIFAR-10 not found" in message and str(tmp_path / "cifar10") in message
    assert f"{tmp_path}: lacks {dataformats.CIFAR10_ARCHIVE}" in message
    assert "make cifar DATA=" in message and "data.dataset=image_folder" in message


def test_image_folder_subset_of_the_jpeg_copy(cifar_root):
    cfg = DataConfig(dataset="image_folder", path="cifar10-jpeg", train_subset=300, test_subset=100, validation_split=0.1)
    d = data.load_image_folder(cfg, [cifar_root])
    assert d.class_names == tuple(n.decode() for n in NAMES)
    assert (len(d.train_images), len(d.val_images), len(d.test_images)) == (270, 30, 100)
    assert d.train_images.dtype == np.uint8 and d.image_shape == (32, 32, 3)
    assert len(set(d.train_labels.tolist())) == 10  # the fixed shuffle mixes the classes
    assert "JPEG copy of CIFAR-10" in d.description and "not the official CIFAR-10" in d.description
    assert d.checksums["folder_digest"] == "c217601eebcfee757a51b381539a30bc3b0a89cac54850a81d992750b4fa8352"
    assert d.validation.startswith("the last 30 of the first 300 of the 50000 training images of the folder, "
                                   "in the order of a seeded shuffle of its files (seed 0")
    again = data.load_image_folder(cfg, [cifar_root])
    np.testing.assert_array_equal(again.train_images, d.train_images)  # same fixed order every time


def test_image_folder_errors(tmp_path, cifar_root):
    with pytest.raises(ConfigError, match="data.path"):
        data.load_image_folder(DataConfig(dataset="image_folder"), [tmp_path])
    with pytest.raises(DataNotFoundError, match="no folder with train/ and test/"):
        data.load_image_folder(DataConfig(dataset="image_folder", path="nowhere"), [tmp_path])
    with pytest.raises(ConfigError, match="has no folder for zebra"):
        data.load_image_folder(DataConfig(dataset="image_folder", path="cifar10-jpeg", class_names=("cat", "zebra")),
                               [cifar_root])


def test_normalization_uses_mean_and_std_per_channel(cifar_root):
    tf = pytest.importorskip("tensorflow")
    cfg = DataConfig(dataset="image_folder", path="cifar10-jpeg", train_subset=64, test_subset=16, validation_split=0.25)
    d = data.load_image_folder(cfg, [cifar_root])
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    _, _, test = pipeline.pipelines(d, 16, seed=0, mean=mean, std=std)
    images, _ = next(iter(test))
    expected = (d.test_images.astype(np.float32) / 255 - np.array(mean, np.float32)) / np.array(std, np.float32)
    np.testing.assert_allclose(images.numpy(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="one value per channel"):
        pipeline.pipelines(d, 16, seed=0, mean=(0.5,), std=(0.2,))
