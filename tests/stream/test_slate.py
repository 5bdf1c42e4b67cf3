import numpy as np
from PIL import Image

from stream.source.slate import Slate, SlateSettings


def test_slate_shows_its_text_and_a_live_clock(tmp_path):
    slate = Slate(320, 180, SlateSettings(text="Back in a minute"))
    first, second = slate.frame(1_700_000_000.0), slate.frame(1_700_000_001.0)
    assert (first.width, first.height, first.format.name) == (320, 180, "yuv420p")
    luma_first, luma_second = first.to_ndarray()[:180], second.to_ndarray()[:180]
    assert (luma_first != luma_second).any()  # the burned-in clock moves: not a frozen player


def test_slate_uses_the_configured_image(tmp_path):
    image = tmp_path / "brand.png"
    Image.new("RGB", (64, 36), (250, 250, 250)).save(image)
    bright = Slate(320, 180, SlateSettings(text="", image=image)).frame(0.0).to_ndarray()[:100]
    dark = Slate(320, 180, SlateSettings(text="")).frame(0.0).to_ndarray()[:100]
    assert np.mean(bright) > 200 > np.mean(dark) + 100
