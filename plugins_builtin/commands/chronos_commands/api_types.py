"""Building blocks the plugin's routers share: identifier types, scope dependencies, problem docs."""

from __future__ import annotations

import re
from typing import Annotated, Any, Union

from fastapi import Path
from pydantic import AwareDatetime, BaseModel, BeforeValidator, StrictInt, StringConstraints, WithJsonSchema
from typing_extensions import TypeAliasType

from chronos.plugin import require_scope

from chronos_commands.whitelist import STORABLE_PATTERN

SYSTEM_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
COMMAND_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
SystemId = Annotated[str, StringConstraints(pattern=SYSTEM_PATTERN)]
CommandName = Annotated[str, StringConstraints(pattern=COMMAND_PATTERN)]
MAX_ID = 2**63 - 1

#: Text the service can store: no control characters but tab and line breaks (checked by the service).
StorableText = Annotated[str, WithJsonSchema({"type": "string", "pattern": STORABLE_PATTERN})]
#: Any JSON value whose strings and keys are storable text (the service checks; depth and size too).
StorableJson = TypeAliasType(
    "StorableJson",
    Union[  # noqa: UP007 - a recursive alias needs the explicit Union
        StorableText,
        int,
        float,
        bool,
        None,
        list["StorableJson"],
        Annotated[
            dict[str, "StorableJson"],
            WithJsonSchema(
                {
                    "type": "object",
                    "propertyNames": {"pattern": STORABLE_PATTERN},
                    "additionalProperties": {"$ref": "#/components/schemas/StorableJson"},
                }
            ),
        ],
    ],
)
_NUMBER = re.compile(r"^\s*[+-]?\d+(\.\d*)?\s*$")


def _iso_only(value: Any) -> Any:
    # pydantic would read a bare number as a Unix timestamp; the API speaks ISO 8601 only.
    if isinstance(value, (int, float)) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError("expected an ISO 8601 date-time with offset, e.g. 2030-03-04T09:00:00+01:00")
    return value


IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]


def integral(value: Any) -> Any:
    # JSON does not tell 2 from 2.0, nor does JSON Schema's ``integer``; a string stays refused.
    if type(value) is float and value.is_integer():
        return int(value)
    return value


#: An integer in a JSON body: strict (no strings, no booleans), but ``2.0`` is the integer 2.
#: Optional with bounds: ``Annotated[StrictInt, Field(ge=..), BeforeValidator(integral)] | None``
#: (bounds given after the validator would not reach the document).
JsonInt = Annotated[StrictInt, BeforeValidator(integral)]
CommandId = Annotated[int, Path(ge=1, le=MAX_ID, description="The command's id.")]
EntryId = Annotated[int, Path(ge=1, le=MAX_ID, description="The whitelist entry's id.")]
WorkflowId = Annotated[int, Path(ge=1, le=MAX_ID, description="The workflow's id.")]

MANAGE = require_scope("commands.manage")
POLL = require_scope("commands.manage", or_system="system_id")
CALLBACK = require_scope("commands.manage", or_any_system=True)
ADMIN = require_scope("admin")
READ = require_scope("events.read")


class ProblemOut(BaseModel):
    """An RFC 9457 problem (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


_PROBLEM_TEXT = {
    404: "No such resource",
    409: "Conflicts with the resource's state",
    422: "Invalid or refused",
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problem statuses a route answers besides the app-wide ones."""
    return {code: {"model": ProblemOut, "description": _PROBLEM_TEXT[code]} for code in codes}
