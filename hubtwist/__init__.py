"""hubtwist: a reverse proxy and process supervisor that puts any web app behind JupyterHub.

Kept import-light on purpose: the process guardian (L{hubtwist._guardian}) is started
as C{python -m hubtwist._guardian} and must not pay for Twisted's import.
"""

__version__ = "0.1.0"
