"""The baseline every transformer is measured against: TF-IDF (word 1-2 grams) + a linear SVM."""

from __future__ import annotations

import time
from typing import Any, Sequence

from .metrics import classification_metrics


def fit_baseline(train_texts: Sequence[str], train_labels: Sequence[int], seed: int = 42):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    pipeline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=200_000),
        LinearSVC(C=1.0, random_state=seed),
    )
    return pipeline.fit(list(train_texts), list(train_labels))


def run_baseline(
    train_texts, train_labels, test_texts, test_labels, labels: Sequence[str], seed: int = 42
) -> dict[str, Any]:
    """Fit on train, score on test: the same metrics dictionary as the transformer's."""
    start = time.perf_counter()
    pipeline = fit_baseline(train_texts, train_labels, seed)
    metrics = classification_metrics(test_labels, pipeline.predict(list(test_texts)), labels)
    metrics["wall_time_s"] = round(time.perf_counter() - start, 2)
    metrics["model"] = "tfidf-word-1-2gram+linear-svm"
    return metrics
