from monai_diff3m.transforms.ehr import (
    DEFAULT_AGE_RANGE,
    EHRStatistics,
    EHRStatisticsError,
    EHRValueError,
    EncodeEHRd,
    ehr_group_sizes,
    ehr_slot_names,
    fit_and_save_ehr_statistics,
    missing_ehr_fractions,
    warn_missing_ehr,
    zscored_columns,
)
from monai_diff3m.transforms.image import DIFFUSION_IMAGE_RANGE, ImageLoadError, LoadChestXRayd
from monai_diff3m.transforms.intensity import INTENSITY_MODES, NormaliseChestXRayd
from monai_diff3m.transforms.lesion_mask import LoadLesionMaskd
from monai_diff3m.transforms.quality import CheckImageQualityd, ImageQualityError, measure_image_quality
