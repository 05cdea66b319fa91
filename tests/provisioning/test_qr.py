"""The provisioning screen's QR code scans: rendered as the OLED shows it,
scaled up as a camera would see it, and decoded by zbar (``zbarimg``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from luma.core.device import dummy
from PIL import Image

from appliance.ui.screens import HEIGHT, WIDTH, render
from appliance.ui.view import PanelView, Screen


def decode(image: Image.Image, tmp_path: Path) -> list[str]:
    """Every QR code zbar finds in ``image`` scaled 8x."""
    zbarimg = shutil.which("zbarimg")
    assert zbarimg, "zbarimg missing: install zbar-tools (image/packages-build.txt)"
    big = image.convert("L").resize(
        (image.width * 8, image.height * 8), Image.Resampling.NEAREST
    )
    path = tmp_path / "frame.png"
    big.save(path)
    result = subprocess.run(
        [zbarimg, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.splitlines()


def oled_frame(uri: str) -> Image.Image:
    device = dummy(width=WIDTH, height=HEIGHT, mode="1")
    device.display(
        render(
            PanelView(
                Screen.PROVISIONING, provisioning_code="BCDF-GHJK", provisioning_uri=uri
            )
        )
    )
    return device.image


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:8470/device?user_code=BCDF-GHJK",
        # Longer than version 3 holds: drawn with 1 px modules, still scans.
        "https://provisioning.phones.example.com:8443/device?user_code=BCDF-GHJK",
    ],
)
def test_the_oled_qr_code_decodes_to_the_verification_uri(uri, tmp_path):
    assert decode(oled_frame(uri), tmp_path) == [uri]


def test_a_garbled_frame_does_not_decode(tmp_path):
    # The decoder really looks at the pixels: a code with its finder
    # pattern erased is not read.
    frame = oled_frame("http://127.0.0.1:8470/device?user_code=BCDF-GHJK")
    for x in range(0, 20):
        for y in range(0, 20):
            frame.putpixel((x, y), 255)
    assert decode(frame, tmp_path) == []
