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
from pathlib import Path

import tensorflow as tf

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Placement:
    strategy: tf.distribute.Strategy
    kind: str  # "tpu", "multi_worker", "gpu", "cpu"
    precision: str  # "float32", "float16" or "bfloat16"

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


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


def choose_placement(use_tpu: bool = False, tpu_name: str = "", num_workers: int = 1,
                     cpu_replicas: int = 1, use_bfloat16: bool = False,
                     use_mixed_precision: bool = False) -> Placement:
    """The strategy for this machine and flags, and the precision the config may use."""
    if use_tpu:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_name or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return Placement(tf.distribute.TPUStrategy(resolver), "tpu",
                         "bfloat16" if use_bfloat16 else "float32")
    gpus = tf.config.list_physical_devices("GPU")
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
    if num_workers > 1:
        return Placement(tf.distribute.MultiWorkerMirroredStrategy(), "multi_worker", precision)
    if gpus:
        return Placement(tf.distribute.MirroredStrategy(), "gpu", precision)
    if cpu_replicas > 1:
        return Placement(tf.distribute.MirroredStrategy(_split_cpu(cpu_replicas)), "cpu",
                         precision)
    return Placement(tf.distribute.OneDeviceStrategy("/cpu:0"), "cpu", precision)
