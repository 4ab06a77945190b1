"""Choosing the distribution strategy and numeric precision, as the OD API does.

TPU when asked; MultiWorkerMirrored (cluster from TF_CONFIG) with several workers;
Mirrored over all visible GPUs; otherwise one CPU device, or Mirrored over N logical CPU
devices to exercise multi-replica training on a machine without accelerators.
Numeric precision: float16 mixed precision on GPUs (`use_mixed_precision`), bfloat16 on TPUs
and on CPUs with bfloat16 instructions (`use_bfloat16`); float32 otherwise, with a notice.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import tensorflow as tf

from core.errors import UserError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Placement:
    strategy: tf.distribute.Strategy
    kind: str  # "tpu", "multi_worker", "gpu", "cpu"
    precision: str  # "float32", "float16" or "bfloat16"
    task: str = ""  # this process in a cluster, e.g. "worker 1"; "" alone
    is_chief: bool = True  # writes checkpoints and summaries to model_dir

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


class ClusterError(UserError, RuntimeError):
    """The cluster of TF_CONFIG cannot be formed or lost a worker."""


# --precision: "auto" chooses from the config and the hardware; the others force it.
PRECISIONS = ("auto", "float32", "float16", "bfloat16")
# How long a worker waits for the others to join, and for a silent peer to be declared dead.
DEFAULT_CLUSTER_TIMEOUT = 600
HEARTBEAT_TIMEOUT = 30


# CPU flags (Linux /proc/cpuinfo) of bfloat16 dot products that oneDNN uses: AVX512-BF16
# (Intel Cooper Lake and later, AMD Zen 4 and later), AMX-BF16 (Intel Sapphire Rapids), and
# the Arm BF16 extension (e.g. AWS Graviton3). Without them oneDNN emulates bfloat16, slower
# than float32.
BFLOAT16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_supports_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes bfloat16 natively (False where it cannot be told)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features") and BFLOAT16_CPU_FLAGS & set(value.split()):
            return True
    return False


def _split_cpu(replicas: int) -> list[str]:
    cpu = tf.config.list_physical_devices("CPU")[0]
    logical = tf.config.get_logical_device_configuration(cpu)
    if logical is None:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)])
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < replicas:
        raise RuntimeError(f"asked for {replicas} CPU replicas but TensorFlow already set up "
                           f"{len(devices)} CPU device(s) in this process")
    return devices[:replicas]


def _multi_worker(num_workers: int, precision: str, timeout: float) -> Placement:
    """MultiWorkerMirroredStrategy over the cluster of TF_CONFIG, with bounded waits: a
    worker that cannot reach the others within `timeout` seconds, or whose peer stops
    answering for HEARTBEAT_TIMEOUT seconds, gets an error instead of waiting forever."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    if not os.environ.get("TF_CONFIG"):
        raise ClusterError(f"--num_workers={num_workers} needs TF_CONFIG describing the "
                           "cluster and this worker's task (docs/training.md)")
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    jobs = resolver.cluster_spec().as_dict()
    found = sum(len(jobs.get(job, [])) for job in ("chief", "worker"))
    if found != num_workers:
        raise ClusterError(f"--num_workers={num_workers} but TF_CONFIG lists {found} "
                           f"workers ({jobs})")
    task = f"{resolver.task_type} {resolver.task_id}"
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(resolver.cluster_spec()),
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=job,
                                                                  num_tasks=len(jobs[job]))
                          for job in ("chief", "worker") if job in jobs],
        cluster_register_timeout_in_ms=int(timeout * 1000),
        heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT * 1000,
        shutdown_barrier_timeout_in_ms=int(timeout * 1000))
    # Registration waits for every task, up to the timeout (configure_coordination_service
    # does not expose this field of the same CoordinationServiceConfig).
    context.context().coordination_service.cluster_register_with_barrier = True
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        strategy.reduce(tf.distribute.ReduceOp.SUM, tf.constant(1.0), axis=None)  # all here
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError,
            tf.errors.AbortedError, tf.errors.InternalError):
        raise ClusterError(f"{task}: the other workers of TF_CONFIG did not join within "
                           f"{timeout:.0f} s (--cluster_timeout): start the same command on "
                           "each of them with its own TF_CONFIG task, and check that the "
                           f"addresses {jobs} are reachable from here") from None
    is_chief = multi_worker_util.is_chief(resolver.cluster_spec(), resolver.task_type,
                                          resolver.task_id)
    return Placement(strategy, "multi_worker", precision, task, is_chief)


def choose_placement(use_tpu: bool = False, tpu_name: str = "", num_workers: int = 1,
                     cpu_replicas: int = 1, use_bfloat16: bool = False,
                     use_mixed_precision: bool = False,
                     cluster_timeout: float = DEFAULT_CLUSTER_TIMEOUT,
                     forced_precision: str = "auto") -> Placement:
    """The strategy for this machine and flags, and the precision the config may use."""
    if use_tpu:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_name or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return Placement(tf.distribute.TPUStrategy(resolver), "tpu",
                         "bfloat16" if use_bfloat16 else "float32")
    gpus = tf.config.list_physical_devices("GPU")
    if forced_precision not in PRECISIONS:
        raise ValueError(f"unknown precision {forced_precision!r}")
    if forced_precision != "auto":
        log.info("training in %s as --precision asks (float16 and bfloat16 without hardware "
                 "for them only make the step slower: for testing GPU code paths)",
                 forced_precision)
        return _placement(num_workers, gpus, cpu_replicas, forced_precision, cluster_timeout)
    precision = "float16" if use_mixed_precision and gpus else "float32"
    if use_mixed_precision and not gpus:
        log.warning("train_config.use_mixed_precision needs a GPU: training in float32")
    if use_bfloat16 and not gpus and cpu_supports_bfloat16():
        precision = "bfloat16"
    elif use_bfloat16 and gpus:
        log.warning("train_config.use_bfloat16 applies to TPUs and CPUs (on GPUs, "
                    "use_mixed_precision): training in %s", precision)
    elif use_bfloat16:
        log.warning("train_config.use_bfloat16: this CPU has no bfloat16 instructions (CPU "
                    "flags %s), so bfloat16 would be slower than float32: training in float32",
                    " or ".join(sorted(BFLOAT16_CPU_FLAGS)))
    return _placement(num_workers, gpus, cpu_replicas, precision, cluster_timeout)


def _placement(num_workers: int, gpus: list, cpu_replicas: int, precision: str,
               cluster_timeout: float) -> Placement:
    if num_workers > 1:
        return _multi_worker(num_workers, precision, cluster_timeout)
    if gpus:
        return Placement(tf.distribute.MirroredStrategy(), "gpu", precision)
    if cpu_replicas > 1:
        return Placement(tf.distribute.MirroredStrategy(_split_cpu(cpu_replicas)), "cpu",
                         precision)
    return Placement(tf.distribute.OneDeviceStrategy("/cpu:0"), "cpu", precision)
