"""The main job's command: ``python -m monai_diff3m.comparison`` (README, ``.ci/run``).

The driver itself lives in :mod:`monai_diff3m.experiments.comparison`; this module only runs it.
"""

import logging

from monai_diff3m.experiments.comparison import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
