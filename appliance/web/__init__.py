"""The phone's own web page: status, settings, call log, logs and restart.

A desk phone is looked after from a browser on the office LAN. The page is
split like the rest of the firmware: :mod:`appliance.web.guard` decides
(passwords, sessions, CSRF tokens, the login rate limit; time is an input),
:mod:`appliance.web.pages` renders HTML from plain values, and
:mod:`appliance.web.server` is the aiohttp adapter the composition root
starts with :func:`~appliance.web.server.start_web`. See docs/web.md.
"""
