"""Identifiers: equipment ids, batch and run ids, tag names and trial ids.

An id is shown on terminals and in the dashboard, keys rows in the catalog and becomes part of file names
(historian exports `<equipment>.csv`, truth files `<batch>.json`), so every id is checked the same way
before anything uses it: not empty, at most MAX_LENGTH characters, printable (no control characters, no
terminal escape sequences, no invisible format characters), no path separator (`/`, `\\`), not `.` or
`..`, no leading or trailing space. Equipment ids also keep out `:`, which separates the equipment from
the batch in a run id (`F-101:B-17`).

`IdError` is a ValueError as well as a BioPilotError, so the checks serve pydantic validators (the config)
and the CLI, the catalog and the importers alike.
"""

from __future__ import annotations

from pathlib import Path

from biopilot.errors import IdError

MAX_LENGTH = 128
_SHOWN = 60  # characters of a bad id quoted in a message


def shown(value: object) -> str:
    """A bad id as a message may quote it: repr (control characters and escapes made visible), cut short."""
    text = value if isinstance(value, str) else str(value)
    return repr(text[:_SHOWN]) + ("…" if len(text) > _SHOWN else "")


def id_problem(value: object, *, colon: bool = True) -> str | None:
    """What is wrong with an id (None: nothing). colon=False: ':' is refused too (equipment ids)."""
    if not isinstance(value, str):
        return f"is {type(value).__name__}, not text"
    if value == "":
        return "is empty"
    if len(value) > MAX_LENGTH:
        return f"is {len(value)} characters long (at most {MAX_LENGTH})"
    bad = next((c for c in value if not c.isprintable()), None)
    if bad is not None:
        return f"contains the control or invisible character U+{ord(bad):04X}"
    if value != value.strip():
        return "starts or ends with a space"
    if "/" in value or "\\" in value:
        return "contains a path separator (/ or \\)"
    if value in (".", ".."):
        return "is a path component ('.' or '..')"
    if not colon and ":" in value:
        return "contains ':' (it separates the equipment from the batch in a run id)"
    return None


def check_id(value: object, what: str, *, colon: bool = True) -> str:
    """`value` if it is a valid id; else IdError naming `what` ("batch id", "tag name"…) and the problem."""
    problem = id_problem(value, colon=colon)
    if problem is not None:
        raise IdError(f"{what} {shown(value)} {problem}")
    assert isinstance(value, str)
    return value


def check_equipment_id(value: object) -> str:
    return check_id(value, "equipment id", colon=False)


def check_batch_id(value: object) -> str:
    return check_id(value, "batch id")


def check_tag_name(value: object) -> str:
    return check_id(value, "tag name")


def check_trial_id(value: object) -> str:
    return check_id(value, "trial id")


def split_run_id(value: object) -> tuple[str, str]:
    """(equipment, batch) of a run id "EQUIPMENT:BATCH"; IdError if either part is not a valid id."""
    if not isinstance(value, str) or ":" not in value:
        raise IdError(f"run id {shown(value)} is not EQUIPMENT:BATCH")
    equipment, batch = value.split(":", 1)
    return check_equipment_id(equipment), check_batch_id(batch)


def check_run_id(value: object) -> str:
    split_run_id(value)
    assert isinstance(value, str)
    return value


def inside(folder: Path, name: str, what: str) -> Path:
    """folder/name, refused (IdError) unless it stays inside `folder`: the last line of defence for file
    names made from ids (which check_id already keeps free of separators)."""
    path = folder / name
    base = folder.resolve()
    if not path.resolve().is_relative_to(base) or path.resolve() == base:
        raise IdError(f"{what} {shown(name)} would write outside {folder}")
    return path
