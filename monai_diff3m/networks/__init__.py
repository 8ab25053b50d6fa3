from monai_diff3m.networks.checkerboard import checkerboard_masks, soften_mask
from monai_diff3m.networks.diff3m_unet import IECA_MODES, Diff3MUNet, split_prediction
from monai_diff3m.networks.ehr_tokens import EHRTokenizer, PooledEHRAttention
from monai_diff3m.networks.lung_fields import LungFieldSegmenter
