"""Multi-worker training with two processes on 127.0.0.1 (TF_CONFIG, --num_workers=2): the
chief alone writes to --model_dir, the same command resumes after both are killed, a
continuous evaluation job runs beside the cluster, and a lost or missing worker ends the run
with one error line in bounded time."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.training.train_loop import worker_checkpoint_path
from tests.conftest import REPO_ROOT
from tests.training_helpers import make_tiny_records, tiny_config

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _start(args: list[str], log: Path, tf_config: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if tf_config:
        env["TF_CONFIG"] = tf_config
    return subprocess.Popen([sys.executable, "model_main_tf2.py", *args], cwd=REPO_ROOT,
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _cluster(config: Path, model_dir: Path, logs: Path, steps: int, *extra: str,
             workers: int = 2) -> list[subprocess.Popen]:
    ports = [_free_port() for _ in range(2)]
    return [_start([f"--pipeline_config_path={config}", f"--model_dir={model_dir}",
                    "--num_workers=2", f"--num_train_steps={steps}", "--checkpoint_every_n=2",
                    *extra], logs / f"worker{i}.log", _tf_config(ports, i))
            for i in range(workers)]


def _wait(processes, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    for process in processes:
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    return [p.returncode for p in processes]


def _wait_for(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {seconds} s"
        time.sleep(0.5)


def _event_pids(model_dir: Path) -> set[int]:
    """The process ids in TensorFlow's event file names (events.out.tfevents.T.HOST.PID.N)."""
    return {int(p.name.split(".")[-3]) for p in model_dir.rglob("events.out.tfevents.*")}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_worker")
    records = make_tiny_records(root, train_images=8, val_images=2)
    return tiny_config(records, root / "pipeline.config", num_steps=6)


def test_two_workers_train_resume_and_only_the_chief_writes(tiny, tmp_path):
    model_dir, logs = tmp_path / "model", tmp_path
    first = _cluster(tiny, model_dir, logs, 6)
    _wait_for(model_dir / "ckpt-2.index", 300)
    for process in first:
        process.send_signal(signal.SIGKILL)
    _wait(first, 30)
    second = _cluster(tiny, model_dir, logs, 6)
    evaluator = _start([f"--pipeline_config_path={tiny}", f"--model_dir={tmp_path / 'eval'}",
                        f"--checkpoint_dir={model_dir}", "--num_train_steps=6",
                        "--eval_timeout=120"], logs / "evaluator.log")
    codes = _wait(second, 400)
    logs_text = [(logs / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs_text
    assert _wait([evaluator], 300) == [0], (logs / "evaluator.log").read_text()
    for text in logs_text:
        assert "resuming from" in text and "at step" in text, text
    assert "worker 0 (chief)" in logs_text[0] and "(chief)" not in logs_text[1]
    steps = sorted(int(p.stem.split("-")[1]) for p in model_dir.glob("ckpt-*.index"))
    assert steps[-1] == 6, steps
    # Every event file under model_dir was written by a chief process.
    assert _event_pids(model_dir) <= {first[0].pid, second[0].pid}, _event_pids(model_dir)
    leftover = worker_checkpoint_path(str(model_dir), "worker 1")
    assert not os.path.exists(leftover), leftover  # the non-chief's copy is gone
    metrics = json.loads((tmp_path / "eval/eval/metrics.json").read_text())
    assert "6" in metrics and "DetectionMasks_Precision/mAP" in metrics["6"], metrics


def test_a_lost_worker_ends_the_run_with_one_error_in_bounded_time(tiny, tmp_path):
    model_dir = tmp_path / "model"
    workers = _cluster(tiny, model_dir, tmp_path, 400)
    _wait_for(model_dir / "ckpt-2.index", 300)
    workers[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    assert _wait(workers[:1], 120) == [1]
    assert time.monotonic() - killed < 120
    text = (tmp_path / "worker0.log").read_text()
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in text, text[-3000:]
    assert "training stopped because worker 1" in errors[0] and "stopped answering" in errors[0]


def test_a_worker_alone_gives_up_after_the_cluster_timeout(tiny, tmp_path):
    started = time.monotonic()
    alone = _cluster(tiny, tmp_path / "model", tmp_path, 4, "--cluster_timeout=10", workers=1)
    assert _wait(alone, 120) == [1]
    assert time.monotonic() - started < 120
    text = (tmp_path / "worker0.log").read_text()
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "did not join within 10 s" in errors[0], text[-3000:]
    assert not (tmp_path / "model").exists()
