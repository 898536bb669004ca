"""hubtwist's own pages and API (not proxied)."""
