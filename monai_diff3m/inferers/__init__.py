from monai_diff3m.inferers.anomaly import (
    NOISING_MODES,
    REFERENCE_SCHEDULE,
    SCORE_NAMES,
    Diff3MAnomalyInferer,
    ScoringSchedule,
    ddim_timesteps,
    image_scores,
)
