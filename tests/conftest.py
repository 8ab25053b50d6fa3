"""Test-suite root: makes the shared test helpers (``dicom_files``) importable from every test folder."""
