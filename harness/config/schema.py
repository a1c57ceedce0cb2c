"""The Ignition 3.x schema as data: field names, JSON types and the spec that added each.

Ignition's own JSON schemas only catch type errors; the semantic rules live in
`harness.config.ignition`. Butane's key names are derived from these tables
(`harness.config.butane`), so a field added here is known to both sides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


def version_tuple(version: str) -> tuple[int, int, int]:
    """``"3.3.0"`` -> ``(3, 3, 0)``; pre-release and build suffixes are ignored."""
    core = re.split(r"[-+]", version, maxsplit=1)[0]
    major, minor, patch = (int(p) for p in core.split("."))
    return major, minor, patch


STRING, INTEGER, BOOLEAN = "string", "integer", "boolean"


@dataclass(frozen=True)
class ListOf:
    """A JSON list whose items are all of one kind."""

    item: Kind


@dataclass(frozen=True)
class Field:
    """A key of an object: its kind and the first spec version that has it."""

    kind: Kind
    since: str = "3.0.0"


@dataclass(frozen=True)
class Obj:
    """A JSON object; *name* identifies it (Butane hangs its extra keys on it)."""

    name: str
    fields: Mapping[str, Field]


Kind = str | ListOf | Obj


def _obj(obj_name: str, /, **fields: Kind | Field) -> Obj:
    return Obj(obj_name, {k: v if isinstance(v, Field) else Field(v) for k, v in fields.items()})


def _resource(name: str, compression_since: str) -> Obj:
    return _obj(
        name,
        compression=Field(STRING, compression_since),
        httpHeaders=Field(ListOf(_obj("httpHeader", name=STRING, value=STRING)), "3.1.0"),
        source=STRING,
        verification=_obj("verification", hash=STRING),
    )


RESOURCE = _resource("resource", "3.0.0")
# Merged configs and certificate authorities could not be compressed before spec 3.1.
CONFIG_RESOURCE = _resource("configResource", "3.1.0")
_OWNER = {"user": _obj("nodeUser", id=INTEGER, name=STRING),
          "group": _obj("nodeGroup", id=INTEGER, name=STRING)}
FILE = _obj("file", path=STRING, overwrite=BOOLEAN, **_OWNER, mode=INTEGER,
            contents=RESOURCE, append=ListOf(RESOURCE))
DIRECTORY = _obj("directory", path=STRING, overwrite=BOOLEAN, **_OWNER, mode=INTEGER)
LINK = _obj("link", path=STRING, overwrite=BOOLEAN, **_OWNER, target=STRING, hard=BOOLEAN)
PARTITION = _obj(
    "partition", label=STRING, number=INTEGER, sizeMiB=INTEGER, startMiB=INTEGER,
    typeGuid=STRING, guid=STRING, wipePartitionEntry=BOOLEAN, shouldExist=BOOLEAN,
    resize=Field(BOOLEAN, "3.2.0"),
)
DISK = _obj("disk", device=STRING, wipeTable=BOOLEAN, partitions=ListOf(PARTITION))
RAID = _obj("raid", name=STRING, level=STRING, devices=ListOf(STRING), spares=INTEGER,
            options=ListOf(STRING))
FILESYSTEM = _obj(
    "filesystem", device=STRING, format=STRING, path=STRING, wipeFilesystem=BOOLEAN,
    label=STRING, uuid=STRING, options=ListOf(STRING),
    mountOptions=Field(ListOf(STRING), "3.1.0"),
)
CLEVIS = _obj(
    "clevis",
    tang=ListOf(_obj("tang", url=STRING, thumbprint=STRING,
                     advertisement=Field(STRING, "3.4.0"))),
    tpm2=BOOLEAN, threshold=INTEGER,
    custom=_obj("clevisCustom", pin=STRING, config=STRING, needsNetwork=BOOLEAN),
)
LUKS = _obj(
    "luks", name=STRING, device=STRING, keyFile=RESOURCE, label=STRING, uuid=STRING,
    options=ListOf(STRING), wipeVolume=BOOLEAN, clevis=CLEVIS,
    discard=Field(BOOLEAN, "3.4.0"), openOptions=Field(ListOf(STRING), "3.4.0"),
    cex=Field(_obj("cex", enabled=BOOLEAN), "3.5.0"),
)
STORAGE = _obj(
    "storage", disks=ListOf(DISK), raid=ListOf(RAID), filesystems=ListOf(FILESYSTEM),
    files=ListOf(FILE), directories=ListOf(DIRECTORY), links=ListOf(LINK),
    luks=Field(ListOf(LUKS), "3.2.0"),
)
DROPIN = _obj("dropin", name=STRING, contents=STRING)
UNIT = _obj("unit", name=STRING, enabled=BOOLEAN, mask=BOOLEAN, contents=STRING,
            dropins=ListOf(DROPIN))
USER = _obj(
    "user", name=STRING, passwordHash=STRING, sshAuthorizedKeys=ListOf(STRING), uid=INTEGER,
    gecos=STRING, homeDir=STRING, noCreateHome=BOOLEAN, primaryGroup=STRING,
    groups=ListOf(STRING), noUserGroup=BOOLEAN, noLogInit=BOOLEAN, shell=STRING,
    system=BOOLEAN, shouldExist=Field(BOOLEAN, "3.2.0"),
)
GROUP = _obj("group", name=STRING, gid=INTEGER, passwordHash=STRING, system=BOOLEAN,
             shouldExist=Field(BOOLEAN, "3.2.0"))
IGNITION = _obj(
    "ignition",
    version=STRING,
    config=_obj("ignitionConfig", merge=ListOf(CONFIG_RESOURCE), replace=CONFIG_RESOURCE),
    timeouts=_obj("timeouts", httpResponseHeaders=INTEGER, httpTotal=INTEGER),
    security=_obj("security", tls=_obj("tls", certificateAuthorities=ListOf(CONFIG_RESOURCE))),
    proxy=Field(_obj("proxy", httpProxy=STRING, httpsProxy=STRING, noProxy=ListOf(STRING)),
                "3.1.0"),
)
CONFIG = _obj(
    "config",
    ignition=IGNITION,
    storage=STORAGE,
    systemd=_obj("systemd", units=ListOf(UNIT)),
    passwd=_obj("passwd", users=ListOf(USER), groups=ListOf(GROUP)),
    kernelArguments=Field(
        _obj("kernelArguments", shouldExist=ListOf(STRING), shouldNotExist=ListOf(STRING)),
        "3.3.0",
    ),
)


def json_type(value: object) -> str:
    """The JSON name of a Python value's type, for "expected X, got Y" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def is_kind(value: object, kind: str) -> bool:
    """Whether *value* is a JSON scalar of *kind* (``bool`` is not an integer here)."""
    if kind == STRING:
        return isinstance(value, str)
    if kind == INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, bool)
