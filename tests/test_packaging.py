"""The wheel built from this repository holds every module of the package and the shipped
experiment files (issue 18, items 1 and 2)."""

import re
import shutil
import subprocess
import sys
import zipfile

from .conftest import REPO


def test_the_wheel_holds_every_module_and_declares_the_sweep_dependencies(tmp_path):
    source = tmp_path / "source"  # a clean copy: setuptools would reuse a stale build/ of the checkout
    shutil.copytree(REPO / "lenet_keras", source / "lenet_keras", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "experiments", source / "experiments")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("lenet_keras-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    modules = {str(p.relative_to(REPO)) for p in (REPO / "lenet_keras").rglob("*.py")}
    assert modules - names == set()
    assert "lenet_keras/scratch/train.py" in names and "lenet_keras/claims.toml" in names  # reproduce's data
    shipped = {f"lenet_keras/experiments/{p.name}" for p in (REPO / "experiments").glob("*.toml")}
    assert len(shipped) >= 7 and shipped - names == set()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    for package in ("tensorflow", "keras", "optuna", "tqdm", "pillow", "scipy", "pandas", "matplotlib", "tensorboard"):
        assert any(r.startswith(package) for r in requires), (package, requires)
    # tensorflow, tensorflow-cpu, ... all unpack into site-packages/tensorflow/: only one, whatever the extras
    # and markers (so `tensorflow`, not tensorflow-cpu on Linux plus a GPU extra: README, "Install with pip")
    tensorflows = {re.match(r"[\w.-]+", r).group().lower() for r in requires if r.lower().startswith("tensorflow")}
    assert tensorflows == {"tensorflow"}, requires
    import lenet_keras

    version = next(line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Version:"))
    assert version == lenet_keras.__version__  # `lenet-keras --version` says what the wheel is
