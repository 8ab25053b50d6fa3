from monai_diff3m.inferers.anomaly import Diff3MAnomalyInferer, image_noise
from monai_diff3m.inferers.ddim import (
    DDIM_INDEXINGS,
    FULL_SCHEDULE,
    NOISE_LEVEL_REFERENCE_SIZE,
    NOISING_MODES,
    REFERENCE_SCHEDULE,
    ScoringSchedule,
    ddim_steps,
    ddim_timesteps,
    ddim_walk,
    predict_x0,
    size_matched_noise_level,
)
from monai_diff3m.inferers.diffusion import Diff3MDiffusionInferer, Diff3MValidationInferer
from monai_diff3m.inferers.image_scores import (
    DEFAULT_SCORE,
    SCORE_NAMES,
    ImageScore,
    ScoreInputs,
    compute_image_scores,
    register_image_score,
    registered_image_scores,
)
from monai_diff3m.inferers.precision import bf16_is_fast
