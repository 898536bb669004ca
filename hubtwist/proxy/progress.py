"""
The start-up progress page: a browser that navigates to an app that is not running yet
gets, within L{PROGRESS_GRACE} seconds, a page with the app's name, the time it has been
waiting and the app's live log lines, instead of a blank tab for the whole start. The page
polls the app's state (C{_pages/progress/NAME} under hubtwist's own routes, L{progress_status})
and reloads itself into the app once it runs; when the start fails it shows why, the last
log lines and a retry button (C{POST api/servers/NAME/start}, or a reload).

Only page views get it (L{is_navigation}): scripts, C{fetch}/XHR, WebSocket handshakes
and anything that is not a GET keep waiting for the app's real answer, as before.
"""

from __future__ import annotations

from hubtwist.proxy.look import XSRF_JS, esc, page, set_page_headers
from hubtwist.supervise.states import State

PROGRESS_GRACE = 0.4
"""Seconds a page view waits for the app before it gets the progress page instead: apps
that start faster than this never show it."""

LOG_LINES = 60
"""How many of the app's last log lines the page shows."""

_FAILED = {
    State.FATAL: "failed to start repeatedly; hubtwist stopped trying",
    State.EXITED: "exited and is not restarted",
    State.STOPPED: "is stopped",
    State.STOPPING: "is being stopped",
}


def is_navigation(method: bytes, accept: bytes | None, fetch_mode: bytes | None,
                  upgrade_insecure: bytes | None, requested_with: bytes | None) -> bool:
    """
    Is this request a browser's page view, which may get the progress page? A GET that
    accepts C{text/html}, is no XHR, and is a navigation: C{Sec-Fetch-Mode: navigate}, or,
    from browsers too old to send C{Sec-Fetch-*}, no C{Sec-Fetch-Mode} but
    C{Upgrade-Insecure-Requests} (which every browser sends on page loads and scripts do
    not). C{fetch}/XHR (C{cors}, C{same-origin}, C{no-cors}) and WebSocket handshakes
    (C{websocket}) never are.
    """
    if method != b"GET" or requested_with is not None:
        return False
    if b"text/html" not in (accept or b"").lower():
        return False
    if fetch_mode is not None:
        return fetch_mode.strip().lower() == b"navigate"
    return upgrade_insecure is not None


def wants_progress_page(request) -> bool:
    """L{is_navigation} for a twisted.web request."""
    get = request.getHeader
    return is_navigation(request.method, get(b"accept"), get(b"sec-fetch-mode"),
                         get(b"upgrade-insecure-requests"), get(b"x-requested-with"))


def progress_status(name: str, keeper, reason: str | None = None) -> dict:
    """
    What the progress page shows of app C{name}: its state, whether the start failed
    (and why: C{reason} when the caller knows it, else what the state says), and its last
    log lines. Never anything else of the app (no environment, no command line beyond what
    it printed itself).
    """
    state = keeper.state
    failed = reason is not None or state in _FAILED
    error = None
    if failed:
        error = f"The app {name!r} {reason or _FAILED[state]}."
    return {
        "name": name,
        "state": state.value,
        "failed": failed,
        "error": error,
        "restarts": keeper.restarts,
        "logs": [{"stream": line.stream, "text": line.text}
                 for line in keeper.logs.tail(LOG_LINES)],
    }


def title_of(name: str, keeper) -> str:
    """The app's launcher title, or its name."""
    entry = getattr(keeper.config, "launcher_entry", None)
    return (entry.title if entry is not None else "") or name


def progress_page(name: str, keeper, own_root: str, reason: str | None = None) -> bytes:
    """The progress page's HTML (its data: L{progress_status} and the own routes' root)."""
    status = progress_status(name, keeper, reason)
    title = title_of(name, keeper)
    log = "\n".join(f"[{line['stream']}] {line['text']}" for line in status["logs"])
    failed = status["failed"]
    headline = f"{title} could not start" if failed else f"Starting {title}\u2026"
    body = (
        f'<main id="main" class="{"failed" if failed else ""}">'
        f'<p class="status"><span class="spinner"></span>'
        f'<span class="badge {"failed" if failed else esc(status["state"])}" id="state">'
        f'{esc(status["state"])}</span> <span id="elapsed"></span></p>'
        f'<h1 id="headline">{esc(headline)}</h1>'
        f'<p class="detail note" id="error">{esc(status["error"] or "")}</p>'
        f'<p class="row{"" if failed else " hidden"}" id="actions">'
        f'<button class="primary" id="retry" type="button">Retry</button></p>'
        f'<h2>Log</h2><pre id="log">{esc(log)}</pre>'
        f'<footer><span id="hint" class="{"hidden" if failed else ""}">This page moves on '
        'to the app as soon as it is ready. </span>hubtwist</footer></main>'
    )
    data = {"name": name, "title": title, "own_root": own_root, "status": status}
    return page(headline, body, script=PROGRESS_JS, data=data)


def send_progress_page(request, name: str, keeper, own_root: str,
                       reason: str | None = None) -> None:
    """Finish C{request} with the progress page: 503 (the app is not there yet, and
    scripts that get it anyway must not take it for the app's answer) with
    C{Retry-After}."""
    body = progress_page(name, keeper, own_root, reason)
    request.setResponseCode(503)
    request.setHeader(b"retry-after", b"2")
    set_page_headers(request, PROGRESS_JS)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


PROGRESS_JS = XSRF_JS + """
(function(){
"use strict";
const d=JSON.parse(document.getElementById("ht-data").textContent);
const $=id=>document.getElementById(id);
const statusUrl=d.own_root+"_pages/progress/"+encodeURIComponent(d.name);
let since=Date.now(), failed=false, polling=false;
function show(s){
  failed=!!s.failed;
  const badge=$("state");
  badge.textContent=s.state;
  badge.className="badge "+(failed?"failed":s.state);
  const pre=$("log");
  const atEnd=pre.scrollTop+pre.clientHeight>=pre.scrollHeight-8;
  pre.textContent=s.logs.map(l=>"["+l.stream+"] "+l.text).join("\\n");
  if(atEnd)pre.scrollTop=pre.scrollHeight;
  $("main").classList.toggle("failed",failed);
  $("error").textContent=s.error||"";
  $("actions").classList.toggle("hidden",!failed);
  $("hint").classList.toggle("hidden",failed);
  if(failed)$("elapsed").textContent="";
  $("headline").textContent=failed?d.title+" could not start":"Starting "+d.title+"\\u2026";
  document.title=$("headline").textContent;
}
function tick(){
  if(!failed)$("elapsed").textContent="waiting "+Math.floor((Date.now()-since)/1000)+" s";
}
async function poll(){
  if(failed){polling=false;return;}
  polling=true;
  try{
    const r=await fetch(statusUrl,{headers:Object.assign({"Accept":"application/json"},xsrfHeaders()),
                                   cache:"no-store",credentials:"same-origin"});
    if(r.ok){
      const s=await r.json();
      if(s.state==="running"){$("headline").textContent="Opening "+d.title+"\\u2026";location.reload();return;}
      show(s);
    }
  }catch(e){}
  setTimeout(poll,500);
}
async function retry(){
  const button=$("retry");
  button.disabled=true;
  try{
    const r=await fetch(d.own_root+"api/servers/"+encodeURIComponent(d.name)+"/start",
      {method:"POST",headers:Object.assign({"Accept":"application/json"},xsrfHeaders()),
       credentials:"same-origin"});
    if(!r.ok&&r.status!==409){location.reload();return;}
  }catch(e){location.reload();return;}
  button.disabled=false;
  since=Date.now();
  show(Object.assign({},d.status,{state:"starting",failed:false,error:null,logs:[]}));
  if(!polling)poll();
}
$("retry").addEventListener("click",retry);
show(d.status);
tick();setInterval(tick,1000);
poll();
})();
"""
