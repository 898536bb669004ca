"""
The launcher page (hubtwist's own root when no app owns the base URL, C{_hubtwist/}
otherwise): one card per app with its icon, title, state and start/restart buttons. The
state stays live: the page polls C{api/servers} every few seconds. The buttons call
C{POST api/servers/NAME/start|restart} with the C{_xsrf} cookie's value as
C{X-XSRFToken} (the Hub gate's rule for cookie-authenticated requests).

Also here: the apps' icons (C{_pages/icon/NAME}, only the files configured as
C{launcher_entry.icon_path}) and the progress page's state (C{_pages/progress/NAME}).
"""

from __future__ import annotations

import json
import os
import stat
from typing import Mapping

from hubtwist.proxy.errors import send_error
from hubtwist.proxy.look import XSRF_JS, esc, page, set_page_headers
from hubtwist.proxy.progress import progress_status, title_of

ICON_TYPES = {
    ".svg": b"image/svg+xml", ".png": b"image/png", ".gif": b"image/gif", ".jpg": b"image/jpeg",
    ".jpeg": b"image/jpeg", ".webp": b"image/webp", ".ico": b"image/x-icon",
}
MAX_ICON = 1 << 20
"""Icons larger than this are not served (they are a mistake, or not an icon)."""

ICON_CSP = b"default-src 'none'; style-src 'unsafe-inline'; sandbox"
"""An SVG opened on its own is a document that could run script: this keeps it inert."""


def launcher_apps(config, keepers: Mapping[str, object]) -> list[dict]:
    """The launcher's entries, in configuration order: the apps whose launcher entry is
    enabled, with what the page shows of them."""
    apps = []
    for name, keeper in keepers.items():
        entry = keeper.config.launcher_entry
        if not entry.enabled:
            continue
        apps.append({
            "name": name,
            "title": entry.title or name,
            "url": config.base_url + (entry.path_info or f"{name}/"),
            "state": keeper.state.value,
            "external": keeper.config.is_external,
            "icon": icon_file(keeper) is not None,
            "new_tab": keeper.config.new_browser_tab,
        })
    return apps


def icon_file(keeper) -> tuple[str, bytes] | None:
    """The app's configured icon file and its content type, or None (no icon, or a type
    that is not an image)."""
    path = keeper.config.launcher_entry.icon_path
    if not path:
        return None
    content_type = ICON_TYPES.get(os.path.splitext(path)[1].lower())
    return (path, content_type) if content_type is not None else None


def _card(app: dict, own_root: str) -> str:
    name = esc(app["name"])
    if app["icon"]:
        icon = f'<img class="icon" alt="" src="{esc(own_root)}_pages/icon/{name}">'
    else:
        icon = f'<span class="icon letter" aria-hidden="true">{esc(app["title"][:1].upper())}</span>'
    target = ' target="_blank" rel="noopener"' if app["new_tab"] else ""
    buttons = ""
    if not app["external"]:
        buttons = ('<span class="spacer"></span>'
                   '<button type="button" data-action="start">Start</button>'
                   '<button type="button" data-action="restart">Restart</button>')
    return (
        f'<li class="app" data-app="{name}">'
        f'<a class="app-head" href="{esc(app["url"])}"{target}>{icon}'
        f'<span><span class="app-title">{esc(app["title"])}</span><br>'
        f'<span class="app-name">{esc(app["url"])}</span></span></a>'
        f'<div class="row"><span class="badge {esc(app["state"])}" data-state>'
        f'{esc(app["state"])}</span>{buttons}</div>'
        '<div class="note" data-note></div></li>'
    )


def launcher_page(apps: list[dict], own_root: str, version: str) -> bytes:
    """The launcher page's HTML for L{launcher_apps}' C{apps}."""
    cards = "\n".join(_card(app, own_root) for app in apps)
    listing = (f'<ul class="apps">{cards}</ul>' if apps
               else '<p class="detail">No apps are configured.</p>')
    body = (f"<main><h1>Apps</h1>{listing}"
            f'<footer>hubtwist {esc(version)}</footer></main>')
    return page("Apps \u2014 hubtwist", body, script=LAUNCHER_JS,
                data={"own_root": own_root, "apps": apps})


def render_launcher(request, config, keepers: Mapping[str, object], own_root: str,
                    version: str) -> bytes:
    """The launcher page as a render result (with its headers set on C{request})."""
    body = launcher_page(launcher_apps(config, keepers), own_root, version)
    set_page_headers(request, LAUNCHER_JS)
    return body


def send_icon(request, keepers: Mapping[str, object], name: str) -> bytes | None:
    """The icon of app C{name} as a render result (None when an error page was sent):
    only a configured icon file, with its image type, inert even when opened on its own."""
    keeper = keepers.get(name)
    icon = icon_file(keeper) if keeper is not None else None
    if icon is None:
        send_error(request, 404, "No such icon", f"No icon is configured for {name!r}.")
        return None
    path, content_type = icon
    try:
        # Regular files only: opening a FIFO would block the reactor.
        if not os.path.isfile(path):
            raise OSError("not a regular file")
        with open(path, "rb", buffering=0) as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ICON:
                raise OSError("not a regular file of at most 1 MiB")
            data = file.read(MAX_ICON)
    except OSError:
        send_error(request, 404, "No such icon",
                   f"The icon of {name!r} cannot be read (launcher_entry.icon_path).")
        return None
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-security-policy", ICON_CSP)
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"cache-control", b"private, max-age=300")
    return data


def send_progress_status(request, keepers: Mapping[str, object], name: str) -> bytes | None:
    """The progress page's poll: L{progress_status} of app C{name} as JSON."""
    keeper = keepers.get(name)
    if keeper is None:
        send_error(request, 404, "No such app", f"No app is called {name!r}.")
        return None
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    status = progress_status(name, keeper)
    status["title"] = title_of(name, keeper)
    return json.dumps(status).encode()


LAUNCHER_JS = XSRF_JS + """
(function(){
"use strict";
const d=JSON.parse(document.getElementById("ht-data").textContent);
const cards={};
document.querySelectorAll("[data-app]").forEach(el=>{cards[el.dataset.app]=el;});
function setState(name,state){
  const card=cards[name];
  if(!card)return;
  const badge=card.querySelector("[data-state]");
  badge.textContent=state;
  badge.className="badge "+state;
  const start=card.querySelector('[data-action="start"]');
  const restart=card.querySelector('[data-action="restart"]');
  const stopped=["stopped","exited","fatal"].includes(state);
  if(start)start.classList.toggle("hidden",!stopped);
  if(restart)restart.classList.toggle("hidden",stopped);
}
function servers(data){
  const list=data&&data.servers;
  if(Array.isArray(list))return list;
  return Object.entries(list||{}).map(([name,s])=>Object.assign({name:name},s));
}
async function refresh(){
  try{
    const r=await fetch(d.own_root+"api/servers",{headers:Object.assign({"Accept":"application/json"},
      xsrfHeaders()),cache:"no-store",credentials:"same-origin"});
    if(r.ok)servers(await r.json()).forEach(s=>setState(s.name,s.state));
  }catch(e){}
}
async function act(name,action,button){
  const note=cards[name].querySelector("[data-note]");
  note.textContent="";
  button.disabled=true;
  try{
    const r=await fetch(d.own_root+"api/servers/"+encodeURIComponent(name)+"/"+action,
      {method:"POST",headers:Object.assign({"Accept":"application/json"},xsrfHeaders()),
       credentials:"same-origin"});
    let body=null;
    try{body=await r.json();}catch(e){}
    if(!r.ok){note.textContent=action+" failed: "+((body&&(body.message||body.error))||("HTTP "+r.status));}
    else if(body&&body.state){setState(name,body.state);}
  }catch(e){note.textContent=action+" failed: "+e;}
  button.disabled=false;
  refresh();
}
Object.entries(cards).forEach(([name,card])=>{
  card.querySelectorAll("[data-action]").forEach(button=>{
    button.addEventListener("click",()=>act(name,button.dataset.action,button));
  });
});
d.apps.forEach(a=>setState(a.name,a.state));
setInterval(()=>{if(!document.hidden)refresh();},3000);
document.addEventListener("visibilitychange",()=>{if(!document.hidden)refresh();});
})();
"""
