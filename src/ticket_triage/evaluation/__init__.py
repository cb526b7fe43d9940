"""Evaluation: metrics, reports and plots (functions return figures; nothing calls plt.show())."""

from .metrics import classification_metrics
from .report import confusion_matrix_figure, loss_curves_figure, write_report

__all__ = ["classification_metrics", "confusion_matrix_figure", "loss_curves_figure", "write_report"]
