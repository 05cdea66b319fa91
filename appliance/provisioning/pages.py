"""HTML of the approval page: small, script-free pages built with ``html.escape``.

No JavaScript and no external resources, so the Content-Security-Policy can
be ``default-src 'none'`` and a phone's browser renders them as they are.
Every form carries the session's CSRF token in a hidden field.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

from appliance.provisioning.grant import PendingGrant
from appliance.provisioning.store import Phone

__all__ = ["device_page", "done_page", "login_page", "phones_page"]

_STYLE = """
body{font-family:sans-serif;max-width:40em;margin:1em auto;padding:0 1em}
input,button{font-size:1.1em;margin:.2em 0}
table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2em .5em}
.error{color:#a00}.code{font-family:monospace;font-size:1.5em}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _page(title: str, body: str, *, nav: bool = True) -> str:
    links = (
        '<p><a href="/device">Enter a code</a> · <a href="/admin">Phones</a></p>'
        if nav
        else ""
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{_e(title)}</h1>{links}{body}</body></html>"
    )


def _csrf(token: str) -> str:
    return f"<input type='hidden' name='csrf' value='{_e(token)}'>"


def _error(message: str) -> str:
    return f"<p class='error' id='error'>{_e(message)}</p>" if message else ""


def login_page(csrf: str, next_url: str, error: str = "") -> str:
    """The login form."""
    return _page(
        "Phone provisioning: log in",
        _error(error) + "<form method='post' action='/login'>"
        f"{_csrf(csrf)}<input type='hidden' name='next' value='{_e(next_url)}'>"
        "<label>Admin password <input type='password' name='password' "
        "id='password' autocomplete='current-password' autofocus></label><br>"
        "<button type='submit' id='login'>Log in</button></form>",
        nav=False,
    )


def device_page(
    csrf: str, user_code: str, pending: PendingGrant | None, error: str = ""
) -> str:
    """Enter a code, or (``pending``) confirm it: identity, name, approve/deny."""
    if pending is None:
        return _page(
            "Enroll a phone",
            _error(error) + "<form method='post' action='/device'>"
            f"{_csrf(csrf)}<label>Code shown on the phone "
            f"<input name='user_code' id='user_code' value='{_e(user_code)}' "
            "autocomplete='off' autocapitalize='characters'></label><br>"
            "<button type='submit' id='continue'>Continue</button></form>",
        )
    about = f" ({_e(pending.client_info)})" if pending.client_info else ""
    return _page(
        "Enroll a phone",
        _error(error)
        + f"<p>Code <span class='code' id='code'>{_e(pending.user_code)}</span>"
        f"{about}. Approve only if this code is on the phone in front of you.</p>"
        "<form method='post' action='/device/decide'>"
        f"{_csrf(csrf)}<input type='hidden' name='user_code' "
        f"value='{_e(pending.user_code)}'>"
        "<label>Identity (client name) <input name='identity' id='identity' "
        "pattern='[A-Za-z0-9_.\\-]{1,121}'></label><br>"
        "<label>Directory name (optional) <input name='name' id='name'></label><br>"
        "<button type='submit' name='action' value='approve' id='approve'>"
        "Approve</button> "
        "<button type='submit' name='action' value='deny' id='deny'>Deny</button>"
        "</form>",
    )


def done_page(message: str) -> str:
    """The result of a decision."""
    return _page("Enroll a phone", f"<p id='result'>{_e(message)}</p>")


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def phones_page(
    csrf: str,
    phones: Sequence[Phone],
    pending: Sequence[PendingGrant],
    error: str = "",
) -> str:
    """Every phone, with rename and revoke forms; codes waiting for approval."""
    rows = []
    for p in phones:
        state = f"revoked {_when(p.revoked_at)}" if p.revoked else "active"
        revoke = (
            ""
            if p.revoked
            else "<form method='post' action='/admin/revoke'>"
            f"{_csrf(csrf)}<input type='hidden' name='sid' value='{_e(p.sid)}'>"
            "<button type='submit'>Revoke</button></form>"
        )
        rows.append(
            f"<tr class='phone' data-sid='{_e(p.sid)}'><td>{_e(p.identity)}</td>"
            "<td><form method='post' action='/admin/rename'>"
            f"{_csrf(csrf)}<input type='hidden' name='sid' value='{_e(p.sid)}'>"
            f"<input name='name' value='{_e(p.name)}'>"
            "<button type='submit'>Rename</button></form></td>"
            f"<td class='state'>{_e(state)}</td><td>{_e(_when(p.last_token_at))}</td>"
            f"<td>{revoke}</td></tr>"
        )
    table = (
        "<table id='phones'><tr><th>Identity</th><th>Name</th><th>State</th>"
        "<th>Last token</th><th></th></tr>" + "".join(rows) + "</table>"
        if rows
        else "<p id='phones'>No phones enrolled yet.</p>"
    )
    waiting = "".join(
        f"<li><a href='/device?user_code={_e(g.user_code)}'>{_e(g.user_code)}</a>"
        f" {_e(g.client_info)}</li>"
        for g in pending
    )
    return _page(
        "Phones",
        _error(error)
        + table
        + (
            f"<h2>Waiting for approval</h2><ul id='pending'>{waiting}</ul>"
            if waiting
            else ""
        )
        + "<form method='post' action='/logout'>"
        f"{_csrf(csrf)}<button type='submit'>Log out</button></form>",
    )
