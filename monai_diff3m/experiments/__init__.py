"""Experiment drivers: the main job's comparison, the scoring and defaults studies and the lung-field training.

They import the library; the library never imports them. Run each as ``python -m monai_diff3m.experiments.<name>``
(the main job also as ``python -m monai_diff3m.comparison``).
"""
