"""Finding checkpoints and telling which of a model's variables a checkpoint does not fit.

Shared by fine-tuning (fine_tune_checkpoint), the exporter and inference, so that every tool
accepts the same forms (a directory: its latest checkpoint; or a prefix such as
model_dir/ckpt-1000) and reports a mismatch the same way: by the variables' object paths
(`model/backbone/...`), not by TensorFlow's partial-restore warnings or a shape error deep
inside Keras. It also restores a model with the weight averages that training kept
(`use_moving_average`), so that export and diagnosis use the weights evaluation scored.
"""
from __future__ import annotations

import os
import tempfile
from collections import deque

import tensorflow as tf
import tf_keras
from official.modeling.optimization.ema_optimizer import ExponentialMovingAverage
from tensorflow.core.protobuf import trackable_object_graph_pb2

from core.errors import UserError

MAX_LISTED = 8
AVERAGE_SLOT = "/.OPTIMIZER_SLOT/optimizer/average/"  # Model Garden's EMA slot in checkpoint keys


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing or does not fit the model it is restored into."""


def resolve_checkpoint(path: str, what: str = "checkpoint") -> str:
    """A checkpoint directory (its latest checkpoint) or prefix -> the checkpoint prefix.

    `what` names the path in messages, e.g. "fine_tune_checkpoint".
    """
    path = str(path)
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"{what} {path} is a directory without a checkpoint "
                                  "(expected ckpt-N.index files and a 'checkpoint' file, as "
                                  "model_main_tf2.py writes)")
        return latest
    if tf.io.gfile.exists(path + ".index"):
        return path
    raise CheckpointError(f"{what} {path} does not exist (expected {path}.index, or a "
                          "directory of checkpoints such as a model_dir)")


def variable_shapes(checkpoint: str, root: str = "") -> dict[str, list[int]]:
    """Object path -> shape for every variable below `root` ("" = all) of a checkpoint.

    Paths come from the checkpoint's object graph, breadth first, so each variable gets its
    shortest path under `root` whichever alias it was saved under (Model Garden's trainer
    saves the backbone and heads at the top level as well as under `model/`). Optimizer
    slots are not objects of the graph's children and are left out.
    """
    reader = tf.train.load_checkpoint(checkpoint)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    if root:
        start = [(c.node_id, root) for c in graph.nodes[0].children if c.local_name == root]
    else:
        start = [(0, "")]
    if not start:
        return {}
    shapes_by_key = reader.get_variable_to_shape_map()
    shapes: dict[str, list[int]] = {}
    seen = {start[0][0]}
    queue = deque(start[:1])
    while queue:
        node_id, path = queue.popleft()
        for attribute in graph.nodes[node_id].attributes:
            if attribute.name == "VARIABLE_VALUE" and attribute.checkpoint_key in shapes_by_key:
                shapes[path] = shapes_by_key[attribute.checkpoint_key]
        for child in graph.nodes[node_id].children:
            if child.node_id not in seen:
                seen.add(child.node_id)
                queue.append((child.node_id, f"{path}/{child.local_name}".lstrip("/")))
    return shapes


def object_shapes(obj: tf.Module, root: str) -> dict[str, list[int]]:
    """The same paths for a live object (model, backbone), via a scratch checkpoint of it."""
    with tempfile.TemporaryDirectory(prefix="expected-shapes-") as scratch:
        written = tf.train.Checkpoint(**{root: obj}).write(os.path.join(scratch, "ckpt"))
        return variable_shapes(written, root)


def _listed(title: str, lines: list[str]) -> list[str]:
    if not lines:
        return []
    more = [f"    ... and {len(lines) - MAX_LISTED} more"] if len(lines) > MAX_LISTED else []
    return [f"  {title} ({len(lines)}):"] + [f"    {line}" for line in lines[:MAX_LISTED]] + more


def mismatch_lines(checkpoint: str, root: str, obj: tf.Module,
                   allow_extra: bool = True) -> list[str]:
    """Lines naming `obj`'s variables that `checkpoint` lacks or holds with another shape.

    Empty when everything fits. allow_extra=False also lists checkpoint variables that the
    object does not have (a checkpoint of a bigger model).
    """
    found = variable_shapes(checkpoint, root)
    if not found:
        return [f"  the checkpoint holds no '{root}' object"]
    expected = object_shapes(obj, root)
    differ = [f"{path}: checkpoint {found[path]}, model {shape}"
              for path, shape in expected.items() if path in found and found[path] != shape]
    missing = [f"{path} {shape}" for path, shape in expected.items() if path not in found]
    extra = [] if allow_extra else [f"{path} {shape}" for path, shape in found.items()
                                    if path not in expected]
    return (_listed("shapes differ", differ)
            + _listed("in the model but not in the checkpoint", missing)
            + _listed("in the checkpoint but not in the model", extra))


def has_moving_averages(checkpoint: str) -> bool:
    """Whether training kept weight averages (Model Garden's EMA optimizer) in `checkpoint`."""
    return any(AVERAGE_SLOT in name for name, _ in tf.train.list_variables(checkpoint))


def restore_weights(model: tf.Module, checkpoint: str, use_moving_averages: bool,
                    root: str = "model") -> bool:
    """Restores `model` (saved as `root`) from `checkpoint`; returns whether the trainable
    weights are the averages training kept rather than the last step's.

    With use_moving_averages (the config's optimizer.use_moving_average) and averages in
    the checkpoint, each trainable weight gets its average, as evaluation swaps them in
    (Model Garden's trainer). A checkpoint without them (one an export re-saved, already
    averaged) restores as it is. Batch norm statistics are not averaged, in either case.
    """
    status = tf.train.Checkpoint(**{root: model}).read(checkpoint)
    status.assert_existing_objects_matched().expect_partial()
    if not (use_moving_averages and has_moving_averages(checkpoint)):
        return False
    # The averages are slots of the EMA optimizer keyed by the model's variables: a wrapper
    # of the same kind, given slots for this model, restores them by the same keys.
    averages = ExponentialMovingAverage(tf_keras.optimizers.legacy.SGD())
    averages.shadow_copy(model)
    tf.train.Checkpoint(**{root: model}, optimizer=averages).read(checkpoint).expect_partial()
    averages.assign_average_vars(model.trainable_variables)
    return True
