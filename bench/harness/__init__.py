"""
The side-by-side benchmark harness behind C{bench/run}.

One mode per kind of traffic (L{harness.http_mode}, L{harness.ws_mode}); both share the
installers (L{harness.install}), the peers under test (L{harness.peers}), process handling
and memory sampling (L{harness.procs}) and the report (L{harness.report}). Standard library
only: it must run in whatever Python environment hubtwist is installed in.
"""
