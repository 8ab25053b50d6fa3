"""Turn the public chest X-ray datasets (CheXpert, MIMIC-CXR-JPG + MIMIC-IV) into the CSVs the bundles read.

Every pipeline writes ``train.csv`` (normals only), ``valid.csv`` and ``test.csv`` with the columns of
:mod:`monai_diff3m.schema`, so the outputs load with :func:`monai_diff3m.data.dataset_csv.read_dataset_csv`.
"""
