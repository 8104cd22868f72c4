"""`tf.distribute` for `train.run`: the strategy of `[distribution]`, who writes, and the cluster.

One experiment file runs on one device, on several GPUs of one machine, or on several
machines, through TensorFlow's own distribution engine:

- "default": `tf.distribute.get_strategy()`, the default (no-op) strategy: one device.
- "mirrored": `tf.distribute.MirroredStrategy`, one replica per local GPU (or per logical CPU
  device with `distribution.cpu_replicas`); gradients are all-reduced every step.
- "multi_worker": `tf.distribute.MultiWorkerMirroredStrategy`, synchronous data parallelism
  over processes or machines. Each process is started with the same command and its own
  `TF_CONFIG` (the standard variable: `{"cluster": {"worker": ["host1:port", "host2:port"]},
  "task": {"type": "worker", "index": 0}}`). The chief is the task of type "chief", else
  worker 0 (TensorFlow's convention).

Batches. `train.batch_size` is the GLOBAL batch. Each dataset gets the auto-shard policy
`tf.data.experimental.AutoShardPolicy.DATA` (`shard_by_data`): every worker builds the same
seeded batches and keeps its share of each global batch, so the images of a step are those of
a one-device run. (FILE sharding does not apply: the pipeline reads arrays held in memory.)

Who writes. Only the chief writes the run directory (TensorBoard, history.csv, checkpoints,
manifest). The other workers run the same code with a temporary folder as their run directory,
removed when they end (`train.run`), as Keras's own multi-worker callbacks do.

Resuming. Only the chief keeps a backup (`resume.crash_safe_backup`); a restarted job's other
workers get the chief's restored weights, optimizer state and epoch by `broadcast_from_chief`,
so they need no state of their own: after a kill, start every worker again with `--resume`.

Keras 3.15 does not run `fit` under MultiWorkerMirroredStrategy as shipped
(keras-team/keras#20585): it reduces the first batch to build the model, and reduces scalar
metrics over axis 0, both of which fail there. `allow_multi_worker_fit` mends these two places.
"""

from __future__ import annotations

import json
import os
from typing import Any

from lenet_keras.config import DistributionConfig
from lenet_keras.errors import ConfigError

TF_CONFIG = "TF_CONFIG"
"""The environment variable that describes the cluster and this process's task."""


def strategy_for(config: DistributionConfig):
    """The `tf.distribute.Strategy` of `config` (create it before anything else runs in TensorFlow).

    Raises:
        ConfigError: "multi_worker" without a valid `TF_CONFIG`; `cpu_replicas` or
            "multi_worker" asked for after TensorFlow has started in this process (they must be
            set up at program start: run them in a fresh process, as the CLI does).
    """
    import tensorflow as tf

    if config.strategy == "default":
        return tf.distribute.get_strategy()
    if config.strategy == "mirrored":
        if not config.cpu_replicas:
            return tf.distribute.MirroredStrategy()
        _split_cpu(config.cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(config.cpu_replicas)])
    cluster = tf_config()
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as error:
        raise ConfigError(
            f"distribution.strategy = \"multi_worker\": cannot start the strategy ({error}); it must be created "
            f"before TensorFlow runs anything in the process: start each worker as its own `python -m lenet_keras "
            f"train` command"
        ) from None
    if strategy.num_replicas_in_sync < len(cluster["cluster"].get("worker", [])):
        raise ConfigError(f"{TF_CONFIG}: the strategy found {strategy.num_replicas_in_sync} replicas for "
                          f"{len(cluster['cluster']['worker'])} workers")
    return strategy


def _split_cpu(count: int) -> None:
    """Split the physical CPU into `count` logical devices (must happen before TensorFlow starts)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        raise ConfigError(
            f"distribution.cpu_replicas = {count}: TensorFlow has already started in this process with "
            f"{len(tf.config.list_logical_devices('CPU'))} CPU device(s); logical devices must be set up at "
            f"program start: run the experiment in a fresh process"
        ) from None


def tf_config() -> dict[str, Any]:
    """The parsed `TF_CONFIG` of this process.

    Raises:
        ConfigError: `TF_CONFIG` is unset, not JSON, or lacks `cluster` or `task`.
    """
    text = os.environ.get(TF_CONFIG)
    if not text:
        raise ConfigError(
            f"distribution.strategy = \"multi_worker\" needs the {TF_CONFIG} environment variable, e.g. "
            f"{TF_CONFIG}='{{\"cluster\": {{\"worker\": [\"host1:12345\", \"host2:12345\"]}}, "
            f"\"task\": {{\"type\": \"worker\", \"index\": 0}}}}' (see README, Beyond one machine)"
        )
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{TF_CONFIG} is not valid JSON: {error}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("cluster"), dict) or not isinstance(parsed.get("task"), dict):
        raise ConfigError(f"{TF_CONFIG} must be a JSON object with \"cluster\" and \"task\" objects, got {text!r}")
    return parsed


def is_multi_worker(strategy) -> bool:
    """True for a strategy spanning several processes (MultiWorkerMirroredStrategy with > 1 worker)."""
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


def task(strategy) -> tuple[str, int]:
    """(task type, task index) of this process: ("worker", 0) outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not is_multi_worker(strategy) or resolver is None:
        return "worker", 0
    return resolver.task_type, int(resolver.task_id)


def is_chief(strategy) -> bool:
    """Whether this process writes the run directory: the "chief" task, else worker 0."""
    if not is_multi_worker(strategy):
        return True
    task_type, index = task(strategy)
    jobs = strategy.cluster_resolver.cluster_spec().jobs
    return task_type == "chief" or (task_type == "worker" and index == 0 and "chief" not in jobs)


def cluster(strategy, config: DistributionConfig) -> dict[str, Any]:
    """What the manifest records: strategy, workers, replicas, device kinds and this task.

    `workers` counts processes, `replicas` model copies over all of them (`num_replicas_in_sync`);
    `devices` are this worker's replica devices, `device_kinds` their types ("CPU", "GPU").
    """
    if config.strategy == "default":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        devices = [(gpus or tf.config.list_logical_devices("CPU"))[0].name]
    else:
        devices = list(strategy.extended.worker_devices)
    workers = 1
    if is_multi_worker(strategy):
        jobs = strategy.cluster_resolver.cluster_spec().as_dict()
        workers = sum(len(jobs.get(name, [])) for name in ("chief", "worker"))
    task_type, index = task(strategy)
    return {
        "strategy": config.strategy,
        "workers": workers,
        "replicas": int(strategy.num_replicas_in_sync),
        "devices": devices,
        "device_kinds": sorted({device.split("device:")[-1].split(":")[0] for device in devices}),
        "task": f"{task_type}:{index}",
        "auto_shard_policy": "DATA" if config.strategy != "default" else None,
    }


def shard_by_data(dataset):
    """`dataset` with auto-shard policy DATA (each worker keeps its share of every global batch)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def allow_multi_worker_fit(model, strategy) -> None:
    """Mend Keras 3.15's `fit`/`evaluate`/`predict` under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Two places fail there as shipped: (1) `_maybe_symbolic_build` reduces the first distributed
    batch with MEAN only to learn its shapes: here it takes this replica's part of the batch
    instead (the same shapes but the batch dimension, which the model leaves open); (2)
    `reduce_per_replica` reduces scalar losses and metrics with `strategy.reduce(MEAN, axis=0)`,
    which fails on scalars: here they are reduced with axis=None (the mean over replicas, as on
    one machine). Nothing changes for other strategies.
    """
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    if not is_multi_worker(strategy):
        return
    original_build = model._maybe_symbolic_build  # private Keras names: `framework_internals.PRIVATE_USES`

    def symbolic_build(iterator=None, data_batch=None):
        """Build from this replica's part of the first batch (no cross-worker reduction)."""
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v,
                    next(batches),
                )
                break
        return original_build(data_batch=data_batch)

    model._maybe_symbolic_build = symbolic_build
    if getattr(trainer.reduce_per_replica, "mended_for_multi_worker", False):
        return
    shipped = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        """As Keras's, but scalar means under multi-worker reduce with axis=None."""
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None if v.shape.rank == 0 else 0), values
            )
        return shipped(values, strategy, reduction)

    reduce_per_replica.mended_for_multi_worker = True
    trainer.reduce_per_replica = reduce_per_replica


def _chief_values(strategy, values: list) -> list:
    """The chief's (replica 0's) value of each tensor in `values` (same shapes on every worker),
    as float64: each is all-reduced (SUM) with every replica but the chief's contributing zeros.
    float64 holds float32 weights, integer step counters and bytes exactly."""
    import tensorflow as tf

    @tf.function
    def gather():
        """Every value times 1 on the chief, 0 elsewhere, summed over all replicas."""
        def replica_fn():
            """This replica's float64 values times 1 on the chief (replica 0), 0 elsewhere, all-reduced (SUM)."""
            context = tf.distribute.get_replica_context()
            keep = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), tf.float64)
            return context.all_reduce("SUM", [tf.cast(v, tf.float64) * keep for v in values])
        return strategy.run(replica_fn)

    return [strategy.experimental_local_results(v)[0] for v in gather()]


def broadcast_from_chief(strategy, model, epoch: int) -> int:
    """Give every worker the chief's model and optimizer variables and epoch; returns that epoch.

    Used when a multi-worker job restarts: only the chief restored a backup (the callbacks'
    restored state follows with `broadcast_bytes_from_chief`).
    """
    import tensorflow as tf

    if not is_multi_worker(strategy):
        return epoch
    variables = list(model.weights) + list(model.optimizer.variables)
    values = _chief_values(strategy, [v.value for v in variables] + [tf.constant(float(epoch))])
    for variable, value in zip(variables, values[:-1]):
        variable.assign(tf.cast(value, variable.dtype))
    return int(values[-1].numpy())


def broadcast_bytes_from_chief(strategy, payload: bytes) -> bytes:
    """The chief's `payload` on every worker (the others pass anything, e.g. b""): its length,
    then its bytes, each through `_chief_values`. Without several workers: `payload` itself."""
    import numpy as np
    import tensorflow as tf

    if not is_multi_worker(strategy):
        return payload
    length = int(_chief_values(strategy, [tf.constant(float(len(payload)))])[0].numpy())
    if not length:
        return b""
    mine = np.zeros(length, np.uint8)
    mine[:min(length, len(payload))] = np.frombuffer(payload, np.uint8)[:length]
    return _chief_values(strategy, [tf.constant(mine)])[0].numpy().astype(np.uint8).tobytes()
