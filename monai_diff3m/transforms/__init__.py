from monai_diff3m.transforms.ehr import (
    EHR_GROUP_SLOTS,
    EHRStatistics,
    EHRValueError,
    EncodeEHRd,
    ehr_group_sizes,
    ehr_slot_names,
    fit_and_save_ehr_statistics,
)
from monai_diff3m.transforms.image import ImageLoadError, LoadChestXRayd
from monai_diff3m.transforms.intensity import INTENSITY_MODES, NormaliseChestXRayd
from monai_diff3m.transforms.lesion_mask import LoadLesionMaskd
from monai_diff3m.transforms.masking import checkerboard_masks, soften_mask
