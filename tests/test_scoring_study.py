import argparse

import pytest

from monai_diff3m.experiments.scoring_study import auroc_grid, parse_steps, ranking_flips, recommend, schedule_grid
from monai_diff3m.inferers import REFERENCE_SCHEDULE, ScoringSchedule


def _result(name: str, evaluations: int, auroc: float) -> dict:
    return {"name": name, "evaluations": evaluations, "scores": {"lung_mean": {"auroc": auroc}}}


def test_evaluations_count_both_directions_of_ddim_inversion():
    assert ScoringSchedule("stochastic", 250, 10).evaluations == 10
    assert ScoringSchedule("stochastic", 250, None).evaluations == 250
    assert ScoringSchedule("ddim_inversion", 400, None).evaluations == 800
    # the authors invert 1 -> 400 and denoise 398 -> clean: 399 evaluations each way
    assert (
        REFERENCE_SCHEDULE == ScoringSchedule("ddim_inversion", 400, None, "authors")
        and REFERENCE_SCHEDULE.evaluations == 798
    )
    assert ScoringSchedule("ddim_inversion", 400, 10).name == "ddim_inversion L=400 steps=10"
    assert REFERENCE_SCHEDULE.name == "ddim_inversion L=400 steps=full indexing=authors"


def test_grid_is_cheapest_first_and_folds_step_counts_of_l_or_more_into_the_full_schedule():
    grid = schedule_grid([50, 100], [10, 50, 100, None], ["stochastic"])
    assert [(s.noise_level, s.num_steps) for s in grid] == [(50, 10), (100, 10), (50, None), (100, 50), (100, None)]
    assert [s.evaluations for s in grid] == sorted(s.evaluations for s in grid)
    with pytest.raises(ValueError, match="noising must be one of"):
        schedule_grid([100], [10], ["ddpm"])


def test_steps_argument_accepts_full_or_a_positive_count():
    assert parse_steps("full") is None and parse_steps("25") == 25
    with pytest.raises(argparse.ArgumentTypeError, match="positive integer or 'full'"):
        parse_steps("0")


def test_recommendation_is_the_cheapest_schedule_within_tolerance_of_the_best():
    results = [_result("a", 5, 0.790), _result("b", 10, 0.798), _result("c", 25, 0.801), _result("d", 250, 0.803)]
    best, chosen = recommend(results, "lung_mean", tolerance=0.005)
    assert best["name"] == "d" and chosen["name"] == "b"  # a is 0.013 below the best, b 0.005
    assert recommend(results, "lung_mean", tolerance=0.02)[1]["name"] == "a"
    assert recommend(results, "lung_mean", tolerance=0.0)[1]["name"] == "d"


def test_equal_cost_ties_go_to_the_higher_auroc_and_nothing_scored_is_an_error():
    _, chosen = recommend([_result("low", 10, 0.80), _result("high", 10, 0.81)], "lung_mean", tolerance=0.05)
    assert chosen["name"] == "high"
    with pytest.raises(ValueError, match="no schedule has been scored"):
        recommend([], "lung_mean", tolerance=0.005)


def test_auroc_grid_has_a_row_per_noise_level_and_a_column_per_step_count():
    results = [
        {"noising": "stochastic", "noise_level": 50, "num_steps": 5, "scores": {"lung_mean": {"auroc": 0.843}}},
        {"noising": "stochastic", "noise_level": 50, "num_steps": None, "scores": {"lung_mean": {"auroc": 0.847}}},
        {"noising": "stochastic", "noise_level": 250, "num_steps": 10, "scores": {"lung_mean": {"auroc": 0.741}}},
    ]
    lines = auroc_grid(results, "lung_mean").splitlines()
    assert lines[0] == "| lung_mean AUROC | 5 | 10 | full |"
    assert lines[2] == "| stochastic L=50 | 0.843 | - | 0.847 |"
    assert lines[3] == "| stochastic L=250 | - | 0.741 | - |"


def test_ranking_flips_between_two_sets_are_named():
    """The issue's case: DDIM inversion best on one NIH set, below chance on another, where stochastic noising holds."""
    here = [_result("inversion", 20, 0.62), _result("stochastic", 5, 0.60), _result("only here", 5, 0.9)]
    there = [_result("inversion", 20, 0.44), _result("stochastic", 5, 0.66)]
    warnings = ranking_flips(here, there, "lung_mean")
    assert warnings[0] == "inversion: lung_mean AUROC 0.620 here but 0.440 on the other set (chance is 0.5)"
    assert warnings[1].startswith("the best schedule here, inversion (0.620), ranks 2 of 2 on the other set")
    assert len(warnings) == 2
    agreeing = [_result("inversion", 20, 0.48), _result("stochastic", 5, 0.70)]
    assert ranking_flips(there, agreeing, "lung_mean") == []
