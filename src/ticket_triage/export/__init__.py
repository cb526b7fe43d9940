"""Export: ONNX graphs (fp32 and int8) of a model folder, with parity checks."""

from .onnx import ExportReport, export_onnx

__all__ = ["ExportReport", "export_onnx"]
