import pytest

from hubtwist.config import ConfigError
from hubtwist.config.templates import check_template, expand, template_values


def test_expand_fills_known_templates_and_keeps_literal_braces():
    values = template_values(8123, "", "/user/a/")
    assert expand("--port={port} --base={base_url} {{x}}", values) == "--port=8123 --base=/user/a/ {x}"


def test_unix_socket_template_and_port_zero():
    values = template_values(0, "/run/x/app.sock", "/")
    assert expand("{unix_socket}:{port}", values) == "/run/x/app.sock:0"


@pytest.mark.parametrize("text", ["{nope}", "{port!r}", "{port:5}", "{", "}", "{port.real}"])
def test_bad_templates_are_refused(text):
    with pytest.raises(ConfigError):
        check_template(text, "servers.x.command[0]")
