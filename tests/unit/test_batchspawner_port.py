"""The batchspawner port decision and the port to report: pure functions, no reactor."""

from types import SimpleNamespace

from hubtwist.cli import listen_for_flags
from hubtwist.hub.batchspawner import port_left_to_server, port_to_report
from hubtwist.hub.listening import listen_for_service_url


def test_port_zero_in_the_service_url_leaves_the_port_to_the_server():
    # What JupyterHub >= 2 gives a batchspawner job: ip 0.0.0.0, port 0 until reported.
    assert port_left_to_server("http://0.0.0.0:0/user/alice/")
    assert port_left_to_server("https://[::]:0/user/alice/")


def test_a_port_chosen_by_the_hub_or_the_wrapper_is_not_reported():
    assert not port_left_to_server("http://127.0.0.1:8888/user/alice/")
    assert not port_left_to_server("http://0.0.0.0:41234/user/alice/")  # the wrapper's rewrite
    assert not port_left_to_server("http://127.0.0.1/user/alice/")  # no port at all
    assert not port_left_to_server("")
    assert not port_left_to_server("http://127.0.0.1:notaport/")


def test_port_zero_listens_on_any_free_port_of_every_interface():
    assert listen_for_service_url("http://0.0.0.0:0/user/alice/") == "tcp:0:interface=0.0.0.0"


def test_ip_flag_keeps_port_zero_of_the_service_url():
    # --ip alone must not turn the Hub's "port 0" into port 80.
    assert listen_for_flags(None, "127.0.0.1", "http://0.0.0.0:0/user/alice/") == \
        "tcp:0:interface=127.0.0.1"


def test_the_first_tcp_port_is_reported():
    unix = SimpleNamespace(name="/run/hubtwist.sock")
    assert port_to_report([unix, SimpleNamespace(host="0.0.0.0", port=41234),
                           SimpleNamespace(host="::", port=5)]) == 41234
    assert port_to_report([unix]) is None
    assert port_to_report([]) is None
