"""
The look shared by every HTML page hubtwist writes itself (launcher, start-up progress,
error pages): one inline style sheet, no external assets (no CDN, no fonts), and a
Content-Security-Policy that lets exactly that style and the page's own inline script
run, by hash, and nothing else.

Everything untrusted (app names, titles, log lines, error messages) goes through L{esc}
into the HTML, or through L{data_block} into a JSON data block the script reads; pages
never build markup from strings in JavaScript (the scripts set C{textContent}).

This module is in C{proxy} because the proxy writes error and progress pages and must
not import C{web}; C{web} uses it for the launcher.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json

STYLE = """
:root{--bg:#f6f7f9;--fg:#1d2330;--muted:#5d6675;--card:#fff;--line:#dde1e7;--accent:#2f6fdf;
--ok:#1c8a4a;--warn:#b7791f;--bad:#c53030;--idle:#6b7280;--pre:#0f1420;--pre-fg:#d8dee9}
@media (prefers-color-scheme:dark){:root{--bg:#12151b;--fg:#e6e9ef;--muted:#9aa3b2;
--card:#1b2029;--line:#2c3340;--accent:#6ea0ff;--pre:#0b0e14}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:64rem;margin:0 auto;padding:2rem 1.25rem 3rem}
h1{font-size:1.6rem;margin:0 0 1.25rem}
h2{font-size:1.05rem;margin:1.5rem 0 .5rem}
a{color:var(--accent)}
.status{font-size:.95rem;color:var(--muted);margin:0 0 .25rem;font-variant-numeric:tabular-nums}
.detail{font-size:1.05rem;margin:.5rem 0 1rem;overflow-wrap:anywhere}
.apps{list-style:none;margin:0;padding:0;display:grid;gap:1rem;
grid-template-columns:repeat(auto-fill,minmax(15rem,1fr))}
.app{background:var(--card);border:1px solid var(--line);border-radius:.75rem;padding:1rem;
display:flex;flex-direction:column;gap:.75rem;min-width:0}
.app-head{display:flex;align-items:center;gap:.75rem;min-width:0;text-decoration:none;color:inherit}
.app-head:hover .app-title{text-decoration:underline}
.icon{width:3rem;height:3rem;flex:none;border-radius:.6rem;object-fit:contain}
.letter{display:flex;align-items:center;justify-content:center;background:var(--accent);
color:#fff;font-weight:600;font-size:1.4rem}
.app-title{font-weight:600;font-size:1.05rem;overflow-wrap:anywhere}
.app-name{color:var(--muted);font-size:.85rem;overflow-wrap:anywhere}
.row{display:flex;align-items:center;gap:.5rem;flex-wrap:wrap}
.badge{display:inline-block;border-radius:999px;padding:.05rem .6rem;font-size:.8rem;
font-weight:600;color:#fff;background:var(--idle)}
.badge.running{background:var(--ok)}
.badge.starting,.badge.backoff,.badge.stopping{background:var(--warn)}
.badge.fatal,.badge.exited,.badge.failed{background:var(--bad)}
.spacer{flex:1}
button,.button{font:inherit;font-size:.85rem;border:1px solid var(--line);background:var(--card);
color:var(--fg);border-radius:.45rem;padding:.3rem .8rem;cursor:pointer;text-decoration:none}
button:hover,.button:hover{border-color:var(--accent)}
button:disabled{opacity:.5;cursor:default}
button.primary,.button.primary{background:var(--accent);border-color:var(--accent);color:#fff}
.note{color:var(--bad);font-size:.85rem;overflow-wrap:anywhere}
.note:empty{display:none}
pre{background:var(--pre);color:var(--pre-fg);padding:1rem;border-radius:.5rem;overflow:auto;
font-size:.8rem;line-height:1.45;max-height:60vh;white-space:pre-wrap;overflow-wrap:anywhere}
pre:empty::before{content:"(no output yet)";color:var(--muted)}
.spinner{display:inline-block;width:1rem;height:1rem;border:2px solid var(--line);
border-top-color:var(--accent);border-radius:50%;animation:spin .8s linear infinite;
vertical-align:-.15rem;margin-right:.4rem}
.failed .spinner{display:none}
@keyframes spin{to{transform:rotate(1turn)}}
.hidden{display:none}
footer{margin-top:2rem;color:var(--muted);font-size:.8rem}
"""


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


_STYLE_HASH = _hash(STYLE)


def csp(script: str | None = None) -> bytes:
    """The Content-Security-Policy of a page with L{STYLE} and the inline C{script}: no
    other script or style, images and requests only from the same origin, no forms to
    elsewhere, no framing by other sites."""
    script_src = _hash(script) if script else "'none'"
    return (f"default-src 'none'; style-src {_STYLE_HASH}; script-src {script_src}; "
            "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'self'").encode()


def esc(text: object) -> str:
    """C{text} escaped for HTML text and (double- or single-quoted) attribute values."""
    return html.escape(str(text), quote=True)


def data_block(value: object, element_id: str = "ht-data") -> str:
    """C{value} as a JSON data block (C{<script type="application/json">}, which is never
    executed, so the CSP need not allow it). C{<}, C{>} and C{&} are written as escapes, so
    no string in it can end the element."""
    text = (json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def page(title: str, body: str, *, script: str | None = None, data: object = None) -> bytes:
    """A whole page: C{title} (plain text, escaped here), C{body} (HTML, already escaped by
    the caller), an optional JSON C{data} block and inline C{script}."""
    parts = [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        '<meta name="referrer" content="same-origin">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>",
        body,
    ]
    if data is not None:
        parts.append(data_block(data))
    if script:
        parts.append(f"<script>{script}</script>")
    parts.append("</body></html>\n")
    return "".join(parts).encode()


def set_page_headers(request, script: str | None = None) -> None:
    """The headers of every own HTML page: type, CSP, no sniffing, no caching."""
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    request.setHeader(b"content-security-policy", csp(script))
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"cache-control", b"no-store")


XSRF_JS = """
function xsrfHeaders(){const m=document.cookie.match(/(?:^|;\\s*)_xsrf=([^;]*)/);
return m?{"X-XSRFToken":decodeURIComponent(m[1])}:{};}
"""
"""JavaScript shared by the pages' scripts: the headers that carry the C{_xsrf} cookie's
value back (the Hub gate's XSRF rule for cookie-authenticated requests that are not page
views; nothing when there is no such cookie)."""
