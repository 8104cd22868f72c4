"""What the benchmark tools need, checked in one place before any of them trains: a missing piece
stops the tool at once with one line naming it and how to get it (exit 2, `refuse`), never with
a traceback minutes into a run.

    python -m benchmarks.preflight torch-build [--peer-python .venv-peers/bin/python]   # make peers-venv's check

The tools of benchmarks/ that run the seeds' scripts (`bench_peers`, `airbench_compare`,
`lenet_side_by_side`, `mnist_comparison`, `peer_runs`) take the scripts' folder as
`--peers-dir DIR` (`add_peers_dir`; make: `PEERS=DIR`, default ../shared/peers beside the
checkout when it exists; `none`: no peers) and check, before anything runs:

- the peers' folder and each script the run needs (`peers_dir`, `peer_script`);
- the PyTorch peers' interpreter: there, importing torch (and with airbench installed, for airbench94)
  (`peer_python`; `make peers-venv` creates .venv-peers/ with both, installed by name from PyPI);
- the data: the MNIST .gz IDX files the LeNet peers read as $MNIST_DIR (`mnist_gz`), the CIFAR-10
  image folder (`image_folder`), our experiments and their data (`our_data`, through
  `lenet_keras.bench.data_missing`, the package's own check that `bench` skips workloads with).

The peer scripts are other people's programs (the seeds' code), not part of this repository or
its package; where one is a published package (torch, airbench) `make peers-venv` installs it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PEERS_DIR = REPO.parent / "shared" / "peers"
"""The seeds' scripts when no `--peers-dir` is given: ../shared/peers beside the checkout, if it exists."""
PEER_PYTHON = REPO / ".venv-peers" / "bin" / "python"
"""The interpreter with PyTorch and airbench (`make peers-venv`)."""
NO_PEERS = "none"
"""`--peers-dir none`: run without the peers (`make ... PEERS=` passes it)."""

SCRIPTS = {
    "seed002_keras_lenet.py": "the deck's Keras LeNet-5",
    "seed000_torch_lenet.py": "the PyTorch LeNet-5",
    "seed004_torch_cifar.py": "the PyTorch CIFAR CNN's images/s",
    "airbench94_cpu.py": "airbench94 on the CPU",
}
"""The peer scripts the tools run, and what each is."""

GET_PEERS = ("give --peers-dir DIR (make: PEERS=DIR), the folder of the seeds' scripts "
             f"({', '.join(SCRIPTS)}; the workspace's shared/peers/, not part of this repository)")
GET_TORCH = ("run `make peers-venv` (.venv-peers/ with torch==2.13.0, CPU build, and airbench==0.1.8 from PyPI), "
             "or give --peer-python PYTHON")
GET_MNIST_GZ = ("give --data-dir DIR or set LENET_KERAS_DATA=DIR, with DIR/mnist/ holding the four official gzip "
                "files (the repository's data/mnist/ has them)")
MNIST_GZ = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz")


class Missing(Exception):
    """Something a tool needs is not there; the message is one line: what, and how to get it."""


def refuse(error: Exception) -> int:
    """Print `error` as one line on stderr (`error: ...`); return the exit status 2."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    return 2


def add_peers_dir(parser: argparse.ArgumentParser) -> None:
    """Add `--peers-dir DIR` to a tool's `parser` (read it with `peers_dir`)."""
    parser.add_argument("--peers-dir", default=None, metavar="DIR",
                        help=f"the folder of the seeds' scripts ({', '.join(SCRIPTS)}) (default: ../shared/peers "
                        f"beside the checkout when it exists; '{NO_PEERS}': without the peers; make: PEERS=DIR)")


def peers_dir(value: str | None) -> Path | None:
    """The peers' folder of `--peers-dir VALUE`: VALUE, or `DEFAULT_PEERS_DIR` when not given and it
    exists; None for `none` (or not given and no default).

    Raises:
        Missing: VALUE names no folder.
    """
    if value is None:
        return DEFAULT_PEERS_DIR if DEFAULT_PEERS_DIR.is_dir() else None
    if value == NO_PEERS:
        return None
    if not Path(value).is_dir():
        raise Missing(f"--peers-dir {value}: no such folder; {GET_PEERS}")
    return Path(value)


def why_no_peers(value: str | None) -> str:
    """Why there is no peers' folder, for `--peers-dir VALUE` that gave none."""
    if value == NO_PEERS:
        return f"--peers-dir {NO_PEERS}"
    return f"no --peers-dir, and {DEFAULT_PEERS_DIR} does not exist"


def left_out(value: str | None, what: str) -> str:
    """The one line a tool prints when it runs without the peers (`--peers-dir VALUE` gave none):
    `what` was left out, why, and how to have it."""
    return f"note: {what} left out: no peers' folder ({why_no_peers(value)}); {GET_PEERS}"


def peer_script(folder: Path | None, script: str, value: str | None = None) -> Path:
    """The path of the peer `script` (a key of `SCRIPTS`) in `folder` (`peers_dir(value)`).

    Raises:
        Missing: no folder, or the script is not in it.
    """
    if folder is None:
        raise Missing(f"{script} ({SCRIPTS[script]}) is needed: no peers' folder ({why_no_peers(value)}); {GET_PEERS}")
    path = folder / script
    if not path.is_file():
        raise Missing(f"{path}: no such file ({SCRIPTS[script]}); {GET_PEERS}")
    return path


def peer_python(python: str, modules: tuple[str, ...] = ("torch",)) -> tuple[str, str | None]:
    """Check that the interpreter `python` exists, has `modules` installed and imports torch;
    (torch's version, `torch.version.cuda`: None for a CPU build). Modules other than torch are
    only looked up, not imported (airbench imports torchvision, which airbench94_cpu.py replaces
    before importing it).

    Raises:
        Missing: no such interpreter, a module is not installed, or torch does not import (the
            last error line in the message).
    """
    if not Path(python).exists():
        raise Missing(f"{python}: no such interpreter (the PyTorch peers need Python with {' and '.join(modules)}); "
                      f"{GET_TORCH}")
    code = "\n".join([
        "import importlib.util, sys",
        f"for name in {list(modules)!r}:",
        "    if importlib.util.find_spec(name) is None:",
        "        sys.exit(f'ModuleNotFoundError: No module named {name!r}')",
        "import torch",
        "print(torch.__version__, torch.version.cuda)",
    ])
    done = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise Missing(f"{python}: {last} (the PyTorch peers need {' and '.join(modules)}); {GET_TORCH}")
    version, cuda = done.stdout.split()[-2:]
    return version, None if cuda == "None" else cuda


def torch_build(python: str) -> str:
    """One line naming the torch build of `python`: "CPU build" when `torch.version.cuda` is None.

    Raises:
        Missing: no torch there, or a CUDA build (the peers are measured with the CPU build).
    """
    version, cuda = peer_python(python)
    if cuda is not None:
        raise Missing(f"{python}: torch {version} is a CUDA build (torch.version.cuda = {cuda}), not the CPU build the "
                      "peers are measured with: remove .venv-peers and run `make peers-venv "
                      "TORCH_INDEX=https://download.pytorch.org/whl/cpu` (PyTorch's index of CPU wheels)")
    return f"{python}: torch {version}, CPU build (torch.version.cuda is None)"


def mnist_gz(data_dir: str | None) -> str:
    """The folder of the four gzip MNIST files the LeNet peers read ($MNIST_DIR), from the data
    folder (`--data-dir`, else $LENET_KERAS_DATA, else ./data, data/ of the repository, ...).

    Raises:
        Missing: not there (or `data_dir` / $LENET_KERAS_DATA names no folder).
    """
    from lenet_keras import data
    from lenet_keras.errors import DataNotFoundError

    try:
        roots = data.search_dirs(data_dir)
    except DataNotFoundError as error:
        raise Missing(str(error)) from None
    folder = data.find_mnist(roots)
    if folder is not None and all((folder / name).is_file() for name in MNIST_GZ):
        return str(folder)
    raise Missing(f"the MNIST .gz files the LeNet peers read ({', '.join(MNIST_GZ)}) are in none of "
                  f"{', '.join(str(root) for root in roots)} (nor their mnist/); {GET_MNIST_GZ}")


def image_folder(given: Path | None, name: str = "cifar10-jpeg") -> Path:
    """The image folder (train/<class>/*, test/<class>/*) a CIFAR tool trains on: `given` (its
    `--data-dir`), else `name` under the data folder (`lenet_keras.bench.find_image_folder`).

    Raises:
        Missing: `given` lacks train/ or test/, or no `name` in the data folder.
    """
    from lenet_keras import bench, data
    from lenet_keras.errors import DataNotFoundError

    if given is not None:
        if not ((given / "train").is_dir() and (given / "test").is_dir()):
            raise Missing(f"--data-dir {given}: no train/ and test/ sub-folders (give an image folder with "
                          "train/<class>/* and test/<class>/*, e.g. a JPEG copy of CIFAR-10)")
        return given
    try:
        found = bench.find_image_folder(name)
    except DataNotFoundError as error:
        raise Missing(str(error)) from None
    if found is None:
        searched = ", ".join(str(root) for root in data.search_dirs())
        raise Missing(f"the image folder {name}/ is in none of {searched}: give --data-dir IMAGE_FOLDER, or set "
                      f"LENET_KERAS_DATA=DIR with DIR/{name}/ (train/<class>/*, test/<class>/*; a JPEG copy of "
                      "CIFAR-10; image folders are never downloaded)")
    return found


def our_data(experiments: list[str], data_dir: str | None, option: str = "experiment") -> None:
    """Each of `experiments` (files or shipped names) exists and loads, and its data is there
    (`lenet_keras.bench.data_missing`: MNIST may still be downloaded when no folder is named).
    `option` names them in the message (e.g. "--experiments").

    Raises:
        Missing: an experiment that is neither a file nor a shipped name, does not load, or lacks its data.
    """
    from lenet_keras import bench, config
    from lenet_keras.errors import LenetKerasError

    for name in experiments:
        path = config.find_experiment_file(name)
        if not path.is_file():
            shipped = ", ".join(row[0] for row in config.shipped_files() if row[1] == "experiment")
            raise Missing(f"{option} {name}: no such file or shipped name (shipped: {shipped})")
        try:
            why = bench.data_missing(config.load(path).data, data_dir)
        except LenetKerasError as error:
            raise Missing(f"{option} {name}: {error}") from None
        if why is not None:
            raise Missing(f"{option} {name}: {why}")


def beside_peer_script(value: str | None, script: str, data_dir: str | None) -> tuple[Path | None, str | None]:
    """(peers' folder, folder of the MNIST .gz files) for a run beside the peer `script` (e.g. the
    deck's Keras code), both None when no peers' folder is named or found by default.

    Raises:
        Missing: the peers' folder named (`value`), `script` in it, or the MNIST .gz files.
    """
    folder = peers_dir(value)
    if folder is None:
        return None, None
    peer_script(folder, script, value)
    return folder, mnist_gz(data_dir)


def parser() -> argparse.ArgumentParser:
    """Arguments of `python -m benchmarks.preflight`."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.preflight", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("check", choices=["torch-build"],
                   help="torch-build: print which torch build PEER_PYTHON has; exit 2 unless it is the CPU build")
    p.add_argument("--peer-python", default=str(PEER_PYTHON), help="the interpreter (default .venv-peers/bin/python)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line: run one check; print its line (exit 0) or the error (exit 2)."""
    args = parser().parse_args(argv)
    try:
        print(torch_build(args.peer_python), flush=True)
    except Missing as error:
        return refuse(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
