"""Class defaults equal the bundle's settings, so Python users and bundle users get the same model and scoring.

When a bundle default changes (e.g. for real films), this test names the class default to change with it.
"""

import inspect

import pytest
from monai.bundle import ConfigParser

from monai_diff3m.engines import Diff3MLoss
from monai_diff3m.handlers import WarmupEMAHandler
from monai_diff3m.inferers import Diff3MAnomalyInferer
from monai_diff3m.networks import Diff3MUNet

from tiny_bundle import CONFIGS

#: (class, config file, component id, constructor arguments set elsewhere, not by a bundle default)
COMPONENTS = [
    (Diff3MUNet, "train.json", "network_args", ("ehr_group_sizes",)),  # the EHR field table's, for the groups
    (Diff3MLoss, "train.json", "loss", ()),
    (WarmupEMAHandler, "train.json", "ema", ("model",)),
    # the checkpoint's range and schedule; the lung segmenter is a component (the class's None loads the same one)
    (Diff3MAnomalyInferer, "inference.json", "inferer", ("scheduler", "image_range", "clip_range", "lung_segmenter")),
]


def _bundle_value(parser: ConfigParser, value):
    """The resolved value of a bundle setting: a literal, an ``@key`` reference or a ``$`` expression."""
    parser["_compared_"] = value
    return parser.get_parsed_content("_compared_")


def _normalised(value):
    return list(value) if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize(
    ("cls", "config", "component", "not_defaults"), COMPONENTS, ids=[c[0].__name__ for c in COMPONENTS]
)
def test_class_defaults_equal_the_bundle_settings(cls, config, component, not_defaults):
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / config))
    settings = {key: value for key, value in parser[component].items() if not key.startswith("_")}
    defaults = {name: p.default for name, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}
    compared = [name for name in settings if name not in not_defaults]
    assert set(compared) <= set(defaults), f"{cls.__name__} has no default for {set(compared) - set(defaults)}"
    for name in compared:
        bundle = _bundle_value(parser, settings[name])
        message = f"{cls.__name__}({name}={defaults[name]!r}) but the bundle's {config} sets {bundle!r}"
        assert _normalised(defaults[name]) == _normalised(bundle), message
