"""
Process supervision: one L{Supervisor} per app (states, backoff, readiness, process
groups, logs), the guardian that outlives hubtwist, and backend addresses.
"""

from hubtwist.supervise.addresses import BackendAddress
from hubtwist.supervise.guardian import Guardian, shared_guardian
from hubtwist.supervise.states import State
from hubtwist.supervise.supervisor import (
    ExternalServer, ServerUnavailable, Supervisor, supervisor_for,
)

__all__ = [
    "BackendAddress",
    "ExternalServer",
    "Guardian",
    "ServerUnavailable",
    "State",
    "Supervisor",
    "shared_guardian",
    "supervisor_for",
]
