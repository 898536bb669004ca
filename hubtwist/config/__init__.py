"""
The configuration: attrs models (L{schema}), the loaders that build them, and their errors.

Import from here: C{Config}, C{ServerConfig}, C{ConfigError}, C{load_toml}, C{single_app}.
"""

from hubtwist.config.errors import ConfigError
from hubtwist.config.loader import load_toml, load_toml_text, single_app, with_overrides
from hubtwist.config.schema import Config, LauncherEntry, ServerConfig

__all__ = [
    "Config",
    "ConfigError",
    "LauncherEntry",
    "ServerConfig",
    "load_toml",
    "load_toml_text",
    "single_app",
    "with_overrides",
]
