"""Packaging for hubtwist: one reverse proxy and process supervisor for JupyterHub apps."""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "hubtwist" / "__init__.py").read_text(), re.M
).group(1)

setup(
    name="hubtwist",
    version=VERSION,
    description="Put any web app behind JupyterHub: a Twisted reverse proxy and process supervisor",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.11",
    packages=find_packages(include=["hubtwist", "hubtwist.*"]),
    include_package_data=True,
    package_data={"hubtwist": ["py.typed"]},
    install_requires=[
        "twisted[tls]>=25.5,<27",
        "attrs>=23.1",
        "treq>=24.9",
        # GET metrics: the exposition format (the counting itself is hubtwist's own)
        "prometheus-client>=0.20",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "pytest-timeout>=2.3",
            # e2e: a real JupyterHub, a scripted browser, a WebSocket client
            "jupyterhub>=6.1,<7",
            "requests>=2.28",
            "websockets>=13",
            # building the jupyter-server-proxy plugin package of the plugin tests
            "wheel>=0.40",
        ],
    },
    entry_points={"console_scripts": ["hubtwist = hubtwist.cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Framework :: Jupyter :: JupyterHub",
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
    ],
)
