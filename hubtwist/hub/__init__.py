"""
JupyterHub mode and standalone authentication.

  settings    mode detection; Hub settings from flags, the config file and JUPYTERHUB_*
  listening   endpoint descriptions: JUPYTERHUB_SERVICE_URL, loopback-only checks
  scopes      RBAC scope matching (pure)
  oauth       signed values, login state, PKCE, next-URL checks (pure)
  xsrf        JupyterHub's XSRF rules (pure)
  identity    who a token is, and the cache of the Hub's answers (pure)
  client      the Hub API client (treq)
  login       the OAuth login with the Hub, logout, and the cookies they keep
  gate        the Hub auth gate that wraps the router
  tokengate   the standalone token gate
  activity    the activity reporter
  compose     gate + client + reporter, as the plan says
  batchspawner  the port report to a batchspawner Hub (JUPYTERHUB_SERVICE_URL with port 0)
"""

from hubtwist.hub.settings import AuthPlan, HubSettings, resolve_auth, with_hub_defaults

__all__ = ["AuthPlan", "HubSettings", "resolve_auth", "with_hub_defaults"]
