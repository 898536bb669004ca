# jupyterhub_config.py fragment: each user's server is a Slurm job running hubtwist
# (batchspawner 1.3, JupyterHub >= 2). tests/hpc/test_slurm.py runs both variants below
# against a real one-node Slurm.
c = get_config()  # noqa: F821

c.JupyterHub.spawner_class = "batchspawner.SlurmSpawner"
c.JupyterHub.hub_ip = "0.0.0.0"          # the jobs reach the Hub's API from the compute nodes
c.JupyterHub.hub_connect_ip = "login1"   # the Hub's address as the nodes see it

# Variant 1 (recommended on HPC): the one-file binary alone, nothing else on the node.
# batchspawner gives JUPYTERHUB_SERVICE_URL with port 0; hubtwist then listens on a free
# port and POSTs it to the Hub's batchspawner API itself (with the internal-SSL client
# certificate when internal_ssl is on). The wrapper must be switched off: it runs its
# command with Python's runpy, which cannot run a binary.
c.SlurmSpawner.batchspawner_singleuser_cmd = ""
c.Spawner.cmd = ["/shared/bin/hubtwist", "--config", "/shared/etc/apps.toml"]

# Variant 2: hubtwist pip-installed in a Python environment the jobs see, behind the stock
# wrapper (batchspawner-singleuser picks the port, reports it and runs `hubtwist` with
# runpy). Both must be on the job's PATH, see below.
# c.SlurmSpawner.batchspawner_singleuser_cmd = "/shared/envs/hub/bin/batchspawner-singleuser"
# c.Spawner.cmd = ["hubtwist", "--config", "/shared/etc/apps.toml"]

# JupyterHub 6 passes no PATH to the job (the job gets the user's login PATH): say where
# the environment is (variant 2), or use `module load` in req_prologue.
c.Spawner.environment = {"PATH": "/shared/envs/hub/bin:/usr/local/bin:/usr/bin:/bin"}

# batchspawner waits for the port only until start_timeout, even when the job died at
# once (hubtwist's reason is then in ~/jupyterhub_slurmspawner_<job>.log): keep it close
# to the queue wait you expect.
c.Spawner.start_timeout = 300
c.SlurmSpawner.req_runtime = "8:00:00"
c.SlurmSpawner.req_memory = "4G"
