"""Address and header validation: offline, strict, no DNS lookups.

Every value that ends up in a header is checked here first, so a CR or LF
(header injection) is a 422 long before the ``email`` package would refuse it.
"""

from __future__ import annotations

import re
from email.headerregistry import Address
from email.policy import default as default_policy

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")

# What the API documents and accepts as a recipient (the ``pattern`` of each
# address in the OpenAPI document): ``local@domain`` or ``Name <local@domain>``.
# ASCII local part and domain (internationalised domains in their ``xn--``
# form); a display name of words, or quoted. Matching the pattern is checked
# first, then :func:`parse_address` (which also limits the local part to 64 and
# the domain to 253 characters).
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_ADDR_SPEC = (
    rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
_WORD = r'[^\x00-\x20\x7f-\x9f()<>\[\]:;@\\,."]+'
_QUOTED = r'"[^"\\=\x00-\x1f\x7f-\x9f]*"'
ADDRESS_PATTERN = rf"^(?:{_ADDR_SPEC}|(?:{_QUOTED}|{_WORD}(?: {_WORD})*) ?<{_ADDR_SPEC}>)$"
_ADDRESS_RE = re.compile(ADDRESS_PATTERN)


def header_problem(value: str) -> str | None:
    """Why ``value`` may not go into a header, or None."""
    if "\r" in value or "\n" in value:
        return "line breaks are not allowed in headers"
    if _CONTROL.search(value):
        return "control characters are not allowed in headers"
    return None


def check_recipient(raw: str) -> str:
    """``raw`` when it is a recipient the API accepts (the documented pattern, then :func:`parse_address`)."""
    problem = header_problem(raw)
    if problem:
        raise ValueError(problem)
    if not _ADDRESS_RE.match(raw):
        raise ValueError(f"{raw!r} is not an address: give name@example.com or Name <name@example.com>")
    parse_address(raw)
    return raw


def parse_address(raw: str, *, allow_single_label: bool = False) -> Address:
    """One mailbox (``ada@example.com`` or ``Ada <ada@example.com>``); ValueError says why not.

    The local part must be plain ASCII (no SMTPUTF8), the domain a host name
    (internationalised names become punycode) with at least one dot unless
    ``allow_single_label``. Address literals (``[192.0.2.1]``) are refused.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("an address is required")
    if len(raw) > 320:
        raise ValueError("the address is longer than 320 characters")
    problem = header_problem(raw)
    if problem:
        raise ValueError(problem)
    try:
        header = default_policy.header_factory("To", raw.strip())
        addresses = list(getattr(header, "addresses", ()))
    except Exception:  # noqa: BLE001 - the stdlib parser raises IndexError and friends on some inputs
        raise ValueError(f"{raw!r} is not a valid address") from None
    if getattr(header, "defects", None) or len(addresses) != 1:
        raise ValueError(f"{raw!r} is not one valid address")
    addr = addresses[0]
    local, domain = addr.username, addr.domain
    if not local or not domain:
        raise ValueError(f"{raw!r} needs a local part and a domain")
    if len(local) > 64 or not _LOCAL.match(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        raise ValueError(
            f"the local part {local!r} is not valid (plain ASCII letters, digits and !#$%&'*+/=?^_`{{|}}~.-)"
        )
    if domain.startswith("["):
        raise ValueError("address literals are not supported; use a domain name")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"the domain {domain!r} is not a valid host name") from None
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"the domain {domain!r} is not a valid host name")
    if len(labels) < 2 and not allow_single_label:
        raise ValueError(f"the domain {domain!r} has no dot; use a full domain name")
    if labels[-1].isdigit():
        raise ValueError(f"the domain {domain!r} is not a valid host name")
    return Address(display_name=addr.display_name, username=local, domain=ascii_domain.lower())
