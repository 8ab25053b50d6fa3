from monai_diff3m.inferers.anomaly import NOISING_MODES, SCORE_NAMES, Diff3MAnomalyInferer, ddim_timesteps, image_scores
