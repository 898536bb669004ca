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


def test_prefix_is_the_apps_own_public_prefix_beside_base_url():
    from hubtwist.config.templates import server_prefix

    values = template_values(8501, "", "/user/a/", server_prefix("/user/a/", "streamlit", None))
    assert expand("--server.baseUrlPath {prefix} {base_url}", values) == (
        "--server.baseUrlPath /user/a/streamlit/ /user/a/")
    assert server_prefix("/user/a/", "app", "app") == "/user/a/"  # the app owning the base URL
    assert expand("{prefix}", template_values(1, "", "/b/")) == "/b/"  # default: the base URL


def test_a_slash_after_base_url_or_prefix_is_not_doubled():
    values = template_values(1, "", "/user/a/", "/user/a/app/")
    assert expand("{base_url}/", values) == "/user/a/"
    assert expand("{base_url}/proxy/{port}", values) == "/user/a/proxy/1"
    assert expand("{prefix}/static", values) == "/user/a/app/static"
    assert expand("{port}/x", values) == "1/x"


def test_jhsingle_templates():
    values = template_values(1, "", "/", origin_host="hub.example.org")
    assert expand("{--}allow-websocket-origin={origin_host}", values) == (
        "--allow-websocket-origin=hub.example.org")
    assert expand("{-}m", values) == "-m"
    check_template("{--}x={origin_host}{-}{prefix}", "servers.x.command[0]")


def test_expand_some_keeps_the_other_templates_and_the_literal_braces():
    from hubtwist.config.templates import expand_some

    text = expand_some("{--}port={port} {{x}} {presentation_path}",
                       {"--": "--", "presentation_path": "/a{b}"})
    assert text == "--port={port} {{x}} /a{{b}}"
    assert expand(text, template_values(7, "", "/")) == "--port=7 {x} /a{b}"
    with pytest.raises(ConfigError, match="unbalanced braces"):
        expand_some("{", {})


def test_presentation_templates_in_a_file_point_at_the_command_line():
    with pytest.raises(ConfigError, match="--presentation-path"):
        check_template("{presentation_path}", "servers.x.command[0]")


def test_presentation_values_are_made_absolute_as_jhsingle_does():
    from hubtwist.config.templates import presentation_values

    assert presentation_values("nb/a.ipynb", "/srv") == {
        "presentation_path": "/srv/nb/a.ipynb", "presentation_basename": "a.ipynb",
        "presentation_dirname": "/srv/nb"}
