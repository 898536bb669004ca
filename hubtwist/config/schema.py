"""
The configuration schema: the single source of truth for every key hubtwist reads.

Each model is a frozen attrs class whose fields carry their value kind and their
documentation in C{metadata}. L{build} checks raw values (TOML tables, a jupyter-server-proxy
dict, CLI flags) against it, and L{hubtwist.config.docs} renders docs/configuration.md from it.
"""

from __future__ import annotations

import difflib
import os
import re
import urllib.parse
from typing import Any

import attrs

from hubtwist.config import kinds
from hubtwist.config.errors import ConfigError
from hubtwist.config.templates import check_template, uses

# Paths hubtwist answers itself under its base URL; a server cannot take these names.
OWN_SEGMENT = "_hubtwist"
"""Where hubtwist's own routes live when an app owns the base URL (see hubtwist.router)."""
RESERVED_NAMES = frozenset({"api", "proxy", "metrics", "oauth_callback", "logout", OWN_SEGMENT})
DEFAULT_LISTEN = "tcp:8888:interface=127.0.0.1"


def setting(kind: kinds.Kind, default: Any, doc: str, **extra: Any) -> Any:
    """An attrs field that the loader checks with C{kind} and the docs describe with C{doc}."""
    if isinstance(default, (dict, list)):
        factory = default.copy
        return attrs.field(factory=factory, metadata={"kind": kind, "doc": doc, **extra})
    return attrs.field(default=default, metadata={"kind": kind, "doc": doc, **extra})


@attrs.frozen
class Table:
    """A nested table checked against another model."""

    model: type

    def coerce(self, value: object, path: str) -> Any:
        if isinstance(value, self.model):
            return value
        if not isinstance(value, dict):
            raise ConfigError(path, "must be a table", given=value, has_given=True,
                              accepted=self.describe())
        return build(self.model, value, path)

    def describe(self) -> str:
        return f"a table (see [{self.model.__name__}](#{self.model.__name__.lower()}))"


_SERVER_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"


@attrs.frozen
class ServerMap:
    """The C{[servers.NAME]} tables: URL-safe names, each a L{ServerConfig}."""

    def coerce(self, value: object, path: str) -> dict[str, "ServerConfig"]:
        if not isinstance(value, dict):
            raise ConfigError(path, "must be a table of servers", given=value, has_given=True,
                              accepted=self.describe())
        servers = {}
        for name, table in value.items():
            if not isinstance(name, str) or not re.fullmatch(_SERVER_NAME, name):
                raise ConfigError(
                    f"{path}.{name}", "is not a usable server name", given=name, has_given=True,
                    accepted="letters, digits, '.', '_' and '-', starting with a letter or digit",
                )
            if name in RESERVED_NAMES:
                raise ConfigError(
                    f"{path}.{name}", "is a name hubtwist uses for its own pages",
                    accepted="any name but " + ", ".join(sorted(RESERVED_NAMES)),
                )
            servers[name] = Table(ServerConfig).coerce(table, f"{path}.{name}")
        return servers

    def describe(self) -> str:
        return "tables `[servers.NAME]` (see [ServerConfig](#serverconfig))"


@attrs.frozen
class LauncherEntry:
    """How the server appears in launchers (jupyter-server-proxy's `launcher_entry`)."""

    enabled: bool = setting(kinds.Bool(), True, "Show this server in the launcher page.")
    title: str = setting(kinds.Str(), "", "Title of the launcher entry; the server's name when empty.")
    icon_path: str = setting(kinds.Str(), "", "Path of an SVG icon file for the entry.")
    path_info: str = setting(
        kinds.Str(), "", "Path the entry opens, relative to the base URL; `NAME/` when empty."
    )
    category: str = setting(kinds.Str(), "Notebook", "Launcher category (JupyterLab's launcher).")


def _check_patterns(patterns: tuple[str, ...], path: str) -> None:
    for index, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as error:
            raise ConfigError(
                f"{path}[{index}]", f"is not a valid regular expression ({error})",
                given=pattern, has_given=True, accepted="Python regular expressions",
            ) from None


def _check_socket_path(socket: bool | str, path: str) -> None:
    # A longer path cannot be bound at all: the app would fail every start, far from the cause.
    if isinstance(socket, str) and len(os.fsencode(socket)) > kinds.MAX_UNIX_PATH:
        raise ConfigError(
            path, f"is {len(os.fsencode(socket))} bytes long, too long for a unix socket",
            given=socket, has_given=True, accepted=f"a path of at most {kinds.MAX_UNIX_PATH} bytes",
        )


def check_http_url(url: str | None, path: str, source: str | None = None) -> None:
    """Raise L{ConfigError} (naming C{path}, or the variable when C{source} is
    C{"environment"}) unless C{url} is an http(s) URL with a host."""
    # hubtwist makes requests to these; anything but an http(s) URL with a host would only
    # fail later, inside the HTTP client.
    if url is None:
        return
    try:
        parts = urllib.parse.urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad IPv6 literal or port
        usable = False
    if not usable:
        extra = {"source": source} if source else {}
        raise ConfigError(path, "is not an http(s) URL", given=url, has_given=True,
                          accepted="an http:// or https:// URL with a host name", **extra)


def _check_no_origin_host(server: "ServerConfig") -> None:
    # {origin_host} is the Host of the first request: an app started before any has none.
    texts = [("command", text) for text in server.command]
    texts += [(f"environment.{key}", text) for key, text in server.environment.items()]
    for path, text in texts:
        if uses(text, "origin_host"):
            raise ConfigError(path, "uses {origin_host}, the Host of the first request, which "
                              "an app started with hubtwist (autostart = true) does not have yet",
                              hint="Leave autostart off for this app.")


@attrs.frozen
class ServerConfig:
    """
    One app: the process hubtwist supervises and the route it proxies to.

    Keys shared with jupyter-server-proxy keep its names and meaning.
    """

    command: tuple[str, ...] | Any = setting(
        kinds.Either((kinds.StrList(non_empty_items=True), kinds.Function())), (),
        "Command that starts the app. Templates: `{port}`, `{unix_socket}`, `{base_url}` "
        "(hubtwist's base URL), `{prefix}` (this app's public prefix: `BASE/NAME/`, or the base "
        "URL for the app that owns it), `{origin_host}` (the `Host` of the first request; not "
        "with `autostart`), `{-}` and `{--}` (a literal `-`, `--`); a `/` right after "
        "`{base_url}` or `{prefix}` is dropped, as both end with one. Write `{{` and `}}` for "
        "literal braces. Empty: the app is already running at `port` or `unix_socket` and "
        "hubtwist only proxies to it. A function (Python configuration) is called at each "
        "start with the arguments it names among `port`, `unix_socket` and `base_url`, and "
        "returns the list.",
        template=True,
    )
    environment: dict[str, str] | Any = setting(
        kinds.Either((kinds.StrDict(), kinds.Function())), {},
        "Extra environment variables for the app, on top of hubtwist's own; values take the same "
        "templates as `command`. A function is called like `command`'s and returns the table.",
        template=True,
    )
    pass_hub_token: bool = setting(
        kinds.Bool(), False,
        "Pass hubtwist's Hub API token (`JUPYTERHUB_API_TOKEN`, `JPY_API_TOKEN`) on to the app, "
        "for apps that call the Hub API themselves. It is also hubtwist's OAuth client secret, "
        "so by default apps do not get it (nor ever `HUBTWIST_TOKEN`).",
    )
    cwd: str | None = setting(kinds.OptionalStr(), None, "Working directory of the app.")
    user: str | None = setting(
        kinds.OptionalStr(), None,
        "Run the app as this user (name or uid). Only possible when hubtwist runs as root.",
    )
    timeout: float = setting(
        kinds.Seconds(0, exclusive=True), 30.0,
        "Seconds the app has to answer its readiness check after it is started.",
    )
    port: int = setting(
        kinds.Int(0, 65535), 0,
        "TCP port the app listens on, on 127.0.0.1. 0 picks a free port for each start.",
    )
    unix_socket: bool | str = setting(
        kinds.Either((kinds.Bool(), kinds.Str(non_empty=True))), False,
        "Serve the app on a unix socket instead of a TCP port: `true` for a socket in a private "
        "(0700) directory, or the socket's path. `port` is then ignored.",
    )
    absolute_url: bool = setting(
        kinds.Bool(), False,
        "Send the full public path to the app (`/base/NAME/x`) instead of stripping the prefix (`/x`).",
    )
    mappath: dict[str, str] | str | Any = setting(
        kinds.Either((kinds.StrDict(), kinds.ImportPath(), kinds.Function())), {},
        "Rewrite request paths before they reach the app: a table of path to path, or a "
        "function `(path) -> path` (its import path, or itself in a Python configuration).",
    )
    request_headers_override: dict[str, str] | Any = setting(
        kinds.Either((kinds.StrDict(), kinds.Function())), {},
        "Headers set on every request to the app; values take the templates of `command`. A "
        "function is called for each request like `command`'s and returns the table.",
        template=True,
    )
    rewrite_response: tuple[Any, ...] = setting(
        kinds.ListOf(kinds.Either((kinds.ImportPath(), kinds.Function()))), (),
        "Functions that may change the app's responses (jupyter-server-proxy's contract: they "
        "name the arguments they want among `response`, `request`, `orig_response`, `host`, "
        "`port` and `path`), as import paths (or themselves in a Python configuration). "
        "Responses of such a server are buffered.",
    )
    rewrite_urls: bool = setting(
        kinds.Bool(), False,
        "For apps that do not know their prefix: root-absolute URLs in their HTML and CSS "
        "(`href=\"/x\"`, `src`, `action`, `srcset`, `url(/x)`, `<base href>`, a refresh "
        "`<meta>`) are rewritten under the app's public prefix, as the response streams. "
        "The app is asked for uncompressed responses; URLs in JavaScript and JSON are not "
        "rewritten. See docs/architecture.md.",
    )
    update_last_activity: bool = setting(
        kinds.Bool(), True, "Count requests to this app as user activity."
    )
    exclude_last_activity_patterns: tuple[str, ...] = setting(
        kinds.StrList(), (),
        "Regular expressions; requests whose path (after the server prefix) matches one do not "
        "count as activity.",
    )
    raw_socket_proxy: bool = setting(
        kinds.Bool(), False,
        "The app speaks plain TCP, not HTTP: WebSocket messages become bytes on a socket to it "
        "(like websockify). Ready when its socket accepts a connection.",
    )
    launcher_entry: LauncherEntry = setting(
        Table(LauncherEntry), LauncherEntry(), "How the app appears in launchers."
    )
    new_browser_tab: bool = setting(
        kinds.Bool(), True, "Launchers open the app in a new browser tab."
    )
    ready_check_path: str = setting(
        kinds.Str(pattern=r"/\S*", pattern_text="a path starting with '/'"), "/",
        "Path probed to decide that the app is ready; any HTTP response counts.",
    )
    log_output: bool = setting(
        kinds.Bool(), True,
        "Copy the app's output lines into hubtwist's log (jhsingle-native-proxy's `--logs`); "
        "`false` keeps them only in the last lines shown on its error pages and "
        "`/api/servers/NAME`.",
    )
    proxied: bool = setting(
        kinds.Bool(), True,
        "`false`: a plain supervised process (a JupyterHub service without `url`, such as the "
        "idle culler): no route, no port, no readiness check; it counts as running once "
        "started.",
    )
    autostart: bool = setting(
        kinds.Bool(), False,
        "Start the app with hubtwist and keep it running; `false` starts it on the first request.",
    )
    restart: str = setting(
        kinds.Choice(("on-failure", "always", "never")), "on-failure",
        "When to restart the app after it exits: on a non-zero exit or a signal, after any exit, "
        "or never (a later request starts it again).",
    )
    backoff_initial: float = setting(
        kinds.Seconds(0, exclusive=True), 0.5,
        "First delay before a restart; each further failure doubles it, with jitter.",
    )
    backoff_max: float = setting(
        kinds.Seconds(0, exclusive=True), 30.0,
        "Longest delay between restarts, and how long a FATAL app waits before a request may try "
        "it again.",
    )
    start_retries: int = setting(
        kinds.Int(1), 5,
        "Failures in a row (exits before `min_uptime`, failed readiness) after which the app is "
        "FATAL and no longer restarted on its own.",
    )
    min_uptime: float = setting(
        kinds.Seconds(0), 10.0,
        "A run at least this long counts as healthy and resets the failure count.",
    )
    stop_signal: str = setting(
        kinds.SignalName(), "TERM", "Signal sent to the app's whole process group to stop it."
    )
    stop_timeout: float = setting(
        kinds.Seconds(0), 10.0,
        "Seconds to wait after `stop_signal` before the process group gets SIGKILL.",
    )
    request_timeout: float = setting(
        kinds.Seconds(0), 300.0,
        "Seconds the app has to start answering a proxied request (504 after that); 0 = no limit.",
    )
    max_connections: int = setting(
        kinds.Int(1), 256,
        "Connections hubtwist keeps open to the app at most (busy and idle, like HAProxy's "
        "`maxconn`); more concurrent requests wait for one to come free.",
    )
    max_connecting: int = setting(
        kinds.Int(1), 4,
        "Connections to the app that may be opening, or open without a first answer, at once: "
        "what may sit in the app's accept queue. A burst (many requests waiting for a lazy "
        "start) opens connections this many at a time instead of all in one tick, which an "
        "app with a small listen backlog would drop. Raise it for apps that take long before "
        "the first byte of every answer.",
    )
    queue_timeout: float = setting(
        kinds.Seconds(0, exclusive=True), 30.0,
        "Seconds a request may wait for a connection to the app (503 after that).",
    )
    websocket_max_message_size: int = setting(
        kinds.Int(0), 64 * 1024 * 1024,
        "Largest WebSocket message in bytes, either way (as sent on the wire, so compressed "
        "when the app and browser use permessage-deflate); a larger one closes the connection "
        "with code 1009 (Message Too Big). 0 = unlimited.",
    )
    websocket_ping_interval: float = setting(
        kinds.Seconds(0), 0.0,
        "Seconds between WebSocket pings hubtwist sends to the browser, so idle connections "
        "through load balancers stay open; a browser that answers nothing for three intervals "
        "is disconnected. 0 = no pings.",
    )

    def __attrs_post_init__(self) -> None:
        _check_patterns(self.exclude_last_activity_patterns, "exclude_last_activity_patterns")
        _check_socket_path(self.unix_socket, "unix_socket")
        if self.autostart:
            _check_no_origin_host(self)

    @property
    def is_external(self) -> bool:
        """True when hubtwist only proxies to an app that something else runs."""
        return not self.command


_SCOPE = r"[^\s!]+(?:![a-z]+=\S+)?"


def _ignored(doc: str) -> Any:
    return setting(kinds.Anything(), None, doc, ignored=True)


@attrs.frozen
class ServiceConfig:
    """
    One JupyterHub managed service (`c.JupyterHub.services` entry), run as the Hub would.

    It becomes an autostarted server (`restart = "always"`) with the variables the Hub gives
    a managed service: `JUPYTERHUB_SERVICE_NAME`, `JUPYTERHUB_API_URL` and
    `JUPYTERHUB_BASE_URL` when hubtwist knows them, and with a `url` also
    `JUPYTERHUB_SERVICE_URL` and `JUPYTERHUB_SERVICE_PREFIX` (`BASE/NAME/`). Never a
    token: hubtwist's own credentials stay its own (see `pass_hub_token`).
    """

    name: str = setting(kinds.Str(pattern=_SERVER_NAME, pattern_text="letters, digits, "
                        "'.', '_' and '-', starting with a letter or digit"), "",
                        "The service's name; with a `url`, it is served at `/NAME/`.")
    command: tuple[str, ...] = setting(
        kinds.StrList(non_empty_items=True), (),
        "Command that starts the service (templates as in `servers`). Empty: the service runs "
        "elsewhere, and hubtwist only routes to its `url`.",
        template=True,
    )
    environment: dict[str, str] = setting(
        kinds.StrDict(), {}, "Extra environment variables; they override the Hub's.",
        template=True,
    )
    cwd: str | None = setting(kinds.OptionalStr(), None, "Working directory of the service.")
    user: str | None = setting(kinds.OptionalStr(), None, "Run the service as this user.")
    url: str | None = setting(
        kinds.OptionalStr(), None,
        "Where the service listens, `http://127.0.0.1:PORT` (port 0: a free one, as the Hub "
        "does). With it, the service is served at `/NAME/`, full path passed (the Hub's proxy "
        "strips nothing); without it, it is a plain supervised process, restarted when it "
        "exits.",
    )
    display: bool = setting(kinds.Bool(), True, "List the service on the launcher page.")
    admin: Any = _ignored("The Hub's; ignored (hubtwist gives services no token).")
    api_token: Any = _ignored("The Hub's; ignored (hubtwist gives services no token).")
    oauth_client_id: Any = _ignored("The Hub's; ignored.")
    oauth_redirect_uri: Any = _ignored("The Hub's; ignored.")
    oauth_no_confirm: Any = _ignored("The Hub's; ignored.")
    oauth_roles: Any = _ignored("The Hub's; ignored.")
    oauth_client_allowed_scopes: Any = _ignored("The Hub's; ignored.")
    info: Any = _ignored("The Hub's; ignored.")

    def __attrs_post_init__(self) -> None:
        if not self.name:
            raise ConfigError("name", "is missing", accepted="the service's name")
        if self.url is not None:
            service_port(self.url, "url")


def service_port(url: str, path: str) -> int:
    """The loopback port of a service C{url} (0: pick one), or L{ConfigError}."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        parts, port, host = None, None, None
    if parts is None or parts.scheme not in ("http", "https") or host not in (
            "127.0.0.1", "localhost", "0.0.0.0", "::1"):
        raise ConfigError(path, "is not a local http URL", given=url, has_given=True,
                          accepted="http://127.0.0.1:PORT (hubtwist runs the service and "
                          "proxies to it on this machine)")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return port


@attrs.frozen
class HubConfig:
    """
    JupyterHub mode: where the Hub is and who hubtwist is to it.

    A Spawner or the Hub (managed service) sets `JUPYTERHUB_*` variables and nothing here is
    needed; a key given here wins over its variable. An external service names at least
    `api_url`, `api_token` (or `api_token_file`) and `service_name`; the rest follows.
    """

    mode: str = setting(
        kinds.Choice(("auto", "hub", "standalone")), "auto",
        "`auto`: Hub mode when a Hub API URL and token are known (from here or "
        "`JUPYTERHUB_API_URL` + `JUPYTERHUB_API_TOKEN`), standalone otherwise. `--mode` overrides.",
    )
    api_url: str | None = setting(
        kinds.OptionalStr(), None,
        "The Hub's API URL, such as `http://127.0.0.1:8081/hub/api` (`JUPYTERHUB_API_URL`).",
    )
    api_token: str | None = setting(
        kinds.OptionalStr(), None,
        "hubtwist's own Hub API token, also its OAuth client secret (`JUPYTERHUB_API_TOKEN`). "
        "Prefer `api_token_file`; `check-config` never prints it.",
        secret=True,
    )
    api_token_file: str | None = setting(
        kinds.OptionalStr(), None, "A file holding the API token (surrounding whitespace ignored).",
    )
    service_name: str | None = setting(
        kinds.OptionalStr(), None,
        "The service's name in `c.JupyterHub.services` (`JUPYTERHUB_SERVICE_NAME`); empty for a "
        "single-user server.",
    )
    client_id: str | None = setting(
        kinds.OptionalStr(), None,
        "OAuth client id (`JUPYTERHUB_CLIENT_ID`); `service-NAME` for a service. Also the name "
        "of the login cookie.",
    )
    service_prefix: str | None = setting(
        kinds.URLPrefix(), None,
        "Public path of this server (`JUPYTERHUB_SERVICE_PREFIX`); `/services/NAME/` for a "
        "service. The default `base_url` in Hub mode.",
    )
    oauth_redirect_uri: str | None = setting(
        kinds.OptionalStr(), None,
        "The redirect URI registered with the Hub, compared as a string "
        "(`JUPYTERHUB_OAUTH_CALLBACK_URL`); `PREFIX/oauth_callback` by default.",
    )
    oauth_access_scopes: tuple[str, ...] = setting(
        kinds.ListOf(kinds.Str(pattern=_SCOPE, pattern_text="a scope such as \"access:services!service=NAME\"")),
        (),
        "Holding any one of these scopes grants access (`JUPYTERHUB_OAUTH_ACCESS_SCOPES`); "
        "`access:services!service=NAME` for a service when empty.",
    )
    hub_base_url: str | None = setting(
        kinds.URLPrefix(), None,
        "The Hub's public base path (`JUPYTERHUB_BASE_URL`, `/` by default); login is at "
        "`BASE/hub/api/oauth2/authorize`.",
    )
    hub_host: str | None = setting(
        kinds.OptionalStr(), None,
        "The Hub's public origin when it differs from this server's, such as "
        "`https://hub.example.org` (`JUPYTERHUB_HOST`); empty means the same origin.",
    )
    activity_url: str | None = setting(
        kinds.OptionalStr(), None,
        "Where activity is reported (`JUPYTERHUB_ACTIVITY_URL`); services have none.",
    )
    activity_interval: float | None = setting(
        kinds.Seconds(0), None,
        "Seconds between activity reports (`JUPYTERHUB_ACTIVITY_INTERVAL`, else 300); 0 turns "
        "reporting off.",
    )
    cache_max_age: float = setting(
        kinds.Seconds(0), 300.0,
        "Seconds an identity the Hub confirmed is reused without asking again. While the Hub "
        "is unreachable, a known identity is still accepted.",
    )
    allow_token_in_url: bool | None = setting(
        kinds.Bool(), None,
        "Accept `?token=` on ordinary requests (`JUPYTERHUB_ALLOW_TOKEN_IN_URL`, else false); "
        "WebSocket handshakes always accept it.",
    )
    xsrf_protection: bool = setting(
        kinds.Bool(), True,
        "Cookie-authenticated unsafe requests (POST, PUT, fetch() calls ...) must carry the "
        "`_xsrf` cookie's value as `_xsrf` argument or `X-XSRFToken` header, as JupyterHub "
        "requires; without it the cookie is ignored. `false` leaves forgery protection to the "
        "apps (what jupyter-server-proxy does).",
    )
    request_timeout: float = setting(
        kinds.Seconds(0, exclusive=True), 10.0, "Seconds one call to the Hub API may take.",
    )

    def __attrs_post_init__(self) -> None:
        for key in ("api_url", "activity_url", "hub_host"):
            check_http_url(getattr(self, key), key)


@attrs.frozen
class Config:
    """The whole configuration of one hubtwist process."""

    listen: tuple[str, ...] = setting(
        kinds.ListOf(kinds.Str(non_empty=True)), (DEFAULT_LISTEN,),
        "Where hubtwist listens: Twisted endpoint descriptions such as "
        "`tcp:8888:interface=127.0.0.1` or `unix:/run/ht.sock:mode=600`.",
    )
    base_url: str = setting(
        kinds.URLPrefix(), "/",
        "Public path prefix under which everything is served.",
    )
    default_server: str | None = setting(
        kinds.OptionalStr(), None, "Server served at the base URL itself (besides `/NAME/`)."
    )
    servers: dict[str, ServerConfig] = setting(ServerMap(), {}, "The apps, one table each.")
    proxy_ports: bool | None = setting(
        kinds.Bool(), None,
        "Serve the `/proxy/PORT/` routes to other local ports. Default: yes when no app owns "
        "the base URL; when one does (`default_server`, or `-- COMMAND`), `/proxy/...` is "
        "the app's unless this is `true`.",
    )
    proxy_allowed_hosts: tuple[str, ...] = setting(
        kinds.StrList(non_empty_items=True), ("localhost", "127.0.0.1", "::1"),
        "Hosts that `/proxy/HOST:PORT/` may reach.",
    )
    cors_allow_origins: tuple[str, ...] = setting(
        kinds.ListOf(kinds.Str(
            pattern=r"\*|https?://[^/\s?#]+",
            pattern_text="`*` or an origin such as `https://example.org:8443` (scheme, host, "
            "optional port; no path)")), (),
        "Origins whose pages may call hubtwist's API (`api/...`) from the browser (CORS). An "
        "origin listed by name may send credentials; `*` lets any page read without "
        "credentials (never both for one request). Empty: no cross-origin access. The apps' "
        "own paths are not affected.",
    )
    max_body_size: int = setting(
        kinds.Int(0), 0, "Largest request body in bytes (413 beyond it); 0 = unlimited."
    )
    head_timeout: float = setting(
        kinds.Seconds(0, exclusive=True), 20.0,
        "Seconds a client has to send a whole request head, from its first byte (408 and the "
        "connection closed after that): a client trickling a head byte by byte does not hold "
        "a connection.",
    )
    stall_timeout: float = setting(
        kinds.Seconds(0, exclusive=True), 60.0,
        "Seconds a client may take nothing of a response while the app has more to send; "
        "then its connection is dropped, and the app's with it. A slow client that keeps "
        "reading is never cut.",
    )
    log_level: str = setting(
        kinds.Choice(("debug", "info", "warn", "error")), "info", "Least severe level logged."
    )
    log_format: str = setting(kinds.Choice(("text", "json")), "text", "Log line format.")
    access_log: bool = setting(
        kinds.Bool(), False,
        "Write one line per request (method, path without secret query arguments, status, "
        "duration, bytes, server, user; in `log_format`) to the log. Answers hubtwist makes "
        "itself (404, 502, 503, 504, its redirects, logins) are logged even when this is "
        "off, at most 20 per 10 s, at `info` level. See docs/metrics.md.",
    )
    metrics: bool = setting(
        kinds.Bool(), True,
        "Count requests, WebSockets, app start-ups and Hub API calls, and serve them in the "
        "Prometheus text format at `metrics` (with the own routes). See docs/metrics.md.",
    )
    metrics_auth: bool = setting(
        kinds.Bool(), True,
        "`metrics` needs the same credentials as the apps (token or Hub login). `false` "
        "lets anyone who can reach hubtwist read them (a Prometheus server in the cluster "
        "without a token); they hold app names and counts, no secrets.",
    )
    token: str | None = setting(
        kinds.OptionalStr(), None,
        "Standalone mode: every request must carry this token (`Authorization: token ...`, "
        "`?token=` once in a browser, then a cookie). The command line generates one unless "
        "`--no-auth`; `HUBTWIST_TOKEN`, `--token` and `--token-file` override this key. "
        "Prefer `token_file`.",
        secret=True,
    )
    token_file: str | None = setting(
        kinds.OptionalStr(), None,
        "A file holding the standalone token (surrounding whitespace ignored); it must exist and "
        "not be empty, and should be readable by hubtwist's user only. Not with `token`.",
    )
    forward_user_info: bool = setting(
        kinds.Bool(), False,
        "Hub mode: tell the apps who is calling, in `X-Forwarded-User` (the name) and "
        "`X-Hubtwist-User` (JSON: name, kind, admin, groups, scopes). Both headers are always "
        "removed from what clients send.",
    )
    keep_alive: bool = setting(
        kinds.Bool(), False,
        "Hub mode: report activity at every interval even when nobody used the apps "
        "(jhsingle-native-proxy's `--force-alive`); idle culling then never stops this server.",
    )
    hub: HubConfig = setting(Table(HubConfig), HubConfig(), "JupyterHub mode settings.")
    non_service_rewrite_response: tuple[Any, ...] = setting(
        kinds.ListOf(kinds.Either((kinds.ImportPath(), kinds.Function()))), (),
        "`rewrite_response` functions for the `/proxy/PORT/` routes "
        "(jupyter-server-proxy's `ServerProxy.non_service_rewrite_response`).",
    )
    services: tuple["ServiceConfig", ...] = setting(
        kinds.ListOf(Table(ServiceConfig)), (),
        "JupyterHub-style managed services, `[[services]]` (see [ServiceConfig](#serviceconfig)). "
        "When loaded, each becomes an autostarted server of the same name.",
    )

    def __attrs_post_init__(self) -> None:
        if self.token is not None and self.token_file is not None:
            raise ConfigError("token_file", "cannot be given together with `token`: keep one")
        if self.default_server in self.servers and not self.servers[self.default_server].proxied:
            raise ConfigError("default_server", "names a server that is not proxied "
                              "(`proxied = false`)", given=self.default_server, has_given=True)
        if self.default_server is not None and self.default_server not in self.servers:
            raise ConfigError(
                "default_server", "names no configured server", given=self.default_server,
                has_given=True,
                accepted=", ".join(sorted(self.servers)) or "a server defined under [servers]",
            )


def build(model: type, raw: dict[str, Any], path: str = "") -> Any:
    """
    Check the raw table C{raw} against C{model} and return the model instance.

    Unknown keys are errors that suggest the closest known key.
    """
    fields = {f.name: f for f in attrs.fields(model)}
    values = {}
    for key, value in raw.items():
        key_path = f"{path}.{key}" if path else str(key)
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            raise ConfigError(
                key_path, "is not a known key",
                hint=f"Did you mean `{close[0]}`?" if close else
                f"Known keys here: {', '.join(sorted(fields))}.",
            )
        values[key] = field.metadata["kind"].coerce(value, key_path)
        if field.metadata.get("template"):
            _check_templates(values[key], key_path)
    try:
        return model(**values)
    except ConfigError as error:
        if path and error.key_path and not error.key_path.startswith(path + "."):
            raise ConfigError(
                f"{path}.{error.key_path}", error.problem, given=error.given,
                has_given=error.has_given, accepted=error.accepted, hint=error.hint,
            ) from None
        raise


def _check_templates(value: object, path: str) -> None:
    if isinstance(value, tuple):
        for index, item in enumerate(value):
            check_template(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_template(item, f"{path}.{key}")
