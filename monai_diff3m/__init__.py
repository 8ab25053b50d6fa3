"""monai-diff3m: EHR-conditioned diffusion anomaly detection on chest X-rays (Diff3M) for MONAI."""

from monai_diff3m import checkpoints, data, engines, errors, handlers, inferers, metrics, networks, schema, transforms

__version__ = "0.9.0"

errors.install_excepthook()
