"""What the EHR alone says about a film, and image scores read relative to the EHR.

Two questions every image score on real films must answer:

- *Does it read the image at all?* Abnormal films are older, more often AP (portable, bed-bound patients) and more
  often male than normal ones, so sex, age and view predict the label by themselves. :class:`DemographicsClassifier`
  is that prediction (a logistic regression on the same EHR the model sees, no image): a method that does not beat
  it is not reading the image.
- *Is the score high for this patient?* A normal 80-year-old's AP film is reconstructed worse than a normal
  30-year-old's PA film. :class:`EHRNormalisedScore` fits how image scores of **normal** films depend on the EHR
  (linear in log-score, one residual spread) and reports how many spreads a film lies above what a normal film of
  the same sex, age and view scores. It needs normal films only, no abnormal labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression, LogisticRegression

from monai_diff3m import schema

#: Smallest score used before taking logs (scores are non-negative reconstruction errors).
_SCORE_FLOOR = 1e-12


def ehr_columns(table: pd.DataFrame) -> list[str]:
    """The EHR columns of ``table`` the model can see: sex, age, view, and the MIMIC measurements it holds."""
    return [column for column in schema.ehr_columns() if column in table.columns]


class EHRFeatures:
    """A numeric design matrix from EHR columns (``schema.EHR_FIELDS``): numeric fields z-scored, a categorical one
    as 0/1 indicators of all its categories but the last (sex: 1 for male; view: 1 for AP).

    A missing number becomes the fitted mean (0 after z-scoring) plus a 0/1 "missing" column (always for a field the
    network z-scores, the MIMIC measurements; for age only where a value is missing), so films with an unknown value
    are kept, as the network keeps them; a missing category has all indicators 0. Statistics come from the table
    given to :meth:`fit`.
    """

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self.mean: dict[str, float] = {}
        self.std: dict[str, float] = {}

    def fit(self, table: pd.DataFrame) -> EHRFeatures:
        for column in self._numeric_columns():
            values = pd.to_numeric(table[column], errors="coerce")
            self.mean[column] = float(values.mean()) if values.notna().any() else 0.0
            self.std[column] = float(values.std()) if values.notna().sum() > 1 and values.std() > 0 else 1.0
        return self

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        features: list[np.ndarray] = []
        for column in self.columns:
            field = schema.ehr_field(column)
            if field.is_categorical:
                categories = table[column].map(lambda value, field=field: _category_or_none(field, value))
                features.extend((categories == category).to_numpy(dtype=float) for category in field.categories[:-1])
            else:
                values = pd.to_numeric(table[column], errors="coerce")
                features.append(((values - self.mean[column]) / self.std[column]).fillna(0.0).to_numpy())
                if values.isna().any() or field.normaliser == "zscore":
                    features.append(values.isna().to_numpy(dtype=float))
        return np.column_stack(features).astype(np.float64)

    def _numeric_columns(self) -> list[str]:
        return [column for column in self.columns if not schema.ehr_field(column).is_categorical]


def _category_or_none(field: schema.EHRField, value: Any) -> str | None:
    """The category of ``value`` (``m`` and ``AP supine`` read as the network reads them), None when it has none."""
    try:
        return field.canonical(value)
    except ValueError:
        return None


class DemographicsClassifier:
    """Logistic regression of the label on the EHR alone: the "no image" row of every comparison.

    Fit it on a labelled split other than the one it is scored on (the comparison fits on validation and scores
    the test split), so its AUROC is as honest as the image methods' validated score choice.
    """

    def __init__(self, columns: Sequence[str]) -> None:
        self.features = EHRFeatures(columns)
        self.model = LogisticRegression(max_iter=1000)

    def fit(self, table: pd.DataFrame, labels: np.ndarray) -> DemographicsClassifier:
        self.model.fit(self.features.fit(table).transform(table), labels)
        return self

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        """Probability of abnormal for every row: higher = more anomalous, like an image score."""
        return self.model.predict_proba(self.features.transform(table))[:, 1]


class EHRNormalisedScore:
    """How far an image score lies above what normal films with the same EHR score, in residual spreads.

    ``log(score) = EHR features · w + b + noise`` is fitted on normal films only; the normalised score is the
    residual divided by the residual standard deviation. Label-free: it needs to know which films are normal,
    as the training split does, never which are abnormal.
    """

    def __init__(self, columns: Sequence[str]) -> None:
        self.features = EHRFeatures(columns)
        self.model = LinearRegression()
        self.spread = 1.0

    def fit(self, normal_table: pd.DataFrame, scores: np.ndarray) -> EHRNormalisedScore:
        if len(normal_table) < 3:
            raise ValueError(f"EHR normalisation needs at least 3 normal films, got {len(normal_table)}")
        design = self.features.fit(normal_table).transform(normal_table)
        targets = np.log(np.maximum(np.asarray(scores, dtype=np.float64), _SCORE_FLOOR))
        residuals = targets - self.model.fit(design, targets).predict(design)
        self.spread = float(residuals.std(ddof=1)) or 1.0
        return self

    def __call__(self, table: pd.DataFrame, scores: np.ndarray) -> np.ndarray:
        expected = self.model.predict(self.features.transform(table))
        return (np.log(np.maximum(np.asarray(scores, dtype=np.float64), _SCORE_FLOOR)) - expected) / self.spread
