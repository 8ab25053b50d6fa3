"""``image_size`` has one source: the phantoms the bundle generates follow the network's size instead of being made
at 64 pixels and silently resized."""

import pytest
from monai.bundle import ConfigParser

from tiny_bundle import CONFIGS


@pytest.mark.parametrize(
    ("configs", "overrides", "expected"),
    [
        (["train.json"], {}, 64),
        (["train.json"], {"image_size": 128}, 128),
        (["train.json", "reference.json"], {}, 256),
    ],
)
def test_the_generated_phantoms_follow_image_size(configs, overrides, expected):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in configs])
    parser.update(overrides)
    assert parser.get_parsed_content("image_size") == expected
    assert parser.get_parsed_content("phantoms")["image_size"] == expected
