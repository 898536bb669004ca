"""
JupyterHub RBAC scopes: does a set of held scopes grant one of the required ones?

Pure functions. The rules are JupyterHub's own (C{jupyterhub.services.auth.check_scopes}),
for the expanded scopes the Hub returns from C{GET /user}:

  - an unfiltered scope (C{access:servers}) covers every filter of its base;
  - a filter covers itself (C{access:servers!server=alice/});
  - C{!user=U} covers each server of U (C{!server=U/} and C{!server=U/NAME});
  - C{!group=G} is never resolved against users or servers: that needs the Hub's database,
    and JupyterHub's own services do not resolve it either.
"""

from __future__ import annotations

from typing import Iterable


def split_scope(scope: str) -> tuple[str, str | None, str | None]:
    """C{"access:servers!user=alice"} -> C{("access:servers", "user", "alice")}."""
    base, _, scope_filter = scope.partition("!")
    if not scope_filter:
        return base, None, None
    kind, _, value = scope_filter.partition("=")
    return base, kind, value


def covers(held: frozenset[str] | set[str], required: str) -> bool:
    """True when the scopes in C{held} grant the single scope C{required}."""
    base, kind, value = split_scope(required)
    if base in held:
        return True
    if kind is None:
        return False
    if required in held:
        return True
    if kind == "server":
        owner = value.partition("/")[0]
        return f"{base}!user={owner}" in held
    return False


def granted(held: Iterable[str], required: Iterable[str]) -> tuple[str, ...]:
    """The required scopes that C{held} grants; empty when access must be refused."""
    held = frozenset(held)
    return tuple(scope for scope in required if covers(held, scope))
