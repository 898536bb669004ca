"""
Which mode hubtwist runs in, and the settings of that mode, from the environment, the
configuration and the command line. Pure: the environment is a mapping passed in.

Precedence, highest first: command-line flags, the configuration file, the C{JUPYTERHUB_*}
variables a Spawner or the Hub set, built-in defaults.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Mapping

import attrs

from hubtwist.config.errors import ConfigError
from hubtwist.config.schema import DEFAULT_LISTEN, Config, HubConfig, check_http_url
from hubtwist.hub.listening import listen_for_service_url

DEFAULT_ACTIVITY_INTERVAL = 300.0


@attrs.frozen
class HubSettings:
    """Everything Hub mode needs, resolved. The API token never appears in its repr."""

    api_url: str
    api_token: str = attrs.field(repr=False)
    client_id: str
    oauth_redirect_uri: str
    access_scopes: tuple[str, ...]
    service_prefix: str = "/"
    hub_base_url: str = "/"
    hub_host: str = ""
    public_url: str = ""
    user: str = ""
    server_name: str = ""
    service_name: str = ""
    service_url: str = ""
    activity_url: str = ""
    activity_interval: float = DEFAULT_ACTIVITY_INTERVAL
    cache_max_age: float = 300.0
    allow_token_in_url: bool = False
    allow_websocket_cookie_auth: bool = True
    cookie_host_prefix: bool = False
    cookie_secure: bool | None = None
    xsrf_protection: bool = True
    request_timeout: float = 10.0
    ssl_keyfile: str = ""
    ssl_certfile: str = ""
    ssl_client_ca: str = ""

    @property
    def kind(self) -> str:
        """What the Hub runs hubtwist as, in words."""
        if self.service_name:
            return f"service {self.service_name}"
        if self.user:
            server = f" {self.server_name!r}" if self.server_name else ""
            return f"server{server} of {self.user}"
        return "Hub-authenticated server"

    @property
    def cookie_name(self) -> str:
        """The login cookie: named after the client id, as JupyterHub's services do."""
        return ("__Host-" if self.cookie_host_prefix else "") + self.client_id


@attrs.frozen
class AuthPlan:
    """The mode hubtwist runs in, why (for the startup log), and how it authenticates."""

    mode: str  # "hub" or "standalone"
    reason: str
    hub: HubSettings | None = None
    token: str | None = attrs.field(default=None, repr=False)
    token_generated: bool = False
    warnings: tuple[str, ...] = ()  # logged when hubtwist starts (the log is not up yet here)

    @property
    def open(self) -> bool:
        """Standalone without a token: anyone who can connect is let in."""
        return self.mode == "standalone" and not self.token


def env_flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no environment variable: anything but empty, 0, false, no, n or off is yes."""
    if name not in environ:
        return default
    return environ[name].strip().lower() not in ("", "0", "false", "no", "n", "off")


def _env_scopes(environ: Mapping[str, str]) -> tuple[str, ...]:
    raw = environ.get("JUPYTERHUB_OAUTH_ACCESS_SCOPES") or environ.get("JUPYTERHUB_OAUTH_SCOPES")
    if not raw:
        return ()
    try:
        scopes = json.loads(raw)
    except ValueError:
        raise ConfigError("", "JUPYTERHUB_OAUTH_ACCESS_SCOPES is not a JSON list of scopes",
                          source="environment", given=raw, has_given=True) from None
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ConfigError("", "JUPYTERHUB_OAUTH_ACCESS_SCOPES is not a JSON list of scopes",
                          source="environment", given=raw, has_given=True)
    return tuple(scopes)


def _prefix(path: str) -> str:
    parts = [part for part in path.split("/") if part]
    return "/" + "".join(f"{part}/" for part in parts)


def read_token_file(path: str, key: str = "hub.api_token_file", source: str | None = None) -> str:
    """The token in C{path}, or a L{ConfigError} (about C{key}) saying why it cannot be read."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
        raise ConfigError(key, f"names a token file that cannot be read ({why})", given=path,
                          has_given=True, source=source) from None
    if not token:
        raise ConfigError(key, "names an empty token file", given=path, has_given=True,
                          source=source)
    return token


def token_file_warning(path: str, mode: int) -> str | None:
    """A warning when a token file with permission bits C{mode} is readable by others. Pure."""
    if mode & 0o044:
        return (f"The token file {path} is readable by other users (mode {mode & 0o777:o}); "
                f"`chmod 600 {path}` keeps the token to hubtwist's user")
    return None


def _token_file_warnings(path: str) -> tuple[str, ...]:
    try:
        warning = token_file_warning(path, os.stat(path).st_mode)
    except OSError:
        return ()
    return (warning,) if warning else ()


def _api_credentials(environ: Mapping[str, str], hub: HubConfig) -> tuple[str, str, str]:
    """C{(api_url, api_token, where they came from)}; empty strings when unknown."""
    token = hub.api_token or (read_token_file(hub.api_token_file) if hub.api_token_file else "")
    url = hub.api_url or ""
    if url and token:
        return url.rstrip("/"), token, "[hub] api_url and its API token are configured"
    env_url = environ.get("JUPYTERHUB_API_URL", "")
    env_token = environ.get("JUPYTERHUB_API_TOKEN") or environ.get("JPY_API_TOKEN", "")
    url, token = url or env_url, token or env_token
    return url.rstrip("/"), token, "JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN are set"


def hub_settings(environ: Mapping[str, str], config: Config) -> HubSettings:
    """Hub mode's settings; a L{ConfigError} names what is missing."""
    hub = config.hub
    api_url, api_token, _ = _api_credentials(environ, hub)
    if api_url and not hub.api_url:
        # hub.api_url was checked with the file; the environment's has not been
        check_http_url(api_url, "JUPYTERHUB_API_URL", source="environment")
    if not api_url or not api_token:
        missing = " and ".join(name for name, value in (
            ("the Hub's API URL (JUPYTERHUB_API_URL or hub.api_url)", api_url),
            ("an API token (JUPYTERHUB_API_TOKEN, hub.api_token or hub.api_token_file)", api_token),
        ) if not value)
        raise ConfigError("hub", f"Hub mode needs {missing}")
    service_name = hub.service_name or environ.get("JUPYTERHUB_SERVICE_NAME", "")
    prefix = (hub.service_prefix or environ.get("JUPYTERHUB_SERVICE_PREFIX")
              or (f"/services/{service_name}/" if service_name else config.base_url))
    prefix = _prefix(prefix)
    client_id = hub.client_id or environ.get("JUPYTERHUB_CLIENT_ID") or (
        f"service-{service_name}" if service_name else "")
    if not client_id:
        raise ConfigError("hub.client_id", "is needed in Hub mode: set JUPYTERHUB_CLIENT_ID, "
                          "hub.client_id, or hub.service_name (client id service-NAME)")
    user = environ.get("JUPYTERHUB_USER", "")
    server_name = environ.get("JUPYTERHUB_SERVER_NAME", "")
    scopes = hub.oauth_access_scopes or _env_scopes(environ)
    if not scopes and service_name:
        scopes = (f"access:services!service={service_name}",)
    if not scopes and user:
        scopes = (f"access:servers!server={user}/{server_name}", f"access:servers!user={user}")
    if not scopes:
        raise ConfigError("hub.oauth_access_scopes", "is needed in Hub mode to know who may "
                          "come in: set it, JUPYTERHUB_OAUTH_ACCESS_SCOPES, or hub.service_name")
    if hub.activity_interval is not None:
        interval = hub.activity_interval
    else:
        raw = environ.get("JUPYTERHUB_ACTIVITY_INTERVAL", "")
        try:
            interval = float(raw) if raw else DEFAULT_ACTIVITY_INTERVAL
        except ValueError:
            interval = math.nan
        if not (math.isfinite(interval) and interval >= 0):
            raise ConfigError("", "JUPYTERHUB_ACTIVITY_INTERVAL is not a number of seconds "
                              "(0 or more)", source="environment", given=raw, has_given=True)
    cookie_secure = None
    options = environ.get("JUPYTERHUB_COOKIE_OPTIONS")
    if options:
        try:
            cookie_secure = json.loads(options).get("secure")
        except (ValueError, AttributeError):
            cookie_secure = None
    return HubSettings(
        api_url=api_url,
        api_token=api_token,
        client_id=client_id,
        oauth_redirect_uri=(hub.oauth_redirect_uri or environ.get("JUPYTERHUB_OAUTH_CALLBACK_URL")
                            or f"{prefix}oauth_callback"),
        access_scopes=tuple(scopes),
        service_prefix=prefix,
        hub_base_url=_prefix(hub.hub_base_url or environ.get("JUPYTERHUB_BASE_URL") or "/"),
        hub_host=(hub.hub_host or environ.get("JUPYTERHUB_HOST", "")).rstrip("/"),
        public_url=environ.get("JUPYTERHUB_PUBLIC_URL", ""),
        user=user,
        server_name=server_name,
        service_name=service_name,
        service_url=environ.get("JUPYTERHUB_SERVICE_URL", ""),
        activity_url=hub.activity_url or environ.get("JUPYTERHUB_ACTIVITY_URL", ""),
        activity_interval=interval,
        cache_max_age=hub.cache_max_age,
        allow_token_in_url=(hub.allow_token_in_url if hub.allow_token_in_url is not None
                            else env_flag(environ, "JUPYTERHUB_ALLOW_TOKEN_IN_URL", False)),
        allow_websocket_cookie_auth=env_flag(environ, "JUPYTERHUB_ALLOW_WEBSOCKET_COOKIE_AUTH", True),
        cookie_host_prefix=env_flag(environ, "JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED", False),
        cookie_secure=cookie_secure if isinstance(cookie_secure, bool) else None,
        xsrf_protection=hub.xsrf_protection,
        request_timeout=hub.request_timeout,
        ssl_keyfile=environ.get("JUPYTERHUB_SSL_KEYFILE", ""),
        ssl_certfile=environ.get("JUPYTERHUB_SSL_CERTFILE", ""),
        ssl_client_ca=environ.get("JUPYTERHUB_SSL_CLIENT_CA", ""),
    )


def resolve_auth(
    environ: Mapping[str, str], config: Config, *, mode: str | None = None,
    token: str | None = None, token_file: str | None = None, no_auth: bool = False,
    generate_token: bool = False,
) -> AuthPlan:
    """
    Decide the mode and how requests are authenticated.

    C{mode} (C{--mode}) overrides C{hub.mode}. In standalone mode the token is C{token}
    (C{--token}), else the content of C{token_file} (C{--token-file}), else
    C{HUBTWIST_TOKEN}, else the C{token} key, else the content of C{token_file}'s key; with
    none of them a random one is made when C{generate_token} (the command line's default)
    and C{no_auth} is false. A token file that cannot be read or is empty is a
    L{ConfigError}.
    """
    warnings: list[str] = []
    if token:
        warnings.append("--token is visible to every user of this machine (in `ps` and "
                        "/proc); set HUBTWIST_TOKEN or use --token-file instead")
    file_token = None
    if token_file:  # read in any mode: a wrong path is a mistake worth saying at once
        file_token = read_token_file(token_file, "", source="--token-file")
        warnings.extend(_token_file_warnings(token_file))
    mode = mode or config.hub.mode
    if mode != "standalone":
        api_url, api_token, source = _api_credentials(environ, config.hub)
        if mode == "hub" or (api_url and api_token):
            settings = hub_settings(environ, config)
            reason = "--mode hub / hub.mode = \"hub\"" if mode == "hub" and not (
                api_url and api_token) else source
            if config.hub.api_token_file and not config.hub.api_token:
                warnings.extend(_token_file_warnings(config.hub.api_token_file))
            return AuthPlan("hub", f"Hub mode as {settings.kind}: {reason}", hub=settings,
                            warnings=tuple(warnings))
        reason = ("standalone mode: no Hub API URL and token were found "
                  "(JUPYTERHUB_API_URL + JUPYTERHUB_API_TOKEN, or [hub] api_url + api_token)")
    else:
        reason = "standalone mode: --mode standalone / hub.mode = \"standalone\""
    if no_auth:
        return AuthPlan("standalone", reason + "; no authentication (--no-auth)",
                        warnings=tuple(warnings))
    chosen = token or file_token or environ.get("HUBTWIST_TOKEN") or config.token
    if not chosen and config.token_file:
        chosen = read_token_file(config.token_file, "token_file")
        warnings.extend(_token_file_warnings(config.token_file))
    if chosen:
        return AuthPlan("standalone", reason + "; a token is required", token=chosen,
                        warnings=tuple(warnings))
    if generate_token:
        return AuthPlan("standalone", reason + "; a generated token is required",
                        token=secrets.token_hex(24), token_generated=True,
                        warnings=tuple(warnings))
    return AuthPlan("standalone", reason + "; no token is configured, so no authentication",
                    warnings=tuple(warnings))


def with_hub_defaults(config: Config, plan: AuthPlan, *, listen_given: bool,
                      base_url_given: bool) -> Config:
    """
    In Hub mode, listen where the Hub said (C{JUPYTERHUB_SERVICE_URL}) and serve under its
    prefix (C{JUPYTERHUB_SERVICE_PREFIX}), unless flags or the file chose otherwise.
    """
    if plan.mode != "hub":
        return config
    settings = plan.hub
    changes = {}
    if not listen_given and config.listen == (DEFAULT_LISTEN,) and settings.service_url:
        changes["listen"] = (listen_for_service_url(settings.service_url, settings.ssl_keyfile,
                                                    settings.ssl_certfile,
                                                    settings.ssl_client_ca),)
    if not base_url_given and config.base_url == "/":
        changes["base_url"] = settings.service_prefix
    return attrs.evolve(config, **changes) if changes else config
