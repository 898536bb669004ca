# jupyterhub_config.py fragment: each user's server is a container whose entrypoint is the
# hubtwist binary (conf/Dockerfile.example builds such an image, conf/container/build-image
# one without a base image or registry). DockerSpawner passes the Hub's environment
# (JUPYTERHUB_API_URL, JUPYTERHUB_API_TOKEN, JUPYTERHUB_SERVICE_PREFIX,
# JUPYTERHUB_SERVICE_URL, ...), so hubtwist runs in Hub mode: it listens where the Spawner
# says, serves under the user's prefix and logs users in through the Hub's OAuth.
# Docker, or podman's Docker-compatible API (`podman system service`, DOCKER_HOST=unix://...).
# tests/containers/test_podman.py runs this file (NETWORK = "host") against podman.
from dockerspawner import DockerSpawner

c = get_config()  # noqa: F821

NETWORK = "bridge"   # a Docker network shared with the Hub's container; or "host"

c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = "myapps:latest"          # FROM any image + COPY dist/hubtwist

# The image's ENTRYPOINT is hubtwist; the Spawner's cmd replaces the image's CMD, so it is
# hubtwist's arguments. No --listen: in Hub mode hubtwist listens on JUPYTERHUB_SERVICE_URL.
c.DockerSpawner.cmd = ["--config", "/etc/hubtwist/apps.toml"]

# Run as the image's non-root user (uid 1000, gid 100): hubtwist needs no root, and the
# apps it starts run as that user too. (As root, hubtwist would become that user itself.)
c.DockerSpawner.extra_create_kwargs = {"user": "1000:100"}
c.DockerSpawner.remove = True                    # stopping the server removes the container
# hubtwist's own pages are at /user/NAME/; an app at /user/NAME/lab/ etc.
c.Spawner.default_url = "/"

if NETWORK == "bridge":
    c.DockerSpawner.network_name = "jupyterhub"  # the Hub's docker network
    c.JupyterHub.hub_ip = "0.0.0.0"              # reachable from the containers
    c.JupyterHub.hub_connect_ip = "jupyterhub"   # the Hub container's name on that network
    c.DockerSpawner.port = 8888                  # JUPYTERHUB_SERVICE_URL: 0.0.0.0:8888

else:
    # The host's network: no Docker network to set up (rootful podman on a plain VM), the
    # Hub on 127.0.0.1. Each server needs a port of its own on the host, and the Hub
    # reaches it on the host's loopback.
    class HostNetworkDockerSpawner(DockerSpawner):
        """DockerSpawner for --network host: a free host port per server."""

        async def start(self):
            from jupyterhub.utils import random_port
            self.port = random_port()
            return await super().start()

        async def get_ip_and_port(self):
            return self.host_ip, self.port

    c.JupyterHub.spawner_class = HostNetworkDockerSpawner
    c.DockerSpawner.network_name = "host"
    # Without it DockerSpawner asks for port bindings, which docker-py refuses:
    # 'InvalidArgument: "host" network_mode is incompatible with port_bindings'.
    c.DockerSpawner.use_internal_ip = True
    c.DockerSpawner.ip = "127.0.0.1"             # hubtwist listens on the host's loopback
    c.DockerSpawner.host_ip = "127.0.0.1"
    c.JupyterHub.hub_ip = "127.0.0.1"
    # podman on a host where root lacks CAP_SYS_RESOURCE: runc cannot raise the limits
    # ("error setting rlimit type 7: operation not permitted"); ask for no more than podman
    # has (nproc at most 32768 with podman 4.3, nofile at most `ulimit -Hn`):
    # c.DockerSpawner.extra_host_config = {"ulimits": [
    #     {"name": "nofile", "soft": 1024, "hard": 1024},
    #     {"name": "nproc", "soft": 1024, "hard": 1024}]}
