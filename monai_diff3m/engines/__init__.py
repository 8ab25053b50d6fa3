# the checkpoint readers moved to monai_diff3m.checkpoints; re-exported for configs that name them here
from monai_diff3m.checkpoints import (
    checkpoint_metadata,
    checkpoint_name,
    load_network_weights,
    network_for_checkpoint,
    network_from_checkpoint,
    read_checkpoint,
)
from monai_diff3m.engines.backends import seed_run
from monai_diff3m.engines.losses import Diff3MLoss
from monai_diff3m.engines.prepare_batch import Diff3MPrepareBatch, plain_tensor
from monai_diff3m.engines.stages import start_stage2
