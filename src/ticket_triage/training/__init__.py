"""Fine-tuning: the training loop, its config, checkpoints."""

from .config import TrainConfig
from .loop import StopTraining, TrainResult, train_model

__all__ = ["StopTraining", "TrainConfig", "TrainResult", "train_model"]
