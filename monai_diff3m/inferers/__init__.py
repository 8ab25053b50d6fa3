from monai_diff3m.inferers.anomaly import (
    DDIM_INDEXINGS,
    DEFAULT_SCORE,
    NOISING_MODES,
    REFERENCE_SCHEDULE,
    SCORE_NAMES,
    Diff3MAnomalyInferer,
    ScoringSchedule,
    ddim_steps,
    ddim_timesteps,
    image_scores,
    predict_x0,
)
from monai_diff3m.inferers.diffusion import Diff3MDiffusionInferer, Diff3MValidationInferer
