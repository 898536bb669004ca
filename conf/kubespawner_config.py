# jupyterhub_config.py fragment: hubtwist with KubeSpawner, two ways. KubeSpawner passes the
# Hub's environment (JUPYTERHUB_API_URL, JUPYTERHUB_API_TOKEN, JUPYTERHUB_SERVICE_PREFIX,
# JUPYTERHUB_SERVICE_URL, ...), so hubtwist runs in Hub mode: it listens where the Spawner
# says (port 8888 of the pod), serves under /user/NAME/ and logs users in with the Hub's OAuth.
c = get_config()  # noqa: F821

c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.KubeSpawner.port = 8888
c.KubeSpawner.uid = 1000             # hubtwist and its apps run as uid 1000, gid 100
c.KubeSpawner.gid = 100
c.KubeSpawner.fs_gid = 100

VARIANT = "entrypoint"               # or "sidecar"

if VARIANT == "entrypoint":
    # 1. Entrypoint: hubtwist starts and supervises the apps inside the user's container.
    #    Any glibc image works: an init container copies the binary into a shared volume,
    #    so the user image needs no change (or bake it in, conf/Dockerfile.example).
    c.KubeSpawner.image = "quay.io/jupyter/scipy-notebook:latest"
    c.KubeSpawner.init_containers = [{
        "name": "hubtwist-binary",
        "image": "registry.example.org/hubtwist:0.1.0",   # an image holding /hubtwist
        "command": ["cp", "/hubtwist", "/opt/hubtwist/hubtwist"],
        "volumeMounts": [{"name": "hubtwist", "mountPath": "/opt/hubtwist"}],
    }]
    c.KubeSpawner.volumes = [
        {"name": "hubtwist", "emptyDir": {}},
        {"name": "hubtwist-config", "configMap": {"name": "hubtwist-apps"}},  # apps.toml
    ]
    c.KubeSpawner.volume_mounts = [
        {"name": "hubtwist", "mountPath": "/opt/hubtwist"},
        {"name": "hubtwist-config", "mountPath": "/etc/hubtwist"},
    ]
    c.KubeSpawner.cmd = ["/opt/hubtwist/hubtwist", "--config", "/etc/hubtwist/apps.toml"]
    # The binary unpacks itself under $TMPDIR at start: a writable, exec-capable /tmp.
    c.KubeSpawner.environment = {"TMPDIR": "/tmp"}

else:
    # 2. Sidecar: the app's container runs unchanged, next to hubtwist in the same pod
    #    (here on 127.0.0.1:8080, the pod's loopback); hubtwist only proxies to it (a server
    #    with no `command`) and guards it with the Hub's login. KubeSpawner gives the Hub's
    #    variables and the port to the pod's main container, so hubtwist is the main one
    #    and the app is the extra container. hubtwist cannot start a process in another
    #    container: the pod restarts the app.
    c.KubeSpawner.image = "registry.example.org/hubtwist:0.1.0"   # an image holding /hubtwist
    c.KubeSpawner.cmd = ["/hubtwist", "--config", "/etc/hubtwist/sidecar.toml"]
    c.KubeSpawner.volumes = [{"name": "hubtwist-config",
                              "configMap": {"name": "hubtwist-sidecar"}}]
    c.KubeSpawner.volume_mounts = [{"name": "hubtwist-config", "mountPath": "/etc/hubtwist"}]
    c.KubeSpawner.extra_containers = [{
        "name": "app",
        "image": "registry.example.org/my-dashboard:latest",
        "command": ["python", "-m", "my_dashboard", "--host", "127.0.0.1", "--port", "8080"],
        "securityContext": {"runAsUser": 1000, "runAsGroup": 100,
                            "allowPrivilegeEscalation": False},
    }]
    # sidecar.toml (in the ConfigMap `hubtwist-sidecar`):
    #   default_server = "app"
    #   [servers.app]
    #   port = 8080          # no command: already running, only proxied
