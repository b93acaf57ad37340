"""Evaluation: metrics from logits, plus the JSON/HTML/PNG run report and terminal summary."""

from tuneforge.evaluate.metrics import classification_metrics
from tuneforge.evaluate.report import print_summary, write_report

__all__ = ["classification_metrics", "write_report", "print_summary"]
