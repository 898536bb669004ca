"""
The frozen binary's entry point: the same as the `hubtwist` console script, plus
`-m hubtwist.MODULE ARGS...` so that what hubtwist runs as `sys.executable -m ...` from a
source install (the demo app) also works when `sys.executable` is the binary itself.
"""

import sys


def self_test() -> None:
    """`hubtwist _selftest`: import what is imported lazily or found by a directory scan at
    run time, so that a bundle missing any of it fails in the build, not in production."""
    import os
    import pkgutil

    import hubtwist

    checked = []
    for module in pkgutil.walk_packages(hubtwist.__path__, "hubtwist."):
        if module.name not in ("hubtwist.__main__",):
            __import__(module.name)
            checked.append(module.name)
    assert len(checked) > 30, checked

    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    assert type(reactor).__name__ == "EPollReactor", type(reactor)
    from twisted.internet.interfaces import IStreamServerEndpointStringParser
    from twisted.plugin import getPlugins

    for description in ("tcp:0:interface=127.0.0.1", "unix:/tmp/x.sock:mode=600"):
        serverFromString(reactor, description)
    # `systemd:` is a plugin found by scanning twisted/plugins/ (kept as .py files).
    prefixes = {parser.prefix for parser in getPlugins(IStreamServerEndpointStringParser)}
    assert "systemd" in prefixes, f"twisted.plugins endpoint parsers: {sorted(prefixes)}"

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily

    class _One:
        def collect(self):
            family = CounterMetricFamily("selftest", "the binary's metrics exposition")
            family.add_metric([], 1)
            yield family

    registry = CollectorRegistry()
    registry.register(_One())
    assert b"selftest_total 1.0" in generate_latest(registry), "prometheus_client exposition"

    import certifi
    import treq  # noqa: F401
    from twisted.internet import ssl
    from twisted.protocols.tls import TLSMemoryBIOFactory  # noqa: F401
    from OpenSSL import SSL  # noqa: F401

    assert os.path.getsize(certifi.where()) > 10_000, "certifi CA bundle"
    # TLS as `hubtwist chp` and the Hub client use it: an OpenSSL context (libssl through
    # cryptography's bindings) and client options for an IP address (service_identity).
    ssl.CertificateOptions().getContext()
    ssl.optionsForClientTLS("127.0.0.1")
    print(f"hubtwist self-test ok: {len(checked)} hubtwist modules, reactor "
          f"{type(reactor).__name__}, endpoints tcp/unix/systemd, prometheus exposition, "
          "certifi, TLS")


def follow_onefile_parent() -> None:
    """
    A one-file binary runs as two processes: the bootloader, which unpacks the bundle and
    forwards signals, and its child, the real hubtwist. If the bootloader is killed with
    SIGKILL, nothing would tell the child; so the child asks the kernel for a SIGTERM when
    its parent dies (a clean stop of every app), and then removes the unpacked bundle the
    dead bootloader can no longer remove.
    """
    import os

    bundle = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or not bundle:
        return
    parent = os.getppid()
    try:
        same = os.readlink(f"/proc/{parent}/exe") == os.readlink("/proc/self/exe")
    except OSError:
        return
    if not same or not os.path.basename(bundle).startswith("_MEI"):
        return  # one-directory binary, or started by something else: one process
    import atexit
    import ctypes
    import shutil
    import signal

    ctypes.CDLL(None).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)  # the bootloader died before prctl

    def remove_orphaned_bundle() -> None:
        if os.getppid() != parent:
            shutil.rmtree(bundle, ignore_errors=True)

    atexit.register(remove_orphaned_bundle)


def _run() -> None:
    if sys.argv[1:2] != ["_guardian"]:  # the guardian must outlive hubtwist
        follow_onefile_parent()
    if sys.argv[1:2] == ["_selftest"]:
        self_test()
        return
    if len(sys.argv) > 2 and sys.argv[1] == "-m" and sys.argv[2].startswith("hubtwist."):
        import runpy

        module = sys.argv[2]
        sys.argv = [sys.argv[0], *sys.argv[3:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    from hubtwist.cli import main

    main()


if __name__ == "__main__":
    _run()
