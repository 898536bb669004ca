"""
Telling a batchspawner Hub where this server listens.

batchspawner (Slurm, PBS, LSF, ...) cannot know the port in advance: the job runs on a node
the scheduler picks. The Hub then gives the server C{JUPYTERHUB_SERVICE_URL} with port 0 and
waits until the job POSTs C{{"port": N}} to C{{JUPYTERHUB_API_URL}/batchspawner}. Its own
wrapper, C{batchspawner-singleuser}, does that before it runs the command with C{runpy} in
its own interpreter, which a frozen hubtwist cannot sit behind. So hubtwist does it itself:
it listens on the port 0 it was given (the kernel picks a free port, with no race between
choosing and binding), then reports the port it got. Behind the wrapper the URL already
names a port, and nothing is reported.
"""

from __future__ import annotations

from typing import Iterable
from urllib.parse import urlsplit

from twisted.logger import Logger

from hubtwist.hub.client import HubClient, HubRefused, HubUnavailable

log = Logger(namespace="hubtwist.hub")


class PortNotReported(Exception):
    """The Hub left the port to this server and could not be told which one it listens on."""


def port_left_to_server(service_url: str) -> bool:
    """
    Whether the Hub leaves the port to this server: C{JUPYTERHUB_SERVICE_URL} names port 0,
    as JupyterHub >= 2 does for a spawner that learns the port later (batchspawner). Pure.
    """
    try:
        return bool(service_url) and urlsplit(service_url).port == 0
    except ValueError:  # a malformed port: listening on it is refused elsewhere
        return False


def port_to_report(hosts: Iterable) -> int | None:
    """The first TCP port among the listening ports' addresses (C{IListeningPort.getHost()}),
    or C{None} when hubtwist listens on no TCP port (a unix socket only). Pure."""
    for host in hosts:
        port = getattr(host, "port", None)
        if isinstance(port, int) and port > 0:
            return port
    return None


async def report_port(client: HubClient, hosts: Iterable) -> int:
    """
    POST the port hubtwist listens on to the Hub's batchspawner API (with this server's
    API token, and the internal-SSL client certificate when the Hub set one); returns it.
    Raises L{PortNotReported} with a sentence saying why not.
    """
    port = port_to_report(hosts)
    if port is None:
        raise PortNotReported(
            "JUPYTERHUB_SERVICE_URL has port 0 (the Hub, batchspawner, waits to be told the "
            "port), but hubtwist listens on no TCP port it could report: drop --listen, or "
            "give one TCP listen")
    try:
        await client.report_port(port)
    except HubRefused as error:
        hint = (" (this Hub has no batchspawner API: is its spawner a batchspawner one?)"
                if error.code == 404 else "")
        raise PortNotReported(f"could not tell the Hub the port {port}: {error}{hint}") from None
    except HubUnavailable as error:
        raise PortNotReported(f"could not tell the Hub the port {port}: {error}") from None
    log.info("Told the Hub (batchspawner API) that this server listens on port {port}", port=port)
    return port
