"""Inference: the `Classifier` Python API, its backends (PyTorch, ONNX Runtime) and file prediction."""

from .batch import PredictFileReport, predict_file
from .classifier import Classifier, Prediction, softmax

__all__ = ["Classifier", "Prediction", "PredictFileReport", "predict_file", "softmax"]
