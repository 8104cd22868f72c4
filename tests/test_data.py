"""MNIST loading from the real official files: formats, checksums, look-up, split, tf.data."""

import gzip
import shutil

import numpy as np
import pytest

from lenet_keras import data, dataformats, pipeline, rundir
from lenet_keras.config import DataConfig
from lenet_keras.errors import ChecksumError, ConfigError, DataNotFoundError


TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _copy_all(mnist_dir, target, decompress=()):
    """Copy the four files to `target`, decompressing those named in `decompress`."""
    target.mkdir(parents=True)
    for name, _ in dataformats.MNIST_FILES.values():
        source = data.idx_path(mnist_dir, name)
        if name in decompress and source.suffix == ".gz":
            (target / name).write_bytes(gzip.decompress(source.read_bytes()))
        else:
            shutil.copy(source, target / source.name)
    return target


def test_full_load_matches_the_dataset_readme(mnist_dir):
    d = data.load_mnist(DataConfig(), [mnist_dir])
    assert d.image_shape == (28, 28, 1) and d.num_classes == 10
    assert (len(d.train_images), len(d.val_images), len(d.test_images)) == (48000, 12000, 10000)
    assert d.train_images.dtype == np.uint8 and d.train_labels.dtype == np.int64
    assert list(d.train_labels[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert list(d.test_labels[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert list(np.bincount(d.test_labels)) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    all_train = np.concatenate([d.train_labels, d.val_labels])
    assert list(np.bincount(all_train)) == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.concatenate([d.train_images, d.val_images]).mean() == pytest.approx(33.3184, abs=1e-3)
    assert d.checksums == {name: sha for name, sha in dataformats.MNIST_FILES.values()}


def test_raw_and_gzip_files_read_the_same(mnist_dir, tmp_path):
    raw = _copy_all(mnist_dir, tmp_path / "raw", decompress=TEST_FILES)
    assert (raw / "t10k-images-idx3-ubyte").is_file()
    cfg = DataConfig(train_subset=100)
    from_raw = data.load_mnist(cfg, [tmp_path / "raw"])
    from_gz = data.load_mnist(cfg, [mnist_dir])
    np.testing.assert_array_equal(from_raw.test_images, from_gz.test_images)
    np.testing.assert_array_equal(from_raw.test_labels, from_gz.test_labels)


def test_changed_byte_is_refused_naming_file_and_both_checksums(mnist_dir, tmp_path):
    folder = _copy_all(mnist_dir, tmp_path / "m", decompress=TEST_FILES)
    path = folder / "t10k-labels-idx1-ubyte"
    content = bytearray(path.read_bytes())
    content[100] = (content[100] + 1) % 10
    path.write_bytes(bytes(content))
    with pytest.raises(ChecksumError) as info:
        data.load_mnist(DataConfig(), [folder])
    message = str(info.value)
    assert str(path) in message
    assert dataformats.MNIST_FILES["test_labels"][1] in message  # expected
    assert dataformats.sha256_of_bytes(bytes(content)) in message  # actual


def test_truncated_gzip_is_refused(mnist_dir, tmp_path):
    folder = _copy_all(mnist_dir, tmp_path / "m")
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte.gz: cannot be read as gzip"):
        data.load_mnist(DataConfig(), [folder])


def test_one_data_folder_data_dir_else_env_else_repo(tmp_path, monkeypatch):
    (tmp_path / "cli").mkdir()
    (tmp_path / "env").mkdir()
    monkeypatch.setenv(data.DATA_ENV_VAR, str(tmp_path / "env"))
    assert data.search_dirs(tmp_path / "cli") == [tmp_path / "cli"]
    assert data.search_dirs() == [tmp_path / "env"]
    monkeypatch.delenv(data.DATA_ENV_VAR)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.chdir(tmp_path)
    assert data.search_dirs() == [tmp_path / "data", data.REPO_DATA_DIR, tmp_path / "keras_home" / "datasets"]
    monkeypatch.chdir(data.REPO_DATA_DIR.parent)  # in the checkout ./data is the repository's data/: once
    assert data.search_dirs() == [data.REPO_DATA_DIR.parent / "data", tmp_path / "keras_home" / "datasets"]
    with pytest.raises(DataNotFoundError, match=f"--data-dir {tmp_path / 'typo'}: no such folder"):
        data.search_dirs(tmp_path / "typo")


def test_files_directly_in_data_dir_or_in_mnist_subfolder(mnist_dir, tmp_path):
    _copy_all(mnist_dir, tmp_path / "root" / "mnist")
    assert data.find_mnist([tmp_path / "nothing", tmp_path / "root"]) == tmp_path / "root" / "mnist"
    assert data.find_mnist([tmp_path / "root" / "mnist"]) == tmp_path / "root" / "mnist"
    assert data.find_mnist([tmp_path / "nothing"]) is None


def test_missing_data_offline_lists_places_searched(no_mnist_anywhere):
    (no_mnist_anywhere / "given").mkdir()
    roots = data.search_dirs(no_mnist_anywhere / "given")
    with pytest.raises(DataNotFoundError) as info:
        data.load_mnist(DataConfig(), roots, download_to=no_mnist_anywhere / "download")
    message = str(info.value)
    for root in roots:
        assert str(root / "mnist") in message
    assert "download of http://127.0.0.1:9/mnist.npz failed" in message
    assert "--data-dir" in message and data.DATA_ENV_VAR in message


def test_download_converts_npz_to_the_official_idx_files(mnist_dir, tmp_path, monkeypatch):
    """The download path end to end, served from a local file:// URL (no network here)."""
    full = data.load_mnist(DataConfig(), [mnist_dir])
    npz = tmp_path / "served" / "mnist.npz"
    npz.parent.mkdir()
    np.savez(
        npz,
        x_train=np.concatenate([full.train_images, full.val_images])[..., 0],
        y_train=np.concatenate([full.train_labels, full.val_labels]).astype(np.uint8),
        x_test=full.test_images[..., 0],
        y_test=full.test_labels.astype(np.uint8),
    )
    monkeypatch.setattr(data, "MNIST_NPZ_SHA256", dataformats.sha256_of_bytes(npz.read_bytes()))
    target = tmp_path / "download"
    loaded = data.load_mnist(DataConfig(test_subset=10), [tmp_path / "empty"], download_to=target, url=npz.as_uri())
    assert loaded.source == str(target)
    assert sorted(p.name for p in target.iterdir()) == sorted(name for name, _ in dataformats.MNIST_FILES.values())
    np.testing.assert_array_equal(loaded.test_labels, full.test_labels[:10])


def test_download_with_wrong_checksum_is_refused_and_deleted(tmp_path):
    bogus = tmp_path / "mnist.npz"
    bogus.write_bytes(b"not mnist")
    with pytest.raises(ChecksumError) as info:
        data.download_mnist(tmp_path / "download", url=bogus.as_uri())
    assert data.MNIST_NPZ_SHA256 in str(info.value) and dataformats.sha256_of_bytes(b"not mnist") in str(info.value)
    assert not any((tmp_path / "download").iterdir())


def test_damaged_gzip_stream_is_refused(mnist_dir, tmp_path):
    folder = _copy_all(mnist_dir, tmp_path / "m")
    path = folder / "t10k-images-idx3-ubyte.gz"
    content = bytearray(path.read_bytes())
    content[5000:5100] = bytes(100)  # zeros in the middle of the deflate stream
    path.write_bytes(bytes(content))
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte.gz"):
        data.load_mnist(DataConfig(), [folder])


def test_gzip_with_other_content_is_refused(mnist_dir, tmp_path):
    folder = _copy_all(mnist_dir, tmp_path / "m")
    labels = gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels[:-1] + b"\x00"))
    with pytest.raises(ChecksumError, match="content SHA-256 mismatch"):
        data.load_mnist(DataConfig(), [folder])


def test_data_dir_wins_over_later_places(mnist_dir, tmp_path, monkeypatch):
    _copy_all(mnist_dir, tmp_path / "first" / "mnist")
    monkeypatch.setenv(data.DATA_ENV_VAR, str(mnist_dir))
    assert data.find_mnist(data.search_dirs(tmp_path / "first")) == tmp_path / "first" / "mnist"


def test_validation_is_the_last_fraction_of_training_images(mnist_dir):
    full = data.load_mnist(DataConfig(), [mnist_dir])
    small = data.load_mnist(DataConfig(train_subset=1000, test_subset=200, validation_split=0.25), [mnist_dir])
    assert (len(small.train_images), len(small.val_images), len(small.test_images)) == (750, 250, 200)
    np.testing.assert_array_equal(small.val_images, full.train_images[750:1000])
    official_labels, _ = dataformats.read_idx(data.idx_path(mnist_dir, "train-labels-idx1-ubyte"))
    np.testing.assert_array_equal(full.val_labels, official_labels[48000:60000])
    assert full.validation == "the last 12000 of all 60000 official training images, in file order"
    assert small.validation == "the last 250 of the first 1000 of the 60000 official training images, in file order"
    no_split = data.load_mnist(DataConfig(validation_split=0, test_subset=100), [mnist_dir])
    assert no_split.validation.startswith("the test set (100 images; validation_split = 0")
    np.testing.assert_array_equal(no_split.val_images, no_split.test_images)
    assert (no_split.validation_is_test, full.validation_is_test, small.validation_is_test) == (True, False, False)
    assert rundir.data_block(no_split)["validation_is_test"] is True and not rundir.data_block(full)["validation_is_test"]
    with pytest.raises(ConfigError, match="data.validation_split"):
        data.load_mnist(DataConfig(train_subset=2, validation_split=0.1), [mnist_dir])


def test_pipelines_scale_one_hot_and_shuffle_by_seed(mnist_dir):
    tf = pytest.importorskip("tensorflow")
    d = data.load_mnist(DataConfig(train_subset=600, test_subset=100), [mnist_dir])
    train, val, test = pipeline.pipelines(d, batch_size=64, seed=3)
    images, labels = next(iter(train))
    assert images.shape == (64, 28, 28, 1) and images.dtype == tf.float32
    assert labels.shape == (64, 10) and labels.dtype == tf.float32
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) == 1.0
    np.testing.assert_array_equal(tf.reduce_sum(labels, axis=1), np.ones(64))
    two_epochs = [np.argmax(y, 1) for _, y in pipeline.pipelines(d, batch_size=64, seed=3, epochs=2)[0]]
    steps = pipeline.steps_per_epoch(d, 64)
    assert steps == 8 and len(two_epochs) == 2 * steps
    first_epoch, second_epoch = np.concatenate(two_epochs[:steps]), np.concatenate(two_epochs[steps:])
    again = np.concatenate([np.argmax(y, 1) for _, y in pipeline.pipelines(d, 64, seed=3)[0]])
    assert sorted(first_epoch) == sorted(d.train_labels)  # every image once per epoch
    assert not np.array_equal(first_epoch, second_epoch)  # reshuffled each epoch
    np.testing.assert_array_equal(first_epoch, again)  # same seed, same order
    np.testing.assert_array_equal(np.concatenate([np.argmax(y, 1) for _, y in test]), d.test_labels)


def test_normalize_is_the_pipelines_scaling_in_numpy(mnist_dir):
    pytest.importorskip("tensorflow")
    d = data.load_mnist(DataConfig(train_subset=600, test_subset=100), [mnist_dir])
    plain = pipeline.normalize(d.test_images)
    assert plain.dtype == np.float32 and plain.shape == d.test_images.shape
    np.testing.assert_array_equal(plain, d.test_images.astype(np.float32) / 255.0)
    mean, std = (0.1307,), (0.3081,)
    whitened = pipeline.normalize(d.test_images, mean, std)
    np.testing.assert_array_equal(whitened, (plain - np.float32(mean)) / np.float32(std))
    _, _, test = pipeline.pipelines(d, 64, seed=0, mean=mean, std=std)
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in test]), whitened)  # bit for bit
