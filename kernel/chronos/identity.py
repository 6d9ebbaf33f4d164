"""Who acts: the authenticated caller and the origin of a change.

Plain values at the bottom of the kernel, so contracts, the audit log, keys
and the HTTP layer can all speak of them without depending on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: key id, its scopes and bound command systems."""

    key_id: str
    name: str
    scopes: frozenset[str]
    systems: frozenset[str] = field(default_factory=frozenset)
    scope_used: str | None = None

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def bound_to(self, system: str) -> bool:
        return system in self.systems


@dataclass(frozen=True)
class Origin:
    """Who caused a change and from where, as the audit log records it.

    The HTTP layer builds one per request (``chronos.plugin.origin_of``);
    background work passes ``actor="system:<job>"`` instead.
    """

    principal: Principal | None = None
    ip: str | None = None
    request_id: str | None = None
