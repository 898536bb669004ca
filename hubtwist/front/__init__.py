"""
hubtwist as JupyterHub's proxy: C{hubtwist chp}, a drop-in for configurable-http-proxy
(CHP) that JupyterHub's stock C{ConfigurableHTTPProxy} class drives unchanged.

  routes.py   the route table (pure): CHP's path rules, longest-prefix lookup by path
              depth, targets parsed once, last_activity, the API's JSON
  proxy.py    the public side: one twisted.web resource over the shared UpstreamPool and
              WebSocketBridge of L{hubtwist.proxy}; CHP's error pages and headers
  lean.py     plain GET/HEAD on hubtwist's lean path (L{hubtwist.proxy.lean}), CHP's way
  api.py      the REST API (C{/api/routes}), token-checked
  tls.py      TLS: the listeners' contexts (C{--ssl-*}, C{--api-ssl-*}), https targets'
              addresses (C{--client-ssl-*}, C{--insecure})
  redirect.py C{--redirect-port}: plain HTTP answered with a 301 to HTTPS
  cli.py      CHP's command line, the listeners, the pid file

The engine is the rest of hubtwist's: L{hubtwist.proxy.lean.LeanFactory} takes plain
GET/HEAD requests without twisted.web, L{hubtwist.proxy.early.StreamingSite} parses the
others, L{hubtwist.proxy.upstream.UpstreamPool} keeps the keep-alive connections to the
targets, L{hubtwist.proxy.websocket.WebSocketBridge} splices WebSockets.
"""
