# phantoms is left out: importing it here made ``python -m monai_diff3m.data.phantoms`` warn (runpy) that the module
# was imported before it ran; ``from monai_diff3m.data import phantoms`` still works.
from monai_diff3m.data import dataset_csv, dicom, image_folder, records
