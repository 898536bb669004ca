# jupyterhub_config.py fragment: each user's server is a container whose entrypoint is the
# hubtwist binary (conf/Dockerfile.example builds such an image). DockerSpawner passes the
# Hub's environment (JUPYTERHUB_API_URL, JUPYTERHUB_API_TOKEN, JUPYTERHUB_SERVICE_PREFIX,
# JUPYTERHUB_SERVICE_URL, ...), so hubtwist runs in Hub mode: it listens where the Spawner
# says, serves under the user's prefix and logs users in through the Hub's OAuth.
c = get_config()  # noqa: F821

c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = "myapps:latest"          # FROM any image + COPY dist/hubtwist
c.DockerSpawner.network_name = "jupyterhub"      # the Hub's docker network
c.JupyterHub.hub_ip = "0.0.0.0"                  # reachable from the containers
c.JupyterHub.hub_connect_ip = "jupyterhub"       # the Hub container's name on that network

# The image's ENTRYPOINT is hubtwist; the Spawner's cmd replaces the image's CMD, so it is
# hubtwist's arguments. No --listen: in Hub mode hubtwist listens on JUPYTERHUB_SERVICE_URL
# (DockerSpawner sets it to 0.0.0.0:8888 in the container).
c.DockerSpawner.cmd = ["--config", "/etc/hubtwist/apps.toml"]
c.DockerSpawner.port = 8888

# Run as the image's non-root user (uid 1000, gid 100): hubtwist needs no root, and the
# apps it starts run as that user too.
c.DockerSpawner.extra_create_kwargs = {"user": "1000:100"}
c.DockerSpawner.remove = True
# hubtwist's own pages are at /user/NAME/; an app at /user/NAME/lab/ etc.
c.Spawner.default_url = "/"
