"""Development tools for the desk-phone firmware; never installed on a phone.

* :mod:`appliance_dev.sim`: the whole phone on a desktop (``appliance sim``),
  drawn by :mod:`appliance_dev.terminal`; :mod:`appliance_dev.screen_samples`
  holds every screen with sample data (``--export-screens``).
* :mod:`appliance_dev.demo`: a real call between two phones (``appliance demo``).
* :mod:`appliance_dev.agent`: one phone driven by JSON lines (``appliance phone``).
* :mod:`appliance_dev.rig`: clocked virtual sound cards (PulseAudio null sinks);
  :mod:`appliance_dev.analysis` makes the material played into them and judges
  the recordings.
* :mod:`appliance_dev.exchange_process`: the exchange as a child process.
* :mod:`appliance_dev.dtmf_detect`: an ITU-T Q.24 DTMF detector for tests.
"""
