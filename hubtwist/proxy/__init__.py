"""The HTTP reverse proxy: early-dispatch site, forwarding, rewriting, error pages."""
