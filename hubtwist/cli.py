"""
The command line: argv -> L{Config} -> L{hubtwist.app.run}.

    hubtwist --config FILE [OPTIONS]
    hubtwist [OPTIONS] -- COMMAND ARGS...      one app, served at the base URL
    hubtwist check-config FILE                 validate, print the effective config
    hubtwist demo [OPTIONS]                    a demo app behind hubtwist
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
        epilog="After `--`, the command of a single app; {port}, {unix_socket} and {base_url} "
               "are filled in. Docs: docs/configuration.md.",
    )
    parser.add_argument("--version", action="version", version=f"hubtwist {__version__}")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument("--listen", action="append", metavar="DESCRIPTION",
                        help="where to listen, a Twisted endpoint description (repeatable); "
                             "default tcp:8888:interface=127.0.0.1")
    parser.add_argument("--base-url", metavar="PATH", help="public path prefix, default /")
    parser.add_argument("--log-level", choices=("debug", "info", "warn", "error"))
    parser.add_argument("--log-format", choices=("text", "json"))
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=None,
                        help="one log line per request (config key access_log; default off)")
    parser.add_argument("--debug", action="store_const", const="debug", dest="log_level",
                        help="same as --log-level debug")
    parser.add_argument("--user", metavar="NAME|UID[:GID]",
                        help="started as root: create the account's home (and missing app "
                             "working directories under it), then drop root for good before "
                             "listening and starting apps. In a container, a root hubtwist "
                             "without --user becomes $NB_UID[:$NB_GID], else uid 1000:100 if "
                             "that user exists")
    parser.add_argument("--allow-root", action="store_true",
                        help="let apps run as root (also $HUBTWIST_ALLOW_ROOT=1); without it, "
                             "a root hubtwist refuses to start apps that have no other `user`")
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
    auth.add_argument("--no-auth", action="store_true",
                      help="standalone: no token; only on loopback or a unix socket")
    auth.add_argument("--authtype", choices=("oauth", "none"),
                      help="jhsingle-native-proxy's spelling: none = --no-auth")
    auth.add_argument("--allow-unauthenticated-public", action="store_true",
                      help="allow --no-auth on addresses other machines can reach")
    auth.add_argument("--forward-user-info", action="store_true",
                      help="Hub mode: send the user's name and groups to the apps in headers")
    auth.add_argument("--keep-alive", "--force-alive", "--force-keep-alive", action="store_true",
                      dest="keep_alive", help="Hub mode: report activity even when idle")
    auth.add_argument("--no-force-alive", action="store_false", dest="keep_alive",
                      help=argparse.SUPPRESS)
    auth.add_argument("--last-activity-interval", type=float, metavar="SECONDS",
                      help="Hub mode: seconds between activity reports (0: none)")
    app = parser.add_argument_group("single-app mode (with -- COMMAND)")
    app.add_argument("--name", default="app", help="the app's name (default: app)")
    app.add_argument("--port", "--destport", type=int, metavar="N", dest="app_port",
                     help="port the app listens on (default: a free one)")
    app.add_argument("--unix-socket", action="store_true",
                     help="serve the app on a unix socket in a private directory")
    app.add_argument("--timeout", "--ready-timeout", type=float, dest="timeout",
                     help="seconds the app has to become ready")
    app.add_argument("--ready-check-path", help="path probed for readiness (default /)")
    app.add_argument("--absolute-url", action="store_true", help="do not strip the prefix")
    app.add_argument("--restart", choices=("on-failure", "always", "never"))
    app.add_argument("--request-timeout", type=float, metavar="SECONDS",
                     help="seconds the app has to start answering a request")
    app.add_argument("--autostart", action="store_true",
                     help="start the app at once instead of on the first request")
    return parser


def _split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        index = list(argv).index("--")
        return list(argv[:index]), list(argv[index + 1:])
    return list(argv), []


def build_config(args: argparse.Namespace, command: list[str]):
    """The L{Config} the flags and the command describe (raises L{ConfigError})."""
    from hubtwist.config import ConfigError, load_toml, single_app, with_overrides

    if command and args.config:
        raise ConfigError("", "give either --config FILE or -- COMMAND, not both",
                          source="command line")
    if command:
        server = {key: value for key, value in {
            "port": args.app_port, "timeout": args.timeout,
            "ready_check_path": args.ready_check_path, "restart": args.restart,
            "request_timeout": args.request_timeout,
            "unix_socket": True if args.unix_socket else None,
            "absolute_url": True if args.absolute_url else None,
            "autostart": True if args.autostart else None,
        }.items() if value is not None}
        config = single_app(command, args.name, server)
    elif args.config:
        config = load_toml(args.config)
    else:
        raise ConfigError("", "nothing to serve: give --config FILE, or -- COMMAND ARGS... for "
                          "one app (or try `hubtwist demo`)", source="command line")
    config = with_overrides(config, listen=args.listen, base_url=args.base_url,
                            log_level=args.log_level, log_format=args.log_format,
                            access_log=args.access_log,
                            forward_user_info=True if args.forward_user_info else None,
                            keep_alive=True if args.keep_alive else None)
    if args.last_activity_interval is not None:
        import attrs

        from hubtwist.config.schema import HubConfig

        kind = attrs.fields_dict(HubConfig)["activity_interval"].metadata["kind"]  # the schema's
        try:
            interval = kind.coerce(args.last_activity_interval, "hub.activity_interval")
        except ConfigError as error:
            raise error.with_source("--last-activity-interval") from None
        config = attrs.evolve(config, hub=attrs.evolve(config.hub, activity_interval=interval))
    return config


def plan_auth(args: argparse.Namespace, config, environ=os.environ):
    """The mode and authentication (L{AuthPlan}), and the config with Hub-mode defaults."""
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
    config = with_hub_defaults(config, plan, listen_given=bool(args.listen),
                               base_url_given=args.base_url is not None)
    if plan.open and no_auth:
        check_open_listens(config.listen, args.allow_unauthenticated_public)
    return plan, config


def _fail(message: str) -> None:
    print(f"hubtwist: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def check_config(argv: Sequence[str]) -> None:
    """C{hubtwist check-config FILE}: exit 0 and print the effective config, or exit 2."""
    from hubtwist.config import ConfigError, load_toml
    from hubtwist.config.dump import to_toml

    if len(argv) != 1 or argv[0].startswith("-"):
        _fail("usage: hubtwist check-config FILE")
    try:
        config = load_toml(argv[0])
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
    demo = argv[:1] == ["demo"]
    if demo:
        argv = demo_config(argv[1:])
    options, command = _split_command(argv)
    args = _parser().parse_args(options)

    from hubtwist.config import ConfigError

    try:
        config = build_config(args, command)
        plan, config = plan_auth(args, config)
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
    task.react(_react_main, [config, plan])


async def _react_main(reactor, config, plan=None) -> None:
    from hubtwist.app import ListenError, run
    from hubtwist.config import ConfigError

    try:
        await run(reactor, config, plan)
    except (ConfigError, ListenError) as error:
        print(f"hubtwist: {error}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR if isinstance(error, ConfigError) else 1) from None
