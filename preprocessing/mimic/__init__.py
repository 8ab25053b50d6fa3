"""MIMIC-CXR-JPG 2.0.0 + MIMIC-IV 3.1 -> the bundles' CSVs, in the five re-runnable steps of docs/method.md §6.

1. ``step1_omr_ehr``: nearest ``omr`` record (±90 days) per image and feature -> ``ehr_parts/`` + manifest.
2. ``step2_concatenate``: parts -> ``image_ehr.csv``.
3. ``step3_join``: metadata + labels + official split + ``patients`` + step 2 -> ``joined.csv``.
4. ``step4_filter_existing``: drop rows whose JPEG is absent -> ``existing.csv``.
5. ``step5_summarise``: policies, ``train.csv`` / ``valid.csv`` / ``test.csv`` and ``summary.json``.

``python -m monai_diff3m.preprocessing.mimic.run_all`` runs all five. Intermediate files live in a work folder;
every file is written atomically, so a step that fails leaves its previous output (or none) for the next step to read.
"""
