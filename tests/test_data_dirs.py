"""A data folder the user names (--data-dir, else $LENET_KERAS_DATA) is used or refused, never
replaced by another one; and `ImageData.validation` says truly how the validation split was made."""

import shutil

import numpy as np
import pytest

from lenet_keras import data, dataformats
from lenet_keras.config import DataConfig
from lenet_keras.errors import DataNotFoundError

ALL_FILES = [f"{name}[.gz]" for name, _ in dataformats.MNIST_FILES.values()]
SMALL = DataConfig(train_subset=100, test_subset=10)


@pytest.fixture()
def no_download(monkeypatch):
    """No $LENET_KERAS_DATA, and any download fails the test; the repository's data/ is untouched
    (it holds MNIST, so a fallback to it would load instead of raising)."""

    def refuse(target, url=None):
        pytest.fail(f"a download into {target} was attempted")

    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(data, "download_mnist", refuse)
    monkeypatch.setattr(data, "download", lambda url, target, sha256: refuse(target))


def _copy(mnist_dir, target, names=None):
    target.mkdir(parents=True)
    for name, _ in dataformats.MNIST_FILES.values():
        if names is None or name in names:
            source = data.idx_path(mnist_dir, name)
            shutil.copy(source, target / source.name)
    return target


def _lacks_line(message, folder):
    """The files the error says `folder` lacks, e.g. ['t10k-images-idx3-ubyte[.gz]', ...]."""
    line = next(line for line in message.splitlines() if line.startswith(f"  - {folder}: "))
    assert ": lacks " in line, line
    return line.split(": lacks ", 1)[1].split(", ")


def test_empty_data_dir_is_refused_listing_every_expected_file(tmp_path, no_download):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError) as info:
        data.load(DataConfig(), tmp_path / "empty")
    message = str(info.value)
    assert message.startswith(f"--data-dir {tmp_path / 'empty'} was given, so only that folder is searched")
    assert f"  - {tmp_path / 'empty' / 'mnist'}: no such folder" in message
    assert _lacks_line(message, tmp_path / "empty") == ALL_FILES
    assert str(data.REPO_DATA_DIR) not in message


def test_data_dir_with_two_of_four_files_names_the_two_missing(mnist_dir, tmp_path, no_download):
    folder = _copy(mnist_dir, tmp_path / "half", names=("train-images-idx3-ubyte", "train-labels-idx1-ubyte"))
    with pytest.raises(DataNotFoundError) as info:
        data.load(DataConfig(), folder)
    assert _lacks_line(str(info.value), folder) == ["t10k-images-idx3-ubyte[.gz]", "t10k-labels-idx1-ubyte[.gz]"]


def test_data_dir_is_the_only_place_even_when_env_has_the_data(mnist_dir, tmp_path, no_download, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(data.DATA_ENV_VAR, str(mnist_dir))
    with pytest.raises(DataNotFoundError, match=f"not \\${data.DATA_ENV_VAR}, not ./data, data/ or the Keras cache"):
        data.load(DataConfig(), tmp_path / "empty")


def test_env_pointing_to_an_empty_folder_is_refused_not_replaced_by_repo_data(tmp_path, no_download, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(data.DATA_ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(DataNotFoundError) as info:
        data.load(DataConfig())
    message = str(info.value)
    assert message.startswith(f"${data.DATA_ENV_VAR}={tmp_path / 'empty'} is set, so only that folder is searched")
    assert _lacks_line(message, tmp_path / "empty") == ALL_FILES


def test_env_pointing_nowhere_is_refused(tmp_path, no_download, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV_VAR, str(tmp_path / "typo"))
    with pytest.raises(DataNotFoundError, match=f"\\${data.DATA_ENV_VAR}={tmp_path / 'typo'}: no such folder"):
        data.load(DataConfig())


def test_a_correct_data_dir_is_used_and_named_as_source(mnist_dir, tmp_path, no_download, monkeypatch):
    direct = _copy(mnist_dir, tmp_path / "direct")
    nested = _copy(mnist_dir, tmp_path / "root" / "mnist")
    monkeypatch.setenv(data.DATA_ENV_VAR, str(mnist_dir))
    assert data.load(SMALL, direct).source == str(direct)
    assert data.load(SMALL, tmp_path / "root").source == str(nested)
    assert data.load(SMALL).source == str(mnist_dir)  # no --data-dir: $LENET_KERAS_DATA


def test_nothing_named_searches_default_folders_and_downloads_into_the_keras_cache(tmp_path, monkeypatch):
    attempts = []

    def offline(target, url=None):
        attempts.append(target)
        raise DataNotFoundError("download of mnist.npz failed: offline")

    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "repo" / "data")
    (tmp_path / "repo" / "pyproject.toml").parent.mkdir()
    (tmp_path / "repo" / "pyproject.toml").write_text("")  # a checkout
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setattr(data, "download_mnist", offline)
    with pytest.raises(DataNotFoundError) as info:
        data.load(DataConfig())
    cache = tmp_path / "keras_home" / "datasets"
    assert attempts == [cache / "mnist"]
    for folder in (tmp_path / "work" / "data" / "mnist", tmp_path / "repo" / "data" / "mnist", cache / "mnist"):
        assert f"  - {folder}: no such folder" in str(info.value)
    assert "download of mnist.npz failed: offline" in str(info.value)


def test_installed_package_finds_mnist_in_the_working_directory_or_the_keras_cache(mnist_dir, tmp_path, monkeypatch):
    import shutil

    mnist_dir = mnist_dir.resolve()  # before the chdir
    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "site-packages" / "data")  # no checkout there
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.chdir(tmp_path)
    shutil.copytree(mnist_dir, tmp_path / "keras_home" / "datasets" / "mnist")
    assert data.load(DataConfig(test_subset=10), download=False).source == str(tmp_path / "keras_home" / "datasets" / "mnist")
    shutil.copytree(mnist_dir, tmp_path / "data" / "mnist")
    assert data.load(DataConfig(test_subset=10), download=False).source == str(tmp_path / "data" / "mnist")


def _tiny_image_folder(root, per_class=6):
    """root/train/<a|b>/*.png (per_class each) and root/test/<a|b>/*.png (2 each); every training
    image is filled with its own value (its position in sorted file order), so it can be told apart."""
    from PIL import Image

    value = 0
    for split, count in (("train", per_class), ("test", 2)):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(root / split / name / f"{i:02d}.png")
                value += 1
    return root


def test_image_folder_validation_says_seeded_shuffle_with_seed_and_counts(tmp_path):
    folder = _tiny_image_folder(tmp_path / "tiny")
    d = data.load_image_folder(DataConfig(dataset="image_folder", path=str(folder), validation_split=0.25), [])
    assert d.validation == (f"the last 3 of all 12 training images of the folder, in the order of a seeded shuffle of "
                            f"its files (seed {dataformats.IMAGE_FOLDER_SEED}, keras.utils.image_dataset_from_directory)")
    assert "official" not in d.validation
    order = np.concatenate([d.train_images, d.val_images])[:, 0, 0, 0].tolist()
    assert sorted(order) == list(range(12)) and order != list(range(12))  # all of them, shuffled
    small = data.load_image_folder(
        DataConfig(dataset="image_folder", path=str(folder), train_subset=8, validation_split=0.25), [])
    assert small.validation.startswith("the last 2 of the first 8 of the 12 training images of the folder, in the "
                                       "order of a seeded shuffle of its files (seed 0")


def test_image_folder_path_is_looked_for_only_under_the_named_folder(tmp_path, monkeypatch):
    _tiny_image_folder(tmp_path / "env" / "tiny", per_class=2)
    (tmp_path / "given").mkdir()
    monkeypatch.setenv(data.DATA_ENV_VAR, str(tmp_path / "env"))
    config = DataConfig(dataset="image_folder", path="tiny", validation_split=0.25)
    with pytest.raises(DataNotFoundError) as info:
        data.load(config, tmp_path / "given")
    assert str(tmp_path / "given" / "tiny") in str(info.value) and str(tmp_path / "env") not in str(info.value)
    assert data.load(config).source == str(tmp_path / "env" / "tiny")
    _tiny_image_folder(tmp_path / "work" / "tiny", per_class=2)  # the same relative path in the working directory
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(DataNotFoundError):  # a named folder is used or refused: ./tiny does not win over it
        data.load(config, tmp_path / "given")
    assert data.load(config).source == str(tmp_path / "env" / "tiny")  # $LENET_KERAS_DATA named
    monkeypatch.delenv(data.DATA_ENV_VAR)
    assert data.load(config).source == str(tmp_path / "work" / "tiny")  # nothing named: the working directory


def test_image_folder_split_with_only_empty_class_folders_names_them(tmp_path):
    folder = _tiny_image_folder(tmp_path / "tiny", per_class=2)
    for name in ("a", "b"):
        for image in (folder / "test" / name).iterdir():
            image.unlink()
    with pytest.raises(DataNotFoundError) as info:  # was a bare StopIteration (traceback, exit 1)
        data.load_image_folder(DataConfig(dataset="image_folder", path=str(folder)), [])
    message = str(info.value)
    assert f"{folder / 'test'} holds no image files" in message
    assert str(folder / "test" / "a") in message and str(folder / "test" / "b") in message
