from monai_diff3m.data import chexpert, dicom, phantoms, records, schema
