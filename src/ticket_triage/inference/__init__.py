"""Inference: the `Classifier` Python API, its backends (PyTorch, ONNX Runtime) and file prediction
(in one process, or in several under torchrun: `predict_distributed`)."""

from .batch import PredictFileReport, PredictOptions, predict_file
from .classifier import Classifier, Prediction, softmax
from .distributed_predict import DistributedPredictReport, predict_distributed

__all__ = [
    "Classifier",
    "DistributedPredictReport",
    "Prediction",
    "PredictFileReport",
    "PredictOptions",
    "predict_distributed",
    "predict_file",
    "softmax",
]
