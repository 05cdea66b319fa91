"""The phone's audio core: the seed's Device.audio, its sounds, output mixing.

* :mod:`appliance.audio.sounds` (pure): generated default sounds, decoding of
  custom ones, playback cursors.
* :mod:`appliance.audio.loader`: custom sounds from files and URLs, cached.
* :mod:`appliance.audio.mixer`: one mixer per output device; the call's
  bounded receive buffer; fan-out to several speakers.
* :mod:`appliance.audio.collection`: AudioDeviceInfo, AudioOutputCollection.
* :mod:`appliance.audio.helper`: AudioHelper, i.e. ``device.audio``.

Importing this package does not need pyalsaaudio: the ALSA backend is loaded
when an ``alsa:`` id is first used or devices are listed.
"""
