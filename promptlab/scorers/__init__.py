"""Metrics: score one result, summarise many (see SPEC §4).

    metric = get_metric({"name": "fuzzy", "threshold": 0.9})
    score = await metric.score(ScoreInput(...))
    summary = metric.summarize(scores)   # n, errors, mean, ci_low, ci_high, pass_rate, ...
"""

from promptlab.scorers.base import (Metric, MetricContext, MetricError, Score, ScoreInput, ScoringError,
                                    UnknownMetricError)
from promptlab.scorers.registry import BaseMetric, get_metric, list_metrics, register_metric
from promptlab.scorers.stats import bootstrap_ci, mcnemar, paired_bootstrap, summarize_scores

__all__ = [
    "BaseMetric", "Metric", "MetricContext", "MetricError", "Score", "ScoreInput", "ScoringError",
    "UnknownMetricError",
    "bootstrap_ci", "get_metric", "list_metrics", "mcnemar", "paired_bootstrap",
    "register_metric", "summarize_scores",
]
