"""
The command line: argv -> L{Config} -> L{hubtwist.app.run}.

    hubtwist --config FILE [OPTIONS]
    hubtwist [OPTIONS] -- COMMAND ARGS...      one app, served at the base URL
    hubtwist check-config FILE                 validate, print the effective config
    hubtwist list-servers [--config FILE]      what would be served, and where from
    hubtwist demo [OPTIONS]                    a demo app behind hubtwist
    hubtwist chp [CHP OPTIONS]                 JupyterHub's proxy (hubtwist/front/)
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from hubtwist import __version__

USAGE_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubtwist",
        usage="hubtwist [--config FILE] [OPTIONS] [-- COMMAND ARGS...]\n"
              "       hubtwist check-config FILE\n       hubtwist demo [OPTIONS]",
        description="Put web apps behind one fast reverse proxy that also supervises them.",
        epilog="After `--` (or, as jhsingle-native-proxy takes it, among the options, with "
               "{--}/{-} for the app's own dashes), the command of a single app; {port}, "
               "{unix_socket}, {base_url}, {prefix}, {origin_host} and {presentation_path} are "
               "filled in. Docs: docs/configuration.md, docs/migrating.md.",
    )
    parser.add_argument("--version", action="version", version=f"hubtwist {__version__}")
    parser.add_argument("--config", metavar="FILE",
                        help="configuration file: TOML, or Python (a jupyter_server_config.py "
                             "with c.ServerProxy.servers)")
    parser.add_argument("--no-plugins", action="store_true",
                        help="with --config: do not load installed jupyter-server-proxy plugins "
                             "(jupyter_serverproxy_servers entry points)")
    parser.add_argument("--plugin", action="append", metavar="NAME",
                        help="with --config: load only this plugin (repeatable)")
    listen = parser.add_argument_group(
        "where hubtwist listens (as jupyterhub-singleuser, jhsingle-native-proxy and "
        "jupyter standaloneproxy take them)")
    listen.add_argument("--port", type=int, metavar="N", dest="listen_port",
                        help="the port hubtwist listens on (default: JUPYTERHUB_SERVICE_URL's "
                             "in Hub mode, else 8888)")
    listen.add_argument("--ip", "--address", metavar="ADDRESS", dest="listen_ip",
                        help="the address hubtwist listens on (default: JUPYTERHUB_SERVICE_URL's "
                             "host in Hub mode, else 127.0.0.1; '' or 0.0.0.0: every interface)")
    listen.add_argument("--listen", action="append", metavar="DESCRIPTION",
                        help="instead of --port/--ip: a Twisted endpoint description "
                             "(repeatable), such as unix:/run/ht.sock:mode=600; "
                             "default tcp:8888:interface=127.0.0.1")
    parser.add_argument("--base-url", metavar="PATH", help="public path prefix, default /")
    parser.add_argument("--log-level", type=_log_level, metavar="LEVEL",
                        help="debug, info, warn or error (traitlets' names and numbers too)")
    parser.add_argument("--log-format", choices=("text", "json"))
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=None,
                        help="one log line per request (config key access_log; default off)")
    parser.add_argument("--debug", action="store_const", const="debug", dest="log_level",
                        help="same as --log-level debug")
    parser.add_argument("--no-debug", action="store_const", const=None, dest="log_level",
                        help=argparse.SUPPRESS)
    parser.add_argument("--user", metavar="NAME|UID[:GID]",
                        help="started as root: create the account's home (and missing app "
                             "working directories under it), then drop root for good before "
                             "listening and starting apps. In a container, a root hubtwist "
                             "without --user becomes $NB_UID[:$NB_GID], else uid 1000:100 if "
                             "that user exists")
    parser.add_argument("--allow-root", action="store_true",
                        help="let apps run as root (also $HUBTWIST_ALLOW_ROOT=1); without it, "
                             "a root hubtwist refuses to start apps that have no other `user`")
    parser.add_argument("--no-allow-root", action="store_false", dest="allow_root",
                        help=argparse.SUPPRESS)
    auth = parser.add_argument_group("authentication and JupyterHub")
    auth.add_argument("--mode", choices=("auto", "hub", "standalone"),
                      help="auto (default): Hub mode when JUPYTERHUB_API_URL and "
                           "JUPYTERHUB_API_TOKEN are set, else standalone")
    given = auth.add_mutually_exclusive_group()
    given.add_argument("--token", help="standalone: the token every request must carry "
                                       "(default: $HUBTWIST_TOKEN, else a generated one, printed "
                                       "once). Visible to other users in `ps`: prefer "
                                       "$HUBTWIST_TOKEN or --token-file")
    given.add_argument("--token-file", metavar="PATH",
                       help="standalone: read the token from PATH (surrounding whitespace "
                            "ignored; keep the file readable by hubtwist's user only)")
    auth.add_argument("--no-auth", "--no-authentication", action="store_true", dest="no_auth",
                      help="standalone: no token; only on loopback or a unix socket")
    auth.add_argument("--authtype", choices=("oauth", "none"),
                      help="jhsingle-native-proxy's spelling: none = --no-auth")
    auth.add_argument("--allow-unauthenticated-public", action="store_true",
                      help="allow --no-auth on addresses other machines can reach")
    auth.add_argument("--forward-user-info", action="store_true",
                      help="Hub mode: send the user's name and groups to the apps in headers")
    auth.add_argument("--no-forward-user-info", action="store_false", dest="forward_user_info",
                      help=argparse.SUPPRESS)
    auth.add_argument("--query-user-info", action="store_true",
                      help="jhsingle-native-proxy's: the same as --forward-user-info (the "
                           "identity goes in headers, never in the query string)")
    auth.add_argument("--no-query-user-info", action="store_false", dest="query_user_info",
                      help=argparse.SUPPRESS)
    auth.add_argument("--keep-alive", "--force-alive", "--force-keep-alive", action="store_true",
                      dest="keep_alive", help="Hub mode: report activity even when idle")
    auth.add_argument("--no-force-alive", "--no-force-keep-alive", "--no-keep-alive",
                      action="store_false", dest="keep_alive", help=argparse.SUPPRESS)
    auth.add_argument("--last-activity-interval", "--activity-interval", type=float,
                      metavar="SECONDS", dest="last_activity_interval",
                      help="Hub mode: seconds between activity reports (0: none)")
    app = parser.add_argument_group("single-app mode (with -- COMMAND)")
    app.add_argument("--name", default="app", help="the app's name (default: app)")
    app.add_argument("--destport", "--server-port", type=int, metavar="N", dest="app_port",
                     help="port the app listens on (default: a free one)")
    app.add_argument("--unix-socket", nargs="?", const="true", metavar="true|PATH",
                     help="serve the app on a unix socket: alone (or true) in a private "
                          "directory, or at PATH")
    app.add_argument("--timeout", "--ready-timeout", type=float, dest="timeout",
                     help="seconds the app has to become ready")
    app.add_argument("--ready-check-path", help="path probed for readiness (default /)")
    app.add_argument("--absolute-url", action="store_true", help="do not strip the prefix")
    app.add_argument("--raw-socket-proxy", action="store_true",
                     help="the app speaks plain TCP: WebSocket messages become bytes to it")
    app.add_argument("--restart", choices=("on-failure", "always", "never"))
    app.add_argument("--request-timeout", type=float, metavar="SECONDS",
                     help="seconds the app has to start answering a request")
    app.add_argument("--autostart", action="store_true",
                     help="start the app at once instead of on the first request")
    app.add_argument("--environment", action="append", metavar="KEY=VALUE",
                     help="an environment variable of the app (repeatable), or a JSON object")
    app.add_argument("--mappath", action="append", metavar="PATH=PATH",
                     help="rewrite a request path (repeatable), a JSON object, or the import "
                          "path of a function")
    app.add_argument("--request-headers-override", action="append", metavar="NAME=VALUE",
                     help="a header set on every request to the app (repeatable), or a JSON "
                          "object")
    app.add_argument("--exclude-last-activity-patterns", action="append", metavar="REGEX",
                     help="requests whose path matches do not count as activity (repeatable, "
                          "or a JSON list)")
    app.add_argument("--websocket-max-message-size", type=int, metavar="BYTES",
                     help="largest WebSocket message (0: hubtwist's default, as the peers' 0 "
                          "means their library's)")
    app.add_argument("--logs", action="store_true", default=None, dest="logs",
                     help="copy the app's output into hubtwist's log (the default)")
    app.add_argument("--no-logs", action="store_false", dest="logs",
                     help="keep the app's output only in its error pages and /api/servers/NAME")
    app.add_argument("--progressive", "--no-progressive", action="store_true",
                     help="accepted: responses always stream as they arrive")
    app.add_argument("--presentation-path", metavar="PATH",
                     help="fills {presentation_path} (made absolute), {presentation_basename} "
                          "and {presentation_dirname} in the command")
    for ignored in ("--NotebookApp.allow_origin", "--no-NotebookApp.allow_origin",
                    "--aiohttp-no-ssl-connector"):
        app.add_argument(ignored, action="store_true", dest="ignored", help=argparse.SUPPRESS)
    app.add_argument("--aiohttp-request-timeout", dest="ignored", help=argparse.SUPPRESS)
    parser.add_argument("command", nargs="*", help=argparse.SUPPRESS)
    return parser


_LOG_LEVELS = {"debug": "debug", "10": "debug", "info": "info", "20": "info", "warn": "warn",
               "warning": "warn", "30": "warn", "error": "error", "40": "error",
               "critical": "error", "50": "error"}


def _log_level(text: str) -> str:
    try:
        return _LOG_LEVELS[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError("choose debug, info, warn or error") from None


# Peer options hubtwist refuses, and why (docs/migrating.md lists the same).
UNSUPPORTED = {
    "--repo": "hubtwist does not fetch code: pull the repository before it starts (the "
              "spawner's command, an init container, or nbgitpuller)",
    "--repobranch": "see --repo",
    "--repofolder": "see --repo; --cwd-like placement is the `cwd` key of a [servers.NAME] table",
    "--conda-env": "put the environment in the command: `conda run --no-capture-output -n ENV "
                   "COMMAND...`",
    "--generate-config": "hubtwist's configuration is TOML: see docs/configuration.md",
    "--show-config": "run `hubtwist check-config FILE` to print the effective configuration",
    "--show-config-json": "run `hubtwist check-config FILE` to print the effective configuration",
}


def _split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        index = list(argv).index("--")
        return list(argv[:index]), list(argv[index + 1:])
    return list(argv), []


def parse_argv(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """
    The options and the app's command of C{argv}. The command is what follows C{--}, after
    any words among the options (jhsingle-native-proxy's C{--destport 0 voila nb.ipynb
    {--}port={port} --progressive}). Raises L{ConfigError} for a refused peer option; usage
    mistakes exit 2 through argparse.
    """
    from hubtwist.config import ConfigError

    options, after = _split_command(argv)
    for word in options:
        flag = word.partition("=")[0]
        if flag in UNSUPPORTED:
            raise ConfigError("", f"{flag} is not supported: {UNSUPPORTED[flag]} (see "
                              "docs/migrating.md)", source="command line")
    args = _parser().parse_intermixed_args(options)
    command, args.command = [*args.command, *after], []
    return args, command


# Single-app flags -> the ServerConfig keys they set; they need a command, not --config.
_SERVER_FLAGS = {
    "app_port": ("--destport", "port"), "timeout": ("--timeout", "timeout"),
    "ready_check_path": ("--ready-check-path", "ready_check_path"),
    "restart": ("--restart", "restart"),
    "request_timeout": ("--request-timeout", "request_timeout"),
    "unix_socket": ("--unix-socket", "unix_socket"),
    "absolute_url": ("--absolute-url", "absolute_url"),
    "raw_socket_proxy": ("--raw-socket-proxy", "raw_socket_proxy"),
    "autostart": ("--autostart", "autostart"),
    "environment": ("--environment", "environment"), "mappath": ("--mappath", "mappath"),
    "request_headers_override": ("--request-headers-override", "request_headers_override"),
    "exclude_last_activity_patterns": ("--exclude-last-activity-patterns",
                                       "exclude_last_activity_patterns"),
    "websocket_max_message_size": ("--websocket-max-message-size", "websocket_max_message_size"),
    "logs": ("--no-logs", "log_output"),
}


def _literal(text: str, flag: str):
    import ast
    import json

    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)  # traitlets' own format for these options
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        from hubtwist.config import ConfigError

        raise ConfigError("", f"{flag} is not valid JSON", given=text, has_given=True,
                          source="command line") from None


def _pairs(values: list[str], flag: str) -> dict | str:
    """C{KEY=VALUE} words (repeatable, as traitlets takes a dict), or one JSON object; a
    single word without C{=} is left for the schema (C{--mappath}'s import path)."""
    from hubtwist.config import ConfigError

    if len(values) == 1 and values[0].lstrip().startswith("{"):
        return _literal(values[0], flag)
    if len(values) == 1 and "=" not in values[0] and flag == "--mappath":
        return values[0]
    table = {}
    for value in values:
        key, eq, item = value.partition("=")
        if not eq or not key:
            raise ConfigError("", f"{flag} takes KEY=VALUE (repeatable) or a JSON object",
                              given=value, has_given=True, source="command line")
        table[key] = item
    return table


def _unix_socket(value: str) -> bool | str:
    from hubtwist.config import ConfigError

    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    if "/" not in value:
        # `--unix-socket streamlit run ...` without `--` would take the app's first word.
        raise ConfigError("", "--unix-socket takes true, false or a socket path containing "
                          "'/' (write --unix-socket=PATH, or put the command after --)",
                          given=value, has_given=True, source="command line")
    return value


def _flag_value(dest: str, value):
    """A single-app flag's value in the form of its config key (None: not given)."""
    flag = _SERVER_FLAGS[dest][0]
    if value in (None, False) and dest not in ("logs",):
        return None
    if dest == "unix_socket":
        return _unix_socket(value)
    if dest in ("environment", "mappath", "request_headers_override"):
        return _pairs(value, flag)
    if dest == "exclude_last_activity_patterns":
        if len(value) == 1 and value[0].lstrip().startswith("["):
            return _literal(value[0], flag)
        return list(value)
    if dest == "websocket_max_message_size" and value == 0:
        return None  # the peers' 0 is "the library's default": hubtwist's own here
    return value


def _coerce(model, key: str, value, flag: str, path: str | None = None):
    """C{value} checked by the schema's kind for C{model.key}; errors name C{flag} and
    C{path} (the key's place in a file, C{key} by default)."""
    import attrs

    from hubtwist.config import ConfigError

    kind = attrs.fields_dict(model)[key].metadata["kind"]
    try:
        return kind.coerce(value, path or key)
    except ConfigError as error:
        raise error.with_source(flag) from None


def _expand_command(args: argparse.Namespace, command: list[str]) -> list[str]:
    """Fill the command line's own templates ({-}, {--}, {presentation_*}) now; the rest
    ({port}, {prefix} ...) is filled when the app starts."""
    from hubtwist.config import ConfigError
    from hubtwist.config.templates import COMMAND_LINE_NAMES, expand_some, presentation_values, uses

    values = {"-": "-", "--": "--"}
    if args.presentation_path is not None:
        values.update(presentation_values(args.presentation_path))
    expanded = []
    for index, arg in enumerate(command):
        path = f"command[{index}]"
        missing = [name for name in COMMAND_LINE_NAMES if name not in values and uses(
            expand_some(arg, {}, path), name)]
        if missing:
            raise ConfigError("", f"the command uses {{{missing[0]}}} but --presentation-path "
                              "is not given", given=arg, has_given=True, source="command line")
        expanded.append(expand_some(arg, values, path))
    return expanded


def build_config(args: argparse.Namespace, command: list[str]):
    """The L{Config} the flags and the command describe (raises L{ConfigError})."""
    from hubtwist.config import ConfigError, single_app, with_overrides
    from hubtwist.config.schema import HubConfig, ServerConfig

    command = [*(getattr(args, "command", None) or []), *command]
    if command and args.config:
        raise ConfigError("", "give either --config FILE or -- COMMAND, not both",
                          source="command line")
    given = {dest: _flag_value(dest, getattr(args, dest, None)) for dest in _SERVER_FLAGS}
    given = {dest: value for dest, value in given.items() if value is not None}
    if given.get("logs") is True:
        del given["logs"]  # --logs is the default
    if command:
        server = {key: _coerce(ServerConfig, key, given[dest], flag)
                  for dest, (flag, key) in _SERVER_FLAGS.items() if dest in given}
        config = single_app(_expand_command(args, command), args.name, server)
    elif args.config:
        if given:
            flag = _SERVER_FLAGS[next(iter(given))][0]
            raise ConfigError("", f"{flag} sets the app of `-- COMMAND`; with --config FILE, "
                              "set its key in the file's [servers.NAME] table",
                              source="command line")
        config = load_config_file(args).config
    else:
        raise ConfigError("", "nothing to serve: give --config FILE, or -- COMMAND ARGS... for "
                          "one app (or try `hubtwist demo`)", source="command line")
    config = with_overrides(config, listen=args.listen, base_url=args.base_url,
                            log_level=args.log_level, log_format=args.log_format,
                            access_log=args.access_log,
                            forward_user_info=True if (args.forward_user_info
                                                       or args.query_user_info) else None,
                            keep_alive=True if args.keep_alive else None)
    if args.last_activity_interval is not None:
        import attrs

        interval = _coerce(HubConfig, "activity_interval", args.last_activity_interval,
                           "--last-activity-interval", "hub.activity_interval")
        config = attrs.evolve(config, hub=attrs.evolve(config.hub, activity_interval=interval))
    return config


def listen_for_flags(port: int | None, ip: str | None, service_url: str = "",
                     ssl_keyfile: str = "", ssl_certfile: str = "",
                     ssl_client_ca: str = "") -> str:
    """
    The endpoint description for C{--port}/C{--ip}: each overrides its part of where
    hubtwist would listen otherwise (C{JUPYTERHUB_SERVICE_URL} in Hub mode, with its TLS
    and client-certificate requirement; else 127.0.0.1:8888). C{ip} '' or C{0.0.0.0}:
    every IPv4 interface.
    """
    from urllib.parse import urlsplit

    from hubtwist.config import ConfigError
    from hubtwist.hub.listening import listen_for_service_url

    scheme, host, default_port = "http", "127.0.0.1", 8888
    if service_url:
        parts = urlsplit(service_url)
        scheme, host = parts.scheme, parts.hostname or ""
        # Port 0 (batchspawner: the Hub waits to be told the port) stays 0: any free port.
        default_port = parts.port if parts.port is not None else (
            443 if scheme == "https" else 80)  # as the peers
    host = host if ip is None else ip.strip("[]")
    if port is None:
        port = default_port
    elif not 0 < port < 65536:
        raise ConfigError("", "--port must be a port number from 1 to 65535", given=port,
                          has_given=True, source="command line")
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return listen_for_service_url(f"{scheme}://{netloc}/", ssl_keyfile, ssl_certfile,
                                  ssl_client_ca)


QUERY_USER_INFO_NOTE = (
    "--query-user-info: hubtwist sends the user's identity in headers (X-CDSDashboards-JH-User "
    "as jhsingle-native-proxy's --forward-user-info does, and X-Hubtwist-User), never in the "
    "CDSDASHBOARDS_JH_USER query argument, which would end up in logs and Referer headers; "
    "an app that reads the query argument must read the header instead")


def plan_auth(args: argparse.Namespace, config, environ=os.environ):
    """The mode and authentication (L{AuthPlan}), and the config with Hub-mode defaults
    and with where C{--port}/C{--ip} say to listen."""
    import attrs

    from hubtwist.config import ConfigError
    from hubtwist.hub import resolve_auth, with_hub_defaults
    from hubtwist.hub.listening import check_open_listens

    no_auth = args.no_auth or args.authtype == "none"
    plan = resolve_auth(environ, config, mode=args.mode, token=args.token,
                        token_file=args.token_file, no_auth=no_auth, generate_token=True)
    if plan.mode == "hub" and no_auth:
        raise ConfigError("", "--no-auth only applies to standalone mode; in Hub mode every "
                          "request is checked with the Hub (add --mode standalone to run without it)",
                          source="command line")
    listen_flags = args.listen_port is not None or args.listen_ip is not None
    if listen_flags:
        if args.listen:
            raise ConfigError("", "give either --listen or --port/--ip (--address), not both: "
                              "--listen already says where to listen", source="command line")
        hub = plan.hub if plan.mode == "hub" else None
        config = attrs.evolve(config, listen=(listen_for_flags(
            args.listen_port, args.listen_ip, hub.service_url if hub else "",
            hub.ssl_keyfile if hub else "", hub.ssl_certfile if hub else "",
            hub.ssl_client_ca if hub else ""),))
    config = with_hub_defaults(config, plan, listen_given=bool(args.listen) or listen_flags,
                               base_url_given=args.base_url is not None)
    if plan.open and no_auth:
        check_open_listens(config.listen, args.allow_unauthenticated_public)
    if args.query_user_info:
        plan = attrs.evolve(plan, warnings=(*plan.warnings, QUERY_USER_INFO_NOTE))
    return plan, config


def configure(args: argparse.Namespace, command: list[str]):
    """The mode, authentication and effective L{Config} from the flags: what hubtwist
    starts with, and (the config) what a reload reads again (L{reloader})."""
    return plan_auth(args, build_config(args, command))


def reloader(args: argparse.Namespace, command: list[str]):
    """
    What SIGHUP and C{POST api/reload} call to read the configuration again: the start's
    own path (L{configure}), with the same root check; raises L{ConfigError} like the start
    (logged, and the running configuration kept). C{None} without C{--config}: nothing to
    re-read.
    """
    from hubtwist.config import ConfigError

    if not args.config:
        return None

    def load():
        config = configure(args, command)[1]
        refusal = refuse_root_apps(args, config, os.environ, os.geteuid())
        if refusal:
            raise ConfigError("", refusal, source=args.config)
        return config

    return load


def _fail(message: str) -> None:
    print(f"hubtwist: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def check_config(argv: Sequence[str]) -> None:
    """C{hubtwist check-config FILE}: exit 0 and print the effective config, or exit 2."""
    from hubtwist.config import ConfigError
    from hubtwist.config.dump import to_toml
    from hubtwist.config.loader import load_file
    from hubtwist.config.plugins import NONE

    if len(argv) != 1 or argv[0].startswith("-"):
        _fail("usage: hubtwist check-config FILE")
    try:
        config = load_file(argv[0], NONE).config
    except ConfigError as error:
        _fail(str(error))
    name = argv[0] if argv[0].isprintable() else repr(argv[0])  # one line, any file name
    try:
        sys.stdout.write(f"# {name} is valid; the effective configuration:\n")
        sys.stdout.write(to_toml(config))
        sys.stdout.flush()
    except BrokenPipeError:
        # `check-config FILE | head`: the reader left; the file is valid all the same.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)


def load_config_file(args: argparse.Namespace):
    """C{--config FILE} with the plugins C{--no-plugins}/C{--plugin} pick (a L{Loaded})."""
    from hubtwist.config.loader import load_file
    from hubtwist.config.plugins import choice_from_flags

    return load_file(args.config, choice_from_flags(args.no_plugins, args.plugin))


def list_servers(argv: Sequence[str]) -> None:
    """C{hubtwist list-servers [--config FILE] [--no-plugins] [--plugin NAME]}: each server
    that would be served, where it came from, its URL path and command; exit 0 or 2."""
    from hubtwist.config import ConfigError
    from hubtwist.config.loader import Loaded, load_dict
    from hubtwist.config.plugins import choice_from_flags, load_plugins
    from hubtwist.config.loader import warn_on_stderr

    parser = argparse.ArgumentParser(prog="hubtwist list-servers")
    parser.add_argument("--config", metavar="FILE")
    parser.add_argument("--no-plugins", action="store_true")
    parser.add_argument("--plugin", action="append", metavar="NAME")
    args = parser.parse_args(argv)
    try:
        if args.config:
            loaded = load_config_file(args)
        else:
            found = load_plugins(choice_from_flags(args.no_plugins, args.plugin), warn_on_stderr)
            config = load_dict({"servers": {name: server for name, (server, _) in found.items()}},
                               "plugins")
            loaded = Loaded(config, {name: origin for name, (_, origin) in found.items()})
    except ConfigError as error:
        _fail(str(error))
    rows = [("NAME", "FROM", "PATH", "COMMAND")]
    config = loaded.config
    for name, server in config.servers.items():
        if not server.proxied:
            path = "(not proxied)"
        else:
            path = config.base_url if name == config.default_server else f"{config.base_url}{name}/"
        rows.append((name, loaded.sources.get(name, ""), path, describe_command(server)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    sys.exit(0)


def describe_command(server) -> str:
    """A server's command as C{list-servers} shows it."""
    import shlex

    if callable(server.command):
        function = server.command
        return f"<function {getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', function)}>"
    if not server.command:
        where = server.unix_socket if isinstance(server.unix_socket, str) else f"127.0.0.1:{server.port}"
        return f"(runs elsewhere: {where})"
    # quoted only where a shell would need it to keep one word ({port} stays readable)
    return " ".join(arg if arg and not any(ch.isspace() or ch in "'\"\\$`;&|<>" for ch in arg)
                    else shlex.quote(arg) for arg in server.command)


def demo_config(argv: Sequence[str]) -> list[str]:
    """C{hubtwist demo [OPTIONS]} is C{hubtwist [OPTIONS] -- <this python> -m hubtwist.demo}
    (hubtwist's own page, allowed to run as root)."""
    return [*argv, "--allow-root", "--name", "demo", "--", sys.executable, "-m",
            "hubtwist.demo", "--port", "{port}", "--base-url", "{base_url}"]


def _allow_root(args: argparse.Namespace, environ) -> bool:
    from hubtwist.hub.settings import env_flag

    return args.allow_root or env_flag(environ, "HUBTWIST_ALLOW_ROOT", False)


def choose_user(args: argparse.Namespace, environ, euid: int, in_container) -> str | None:
    """The account to become: C{--user}; else, for a root hubtwist in a container that was
    not told C{--allow-root}, the image's notebook user (see L{container_default_user})."""
    from hubtwist.privileges import container_default_user

    if args.user or euid != 0 or _allow_root(args, environ) or not in_container(environ):
        return args.user
    return container_default_user(environ)


def refuse_root_apps(args: argparse.Namespace, config, environ, euid: int) -> str | None:
    """Why hubtwist must not start (its apps would run as root), or C{None}."""
    from hubtwist.privileges import servers_running_as_root

    if _allow_root(args, environ):
        return None
    names = servers_running_as_root(config, euid)
    if not names:
        return None
    listed = ", ".join(repr(name) for name in names)
    return (f"refusing to run apps as root: hubtwist runs as root and {listed} would run as "
            f"root too. Give --user NAME to run hubtwist and its apps as NAME, set "
            f"servers.{names[0]}.user, or pass --allow-root (or HUBTWIST_ALLOW_ROOT=1) if the "
            "apps really must run as root")


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_guardian"]:
        from hubtwist._guardian import main as guardian_main

        guardian_main()
    if argv[:1] == ["check-config"]:
        check_config(argv[1:])
    if argv[:1] == ["list-servers"]:
        list_servers(argv[1:])
    if argv[:1] == ["chp"]:  # JupyterHub's proxy (configurable-http-proxy's command line)
        from hubtwist.front.cli import main as chp_main

        chp_main(argv[1:])
        return
    demo = argv[:1] == ["demo"]
    if demo:
        argv = demo_config(argv[1:])
    from hubtwist.config import ConfigError

    try:
        args, command = parse_argv(argv)
        plan, config = configure(args, command)
    except ConfigError as error:
        _fail(str(error))

    from hubtwist.privileges import in_container

    dropped = None
    user = choose_user(args, os.environ, os.geteuid(), in_container)
    if user:
        from hubtwist.privileges import drop_privileges, preload

        # Everything hubtwist imports, imported while root: after the drop, Python's own files
        # may be out of the account's reach (drop_privileges then refuses, but a module
        # imported later than that check would fail mid-run).
        preload(config.listen)
        workspaces = [server.cwd for server in config.servers.values() if server.cwd]
        try:
            dropped = drop_privileges(user, workspaces)
        except (KeyError, PermissionError, OSError) as error:
            _fail(error.args[0] if isinstance(error, KeyError) else str(error))
    refusal = refuse_root_apps(args, config, os.environ, os.geteuid())
    if refusal:
        _fail(refusal)

    from twisted.internet import task

    from hubtwist.logs import start_logging

    start_logging(config.log_level, config.log_format)
    if dropped is not None:
        from twisted.logger import Logger

        account, created, workdir = dropped
        Logger(namespace="hubtwist").info(
            "Running as {name} (uid {uid}, gid {gid}){why}{created}{workdir}",
            name=account.name, uid=account.uid, gid=account.gid,
            why="" if args.user else " (a container's default user: --user or --allow-root "
                                     "to choose otherwise)",
            created=f"; created {', '.join(created)}" if created else "",
            workdir=f"; working directory {workdir} (the one it was started in is not "
                    "accessible to it)" if workdir else "")
    if _allow_root(args, os.environ) and not demo:
        from hubtwist.privileges import servers_running_as_root

        root_apps = servers_running_as_root(config, os.geteuid())
        if root_apps:
            from twisted.logger import Logger

            Logger(namespace="hubtwist").warn(
                "Apps run as root (--allow-root): {names}", names=", ".join(root_apps))
    task.react(_react_main, [config, plan, reloader(args, command)])


async def _react_main(reactor, config, plan=None, load=None) -> None:
    from hubtwist.app import ListenError, run
    from hubtwist.config import ConfigError

    try:
        await run(reactor, config, plan, load)
    except (ConfigError, ListenError) as error:
        print(f"hubtwist: {error}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR if isinstance(error, ConfigError) else 1) from None
