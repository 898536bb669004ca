"""
jupyter-server-proxy's C{rewrite_response} contract: functions that get a buffered
L{RewritableResponse} and may change its C{code}, C{reason}, C{headers} and C{body}, in
place or by returning a new one. Like jupyter-server-proxy, a function asks for its
arguments by naming them: C{response} plus any of C{request}, C{orig_response}, C{host},
C{port}, C{path}.
"""

from __future__ import annotations

import copy
import inspect
from typing import Callable, Iterator, Mapping

import attrs


class ResponseHeaders:
    """Case-blind multi-valued headers (the subset of tornado's HTTPHeaders that rewriters use)."""

    def __init__(self, pairs: list[tuple[str, str]] | None = None) -> None:
        self._pairs: list[tuple[str, str]] = list(pairs or [])

    def __getitem__(self, name: str) -> str:
        values = self.get_list(name)
        if not values:
            raise KeyError(name)
        return ",".join(values)

    def __setitem__(self, name: str, value: str) -> None:
        del self[name]
        self._pairs.append((name, str(value)))

    def __delitem__(self, name: str) -> None:
        self._pairs = [(k, v) for k, v in self._pairs if k.lower() != name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get_list(name))

    def get(self, name: str, default: str | None = None) -> str | None:
        return self[name] if name in self else default

    def get_list(self, name: str) -> list[str]:
        return [v for k, v in self._pairs if k.lower() == name.lower()]

    def add(self, name: str, value: str) -> None:
        self._pairs.append((name, str(value)))

    def get_all(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._pairs))

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def __repr__(self) -> str:
        return f"ResponseHeaders({self._pairs!r})"


@attrs.define
class RewritableResponse:
    """A whole response from the app, open to change before it goes to the client."""

    code: int
    reason: str
    headers: ResponseHeaders
    body: bytes


def call_with_asked_args(function: Callable, available: Mapping[str, object]):
    """Call C{function} with the arguments it names, from C{available}; an unknown name is a
    C{TypeError} that says which names exist."""
    parameters = inspect.signature(function).parameters
    arguments = {}
    for name, parameter in parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in available:
            arguments[name] = available[name]
        elif parameter.default is parameter.empty:
            raise TypeError(
                f"{getattr(function, '__qualname__', function)!r} asks for {name!r}; "
                f"available: {', '.join(available)}")
    return function(**arguments)


def apply_rewriters(
    rewriters: list[Callable], response: RewritableResponse, context: Mapping[str, object]
) -> RewritableResponse:
    """Run each rewriter in order; each sees the previous one's result."""
    original = copy.deepcopy(response)
    for rewriter in rewriters:
        result = call_with_asked_args(
            rewriter, {**context, "response": response, "orig_response": original})
        if isinstance(result, RewritableResponse):
            response = result
    return response
