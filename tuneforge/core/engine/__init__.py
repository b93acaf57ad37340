"""The training engine: loop, optimizers and schedules, callbacks, checkpoint files."""
from .callbacks import Callback, Checkpointer, EarlyStopping, EpochMeasure, MetricsLogger, Progress, TimeLimit
from .checkpoint import atomic_save, load_checkpoint
from .loop import Engine
from .optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_schedule

__all__ = ["Engine", "Callback", "EpochMeasure", "Checkpointer", "EarlyStopping", "MetricsLogger", "Progress", "TimeLimit", "atomic_save",
           "load_checkpoint", "build_optimizer", "build_schedule", "OPTIMIZERS", "SCHEDULES"]
