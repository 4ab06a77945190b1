"""`train_config.optimizer` -> Model Garden's OptimizationConfig.

The OD API's learning-rate schedules are expressed with Model Garden's schedules and linear
warm-up; where a schedule cannot be expressed exactly the config is refused with the
reason, instead of being approximated behind the user's back.
"""
from __future__ import annotations

from official.modeling import optimization

from pipelines.errors import PipelineConfigError
from pipelines.protos import optimizer_pb2

FIELD = "train_config.optimizer"


def _error(field: str, detail: str) -> PipelineConfigError:
    return PipelineConfigError(detail, f"{FIELD}.{field}" if field else FIELD)


def _schedule(rate: optimizer_pb2.LearningRate, where: str) -> tuple[dict, dict | None]:
    """(learning_rate config, warmup config or None) for one OD API schedule."""
    kind = rate.WhichOneof("learning_rate")
    if kind == "constant_learning_rate":
        return {"type": "constant", "constant": {
            "learning_rate": rate.constant_learning_rate.learning_rate}}, None
    if kind == "cosine_decay_learning_rate":
        cosine = rate.cosine_decay_learning_rate
        if cosine.hold_base_rate_steps:
            raise _error(f"{where}.cosine_decay_learning_rate.hold_base_rate_steps",
                         "is not supported (Model Garden's cosine schedule has no hold)")
        if cosine.total_steps <= cosine.warmup_steps:
            raise _error(f"{where}.cosine_decay_learning_rate", "total_steps must exceed "
                         "warmup_steps")
        schedule = {"type": "cosine", "cosine": {
            "initial_learning_rate": cosine.learning_rate_base,
            "decay_steps": cosine.total_steps - cosine.warmup_steps,
            "offset": cosine.warmup_steps}}
        warmup = ({"type": "linear", "linear": {
            "warmup_steps": cosine.warmup_steps,
            "warmup_learning_rate": cosine.warmup_learning_rate}}
                  if cosine.warmup_steps else None)
        return schedule, warmup
    if kind == "manual_step_learning_rate":
        manual = rate.manual_step_learning_rate
        entries = list(manual.schedule)
        initial = manual.initial_learning_rate
        if entries and entries[0].step == 0:
            # The OD API's rate at step k is that of the last boundary <= k: an entry at step
            # 0 replaces initial_learning_rate from the first step on.
            if manual.warmup:
                raise _error(f"{where}.manual_step_learning_rate.warmup",
                             "needs a first schedule step above 0 to warm up over")
            initial, entries = entries[0].learning_rate, entries[1:]
        steps = [s.step for s in entries]
        if steps != sorted(set(steps)) or (steps and steps[0] == 0):
            raise _error(f"{where}.manual_step_learning_rate.schedule",
                         "steps must be increasing (only the first may be 0)")
        # The OD API switches rates at step == boundary; PiecewiseConstantDecay one step
        # later, hence the - 1.
        if not steps:
            if manual.warmup:
                raise _error(f"{where}.manual_step_learning_rate.warmup",
                             "needs a schedule entry after step 0 to warm up to")
            return {"type": "constant", "constant": {"learning_rate": initial}}, None
        schedule = {"type": "stepwise", "stepwise": {
            "boundaries": [step - 1 for step in steps],
            "values": [initial] + [s.learning_rate for s in entries]}}
        warmup = None
        if manual.warmup:
            warmup = {"type": "linear", "linear": {
                "warmup_steps": steps[0], "warmup_learning_rate": initial}}
        return schedule, warmup
    if kind == "exponential_decay_learning_rate":
        exponential = rate.exponential_decay_learning_rate
        for name in ("burnin_steps", "min_learning_rate"):
            if getattr(exponential, name):
                raise _error(f"{where}.exponential_decay_learning_rate.{name}",
                             "is not supported by Model Garden's exponential schedule")
        return {"type": "exponential", "exponential": {
            "initial_learning_rate": exponential.initial_learning_rate,
            "decay_steps": exponential.decay_steps,
            "decay_rate": exponential.decay_factor,
            "staircase": exponential.staircase}}, None
    raise _error(where, "needs a learning rate schedule (constant_learning_rate, "
                 "cosine_decay_learning_rate, manual_step_learning_rate or "
                 "exponential_decay_learning_rate)")


def build_optimization_config(optimizer: optimizer_pb2.Optimizer,
                              gradient_clipping_by_norm: float = 0.0,
                              stage_rates: tuple[list[int], list[float]] | None = None
                              ) -> optimization.OptimizationConfig:
    """`stage_rates` (stage end steps, learning rates) replaces the configured schedule with
    one constant rate per stage of staged fine-tuning."""
    kind = optimizer.WhichOneof("optimizer")
    clip = {"global_clipnorm": gradient_clipping_by_norm} if gradient_clipping_by_norm else {}
    if kind == "momentum_optimizer":
        momentum = optimizer.momentum_optimizer
        optimizer_config = {"type": "sgd", "sgd": {
            "momentum": momentum.momentum_optimizer_value, **clip}}
        schedule, warmup = _schedule(momentum.learning_rate, "momentum_optimizer.learning_rate")
    elif kind == "rms_prop_optimizer":
        rms = optimizer.rms_prop_optimizer
        optimizer_config = {"type": "rmsprop", "rmsprop": {
            "rho": rms.decay, "momentum": rms.momentum_optimizer_value,
            "epsilon": rms.epsilon, **clip}}
        schedule, warmup = _schedule(rms.learning_rate, "rms_prop_optimizer.learning_rate")
    elif kind == "adam_optimizer":
        adam = optimizer.adam_optimizer
        optimizer_config = {"type": "adam", "adam": {"epsilon": adam.epsilon, **clip}}
        schedule, warmup = _schedule(adam.learning_rate, "adam_optimizer.learning_rate")
    else:
        raise _error("", "is required: momentum_optimizer, adam_optimizer or "
                     "rms_prop_optimizer")
    if stage_rates is not None:
        ends, rates = stage_rates
        # Step k (1-based) is optimizer iteration k - 1: stage i covers iterations up to
        # end_i - 1, which PiecewiseConstantDecay's `step <= boundary` keeps in stage i.
        schedule = {"type": "stepwise", "stepwise": {"boundaries": [e - 1 for e in ends[:-1]],
                                                     "values": list(rates)}}
        warmup = None
    config = {"optimizer": optimizer_config, "learning_rate": schedule}
    if warmup:
        config["warmup"] = warmup
    if optimizer.use_moving_average:
        config["ema"] = {"average_decay": optimizer.moving_average_decay}
    return optimization.OptimizationConfig(config)
