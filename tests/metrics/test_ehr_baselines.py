import numpy as np
import pandas as pd
import pytest

from monai_diff3m import schema
from monai_diff3m.metrics.anomaly_metrics import bootstrap_interval
from monai_diff3m.metrics.ehr_baselines import DemographicsClassifier, EHRFeatures, EHRNormalisedScore

COLUMNS = [schema.SEX, schema.AGE, schema.VIEW]


def _table(count: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            schema.SEX: rng.choice(["Male", "Female", "M"], count),
            schema.AGE: rng.integers(20, 90, count).astype(float),
            schema.VIEW: rng.choice(["AP", "PA", "AP Supine"], count),
        }
    )


def test_features_encode_sex_view_and_missing_values():
    table = pd.DataFrame(
        {
            schema.SEX: ["M", "Female"],
            schema.AGE: [50.0, np.nan],
            schema.VIEW: ["AP supine", "PA"],
            schema.BMI: [30.0, np.nan],
        }
    )
    features = EHRFeatures([*COLUMNS, schema.BMI]).fit(table).transform(table)
    assert features.shape == (2, 6)
    assert features[:, 0].tolist() == [1.0, 0.0] and features[:, 3].tolist() == [1.0, 0.0]
    assert features[:, 2].tolist() == [0.0, 1.0] and features[:, 5].tolist() == [0.0, 1.0]


def test_ehr_only_classifier_learns_that_ap_films_are_abnormal():
    table = _table()
    labels = table[schema.VIEW].str.startswith("AP").to_numpy(dtype=int)
    classifier = DemographicsClassifier(COLUMNS).fit(table, labels)
    scores = classifier.predict(_table(seed=1))
    view = _table(seed=1)[schema.VIEW].str.startswith("AP").to_numpy()
    assert scores[view].min() > scores[~view].max()


def test_normalised_score_removes_what_normals_of_the_same_age_score():
    normals = _table(400)
    rng = np.random.default_rng(2)
    scores = np.exp(0.02 * normals[schema.AGE].to_numpy() + 0.1 * rng.standard_normal(400))
    normaliser = EHRNormalisedScore(COLUMNS).fit(normals, scores)
    assert normaliser.spread == pytest.approx(0.1, rel=0.15)
    young, old = normals.iloc[:2].assign(**{schema.AGE: 30.0}), normals.iloc[:2].assign(**{schema.AGE: 80.0})
    same_raw = np.full(2, np.exp(0.02 * 55))
    assert (normaliser(old, same_raw) < 0).all() and (normaliser(young, same_raw) > 0).all()
    with pytest.raises(ValueError, match="at least 3 normal films"):
        EHRNormalisedScore(COLUMNS).fit(normals.iloc[:2], scores[:2])


def test_patient_bootstrap_is_wider_than_pretending_follow_up_films_are_independent():
    rng = np.random.default_rng(0)
    labels = np.repeat(rng.integers(0, 2, 40), 5)
    scores = labels + np.repeat(rng.normal(0, 1.2, 40), 5) + rng.normal(0, 0.1, 200)
    patients = np.repeat(np.arange(40), 5)
    low_image, high_image = bootstrap_interval(labels, scores, num_samples=500)
    low_patient, high_patient = bootstrap_interval(labels, scores, num_samples=500, clusters=patients)
    assert high_patient - low_patient > 1.5 * (high_image - low_image)
    with pytest.raises(ValueError, match="cluster ids"):
        bootstrap_interval(labels, scores, clusters=patients[:10])
