"""Settings given to the Panel from elsewhere (the web page): the same
commands as the keys, so the controller applies and saves them the same way."""

from __future__ import annotations

import pytest

from appliance.ui.commands import SetDnd, SetVolume
from appliance.ui.panel import Panel
from appliance.ui.volume import VOLUME_MAX_LEVEL, volume_gain


def test_a_volume_level_set_from_elsewhere_is_a_set_volume_command() -> None:
    panel = Panel()
    panel.set_volume_level("ringtone", 2, 1.0)
    assert panel.commands_to_send() == [SetVolume("ringtone", 2, volume_gain(2))]
    assert panel.volume_levels()["ringtone"] == 2
    panel.set_volume_level("ringtone", 2, 2.0)
    assert panel.commands_to_send() == []  # no change, nothing to save


def test_levels_are_clamped_as_the_keys_clamp_them() -> None:
    panel = Panel()
    panel.set_volume_level("speaker", 0, 1.0)  # a call never goes silent
    panel.set_volume_level("ringtone", 99, 1.0)
    assert panel.volume_levels() == {"speaker": 1, "ringtone": VOLUME_MAX_LEVEL}
    with pytest.raises(ValueError, match="no volume role"):
        panel.set_volume_level("doorbell", 3, 1.0)


def test_dnd_chosen_from_elsewhere_is_a_set_dnd_command_once() -> None:
    panel = Panel()
    panel.choose_dnd(True, 1.0)
    assert panel.dnd
    assert panel.commands_to_send() == [SetDnd(True)]
    panel.choose_dnd(True, 2.0)
    assert panel.commands_to_send() == []
    panel.choose_dnd(False, 3.0)
    assert panel.commands_to_send() == [SetDnd(False)]
