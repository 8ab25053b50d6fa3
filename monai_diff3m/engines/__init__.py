from monai_diff3m.engines.diffusion_steps import Diff3MTrainingStep, Diff3MValidationStep, predict_x0, prepare_diff3m_batch
from monai_diff3m.engines.losses import Diff3MLoss
from monai_diff3m.engines.stages import load_network_weights, start_stage2
from monai_diff3m.engines.anomaly_scoring import AnomalyScoringStep
