"""The web page's HTML, rendered from plain values (no I/O, no framework).

Server-rendered pages with one small stylesheet and no JavaScript: a desk
phone's page must work in any browser, and a page without scripts is also
one a Content-Security-Policy can lock down completely. Every value from
outside (identities, numbers, log lines) goes through :func:`html.escape`.
Every form carries the session's CSRF token as the hidden field ``csrf``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape

from appliance.calllog.core import Entry
from appliance.ui.view import PanelView
from appliance.ui.volume import volume_range

__all__ = [
    "STYLE",
    "VOLUME_NAMES",
    "call_row",
    "calls_page",
    "last_call_rows",
    "live_rows",
    "login_page",
    "logs_page",
    "message_page",
    "password_page",
    "settings_page",
    "setup_page",
    "status_page",
]

#: The settings page's label of each volume role (the form field's name).
VOLUME_NAMES = {"ringtone": "Ringer volume", "speaker": "Call volume"}

STYLE = """
body{font-family:sans-serif;margin:0;background:#f4f4f4;color:#222}
header{background:#234;color:#fff;padding:.6em 1em}
header a{color:#fff;margin-right:1.2em;text-decoration:none}
header form{display:inline}
main{padding:1em;max-width:48em}
table{border-collapse:collapse;background:#fff;width:100%}
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #ddd}
td,th{overflow-wrap:anywhere}
th{width:14em}
section{background:#fff;padding:.8em 1em;margin-bottom:1em}
.error{color:#a00;font-weight:bold}
.note{color:#555}
pre{background:#fff;padding:.6em;white-space:pre-wrap;font-size:85%}
button{padding:.3em 1em}
"""

_NAV = (
    ("/status", "Status"),
    ("/settings", "Settings"),
    ("/calls", "Call log"),
    ("/logs", "Logs"),
    ("/password", "Password"),
)


def _page(title: str, body: str, *, csrf: str | None = None) -> str:
    nav = ""
    if csrf is not None:
        links = "".join(f'<a href="{href}">{name}</a>' for href, name in _NAV)
        nav = (
            f"{links}<form method=post action=/logout>{_token(csrf)}"
            "<button id=logout>Log out</button></form>"
        )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} - desk phone</title>"
        '<link rel=stylesheet href="/style.css"></head><body>'
        f"<header><b>Desk phone</b> &nbsp; {nav}</header>"
        f"<main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )


def _token(csrf: str) -> str:
    return f'<input type=hidden name=csrf value="{escape(csrf)}">'


def _error(error: str) -> str:
    return f"<p class=error id=error role=alert>{escape(error)}</p>" if error else ""


def setup_page(csrf: str, error: str = "") -> str:
    """The first visit: choose the page's password."""
    body = (
        "<p>This phone's page has no password yet. Choose one now; it is "
        "needed for every later visit.</p>"
        f"{_error(error)}<form method=post action=/setup>{_token(csrf)}"
        "<p><label>Password <input type=password name=password id=password "
        "autocomplete=new-password required></label></p>"
        "<p><label>Again <input type=password name=repeat id=repeat "
        "autocomplete=new-password required></label></p>"
        "<p><button id=submit>Set the password</button></p></form>"
    )
    return _page("Set a password", body)


def login_page(csrf: str, error: str = "") -> str:
    """The login form."""
    body = (
        f"{_error(error)}<form method=post action=/login>{_token(csrf)}"
        "<p><label>Password <input type=password name=password id=password "
        "autocomplete=current-password required></label></p>"
        "<p><button id=submit>Log in</button></p></form>"
    )
    return _page("Log in", body)


def password_page(csrf: str, error: str = "", *, notice: str = "") -> str:
    """Change the page's password (the current one is needed)."""
    body = (
        f"{f'<p id=notice>{escape(notice)}</p>' if notice else ''}"
        f"{_error(error)}<form method=post action=/password>{_token(csrf)}"
        "<p><label>Current password <input type=password name=current "
        "id=current autocomplete=current-password required></label></p>"
        "<p><label>New password <input type=password name=password id=password "
        "autocomplete=new-password required></label></p>"
        "<p><label>Again <input type=password name=repeat id=repeat "
        "autocomplete=new-password required></label></p>"
        "<p><button id=submit>Change the password</button></p></form>"
        "<p class=note>Every other session is logged out; wrong current "
        "passwords count as wrong logins.</p>"
    )
    return _page("Password", body, csrf=csrf)


def message_page(title: str, text: str) -> str:
    """A page that only says something (restarting, refused)."""
    return _page(title, f"<p id=message>{escape(text)}</p>")


def _rows(rows: Iterable[tuple[str, str]]) -> str:
    return "".join(
        f'<tr><th>{escape(k)}</th><td id="{escape(_slug(k))}">{escape(v)}</td></tr>'
        for k, v in rows
    )


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def status_page(
    csrf: str, sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]
) -> str:
    """What the phone is doing, as labelled rows per section, and Restart."""
    body = "".join(
        f"<section><h2>{escape(name)}</h2><table>{_rows(rows)}</table></section>"
        for name, rows in sections
    )
    body += (
        f"<section><form method=post action=/restart>{_token(csrf)}"
        "<button id=restart>Restart the phone service</button> "
        "<span class=note>a call in progress is ended</span></form></section>"
    )
    return _page("Status", body, csrf=csrf)


def settings_page(
    csrf: str,
    *,
    volume: dict[str, int] | None,
    max_level: int,
    dnd: bool | None,
    dnd_mode: str,
    devices: Sequence[tuple[str, str, str]] = (),
    directory: Mapping[str, str] | None = None,
    directory_edited: bool = False,
    country: str = "",
    country_chosen: bool = False,
    countries: Sequence[str] = (),
    notice: str = "",
) -> str:
    """Volumes, do-not-disturb, audio devices, the directory and the tones'
    country (None: no front panel to set them on)."""
    if volume is None or dnd is None:
        body = (
            "<p class=note>The front panel is off (<code>ui.enabled</code>), so "
            "there are no volumes or do-not-disturb switch to set.</p>"
        )
        return _page("Settings", body, csrf=csrf)
    rows = ""
    for role, level in volume.items():
        lowest, _highest = volume_range(role)
        options = "".join(
            f"<option value={n}{' selected' if n == level else ''}>{n}</option>"
            for n in range(lowest, max_level + 1)
        )
        rows += (
            f"<tr><th><label for=level-{role}>{escape(VOLUME_NAMES.get(role, role))}"
            f"</label></th><td><select name={role} id=level-{role}>{options}"
            f"</select> of {max_level}</td></tr>"
        )
    body = (
        f"{f'<p id=notice>{escape(notice)}</p>' if notice else ''}"
        f"<section><h2>Volumes</h2><form method=post action=/settings/volume>"
        f"{_token(csrf)}<table>{rows}</table>"
        "<p><button id=save-volume>Apply</button></p></form></section>"
        "<section><h2>Do not disturb</h2>"
        f"<form method=post action=/settings/dnd>{_token(csrf)}"
        f"<p>Do-not-disturb is <b id=dnd-state>{'on' if dnd else 'off'}</b>; "
        f"calls are then {'declined as busy' if dnd_mode == 'busy' else 'ignored'}"
        " and still logged.</p>"
        f"<input type=hidden name=on value={'0' if dnd else '1'}>"
        f"<button id=toggle-dnd>Turn it {'off' if dnd else 'on'}</button>"
        "</form></section>"
    )
    if devices:
        rows = "".join(
            f"<tr><th>{escape(name)}</th><td>{escape(labels)}</td><td>"
            f"<form method=post action=/settings/test>{_token(csrf)}"
            f'<input type=hidden name=role value="{escape(role)}">'
            f"<button id=test-{escape(role)}>Test</button></form></td></tr>"
            for role, name, labels in devices
        )
        body += (
            "<section><h2>Audio devices</h2><table>"
            f"{rows}</table><p class=note>Test plays a short sound on the "
            "role's devices at its volume. The devices are chosen in the "
            "configuration (<code>[device]</code>, docs/audio.md).</p></section>"
        )
    body += _directory_section(csrf, directory or {}, directory_edited)
    body += _country_section(csrf, country, country_chosen, countries)
    return _page("Settings", body, csrf=csrf)


def _country_section(
    csrf: str, country: str, chosen: bool, countries: Sequence[str]
) -> str:
    options = "".join(
        f'<option value="{escape(code)}"{" selected" if code == country else ""}>'
        f"{escape(code)}</option>"
        for code in countries
    )
    where = (
        "Chosen here: kept in <code>ui.state_file</code> and used instead of "
        "<code>ui.country</code> from now on."
        if chosen
        else "From the configuration (<code>ui.country</code>); a choice here "
        "is kept in <code>ui.state_file</code> and used instead from then on."
    )
    return (
        "<section><h2>Country tones</h2>"
        f"<form method=post action=/settings/country>{_token(csrf)}"
        f"<p>Ring, dial tone and ringback of <b id=country>{escape(country)}</b>. "
        f"<label>Country <select name=country id=country-choice>{options}"
        "</select></label> <button id=save-country>Apply</button></p></form>"
        "<p class=note>The next ring and call tone use it (EU stands for the "
        f"CEPT tones). {where}</p></section>"
    )


def revert_page(
    csrf: str, edited: Mapping[str, str], configured: Mapping[str, str]
) -> str:
    """Asks before the edited directory gives way to ``[ui.directory]``."""
    rows = "".join(
        f"<tr><th>{escape(code)}</th><td>{escape(name)}</td></tr>"
        for code, name in sorted(configured.items())
    )
    body = (
        f"<p>The directory edited here ({len(edited)} "
        f"entr{'y' if len(edited) == 1 else 'ies'}) is dropped "
        "from <code>ui.state_file</code>, and the phone dials from "
        "<code>[ui.directory]</code> in the configuration again:</p>"
        f"<table id=configured>{rows or '<tr><td>No entries.</td></tr>'}</table>"
        f"<form method=post action=/settings/directory/revert>{_token(csrf)}"
        "<input type=hidden name=confirm value=1>"
        "<p><button id=confirm-revert>Revert to the configured directory</button> "
        "<a href=/settings id=cancel-revert>Cancel</a></p></form>"
    )
    return _page("Revert the directory?", body, csrf=csrf)


def _directory_section(csrf: str, directory: Mapping[str, str], edited: bool) -> str:
    rows = "".join(
        f"<tr><th>{escape(code)}</th><td>{escape(name)}</td><td>"
        f"<form method=post action=/settings/directory>{_token(csrf)}"
        f'<input type=hidden name=code value="{escape(code)}">'
        "<input type=hidden name=remove value=1>"
        f'<button id="remove-{escape(code)}">Remove</button></form></td></tr>'
        for code, name in sorted(directory.items())
    )
    where = (
        "Edited here: kept with the volumes in <code>ui.state_file</code>, and "
        "used instead of <code>[ui.directory]</code> from now on.</p>"
        "<p><a href=/settings/directory/revert id=revert-directory>Revert to "
        "the configured directory</a>"
        if edited
        else "From the configuration (<code>[ui.directory]</code>); an edit "
        "here is kept in <code>ui.state_file</code> and used instead from then "
        "on (the configuration file is not rewritten)."
    )
    return (
        "<section><h2>Directory and speed dials</h2>"
        f"<table id=directory>{rows or '<tr><td>No entries.</td></tr>'}</table>"
        f"<form method=post action=/settings/directory>{_token(csrf)}"
        "<p><label>Code <input name=code id=entry-code inputmode=numeric "
        "maxlength=32 required></label> <label>Client <input name=name "
        "id=entry-name maxlength=121 required></label> "
        "<button id=save-entry>Save</button></p></form>"
        "<p class=note>Dialling a code calls its client; saving "
        f"a code already there replaces it. {where}</p>"
        "</section>"
    )


def calls_page(csrf: str, rows: Sequence[tuple[str, str, str, str, str]]) -> str:
    """The call log: (when, kind, who, duration, quality) rows, newest first."""
    if not rows:
        return _page("Call log", "<p id=empty>No calls yet.</p>", csrf=csrf)
    lines = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    body = (
        "<table id=calls><tr><th>When</th><th>Kind</th><th>Who</th>"
        f"<th>Duration</th><th>MOS</th></tr>{lines}</table>"
    )
    return _page("Call log", body, csrf=csrf)


def logs_page(csrf: str, lines: Sequence[str]) -> str:
    """The service's recent log lines (secrets already redacted)."""
    text = "\n".join(lines) or "(nothing logged since the page started)"
    return _page("Recent logs", f"<pre id=logs>{escape(text)}</pre>", csrf=csrf)


def live_rows(view: PanelView) -> list[tuple[str, str]]:
    """The status rows of what the OLED shows of provisioning and updates."""
    rows = []
    if view.provisioning_code or view.provisioning_message:
        code = f"code {view.provisioning_code}" if view.provisioning_code else ""
        text = " - ".join(t for t in (code, view.provisioning_message) if t)
        rows.append(("Provisioning now", text))
    if view.update_status:
        progress = view.update_progress
        done = f" {progress:.0%}" if progress is not None else ""
        reason = f" ({view.update_reason})" if view.update_reason else ""
        text = f"{view.update_status} {view.update_version}{done}{reason}"
        rows.append(("Update now", text))
    return rows


def _when(entry: Entry) -> str:
    stamp = datetime.fromtimestamp(entry.started).strftime("%Y-%m-%d %H:%M")
    return stamp if entry.clock_known else f"{stamp} (clock unsynchronised)"


def _duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def call_row(entry: Entry) -> tuple[str, str, str, str, str]:
    """A call log entry as (when, kind, who, duration, MOS) texts."""
    mos = f"{entry.mos:.1f}" if entry.mos is not None else "-"
    return (
        _when(entry),
        str(entry.direction),
        entry.remote,
        _duration(entry.duration_s),
        mos,
    )


def last_call_rows(entry: Entry | None) -> list[tuple[str, str]]:
    """The status page's rows about the newest call."""
    if entry is None:
        return [("Call", "none yet")]
    when, kind, who, duration, mos = call_row(entry)
    jitter = "-" if entry.jitter_ms is None else f"{entry.jitter_ms:.1f} ms"
    loss = "-" if entry.loss_percent is None else f"{entry.loss_percent:.2f} %"
    return [
        ("Call", f"{kind} {who} at {when}, {duration}"),
        ("Codec", entry.codec or "-"),
        ("MOS", mos),
        ("Jitter", jitter),
        ("Packet loss", loss),
    ]
