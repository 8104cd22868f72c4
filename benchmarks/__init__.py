"""Development tools of the repository, run from a checkout (not part of the installed package).

They run the seeds' own code (other people's programs, from `--peers-dir DIR`, default
../shared/peers beside the checkout; make: PEERS=DIR) next to ours, or drill the package's commands:

    python -m benchmarks.bench_peers --repeats 3     # `bench` alternating with the peer scripts (make bench ARGS="--peers ...")
    python -m benchmarks.airbench_compare --seeds 0 1 2   # airbench94 side by side (make cifar-fast-bench)
    python -m benchmarks.crash_drill --kills 5       # SIGKILL and resume `make mnist` (make crash-drill)

Run them from the repository root (so that `benchmarks` is importable); the PyTorch peers need
`.venv-peers` (`make peers-venv`). What a run needs (the peers' folder and scripts, the PyTorch
interpreter, the data) is checked before it starts, in one place (`benchmarks.preflight`).
"""
