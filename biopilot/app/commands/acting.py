"""Who a command acts as: `--user NAME` or BIOPILOT_USER, on a shared data directory.

Every read command asks the query layer (processing/queries/) for that user's view; every change is checked
against the user's role and appended to the audit log under their name. The CLI does not ask for a password:
whoever can run it on the data directory can read the database file directly — file access is the host's admin
boundary (README, "Who may see what"). `--user` says on whose behalf the command acts and what it may show
them.

A data directory without users is its host's: commands act as the local admin ("local") until the first user
is added. Once there are users, a command must say who it acts as.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from biopilot.access import User, UserRole, Viewer
from biopilot.errors import BioPilotError

if TYPE_CHECKING:
    from biopilot.config import SiteConfig
    from processing.queries import Query
    from storage import Catalog, TimeSeriesStore
    from storage.health import HealthStore


def add_user_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--user",
        default=None,
        help="act as this BioPilot user: what it may see and do (default: $BIOPILOT_USER)",
    )


def acting_user(args: argparse.Namespace, catalog: Catalog) -> tuple[Viewer, User | None]:
    """The viewer a command acts as, and its user record (None for the local admin)."""
    name = getattr(args, "user", None) or os.environ.get("BIOPILOT_USER") or None
    if name is None:
        if catalog.has_users():
            raise BioPilotError(
                "this data directory has users: say who you act as with --user NAME (or BIOPILOT_USER=NAME)"
            )
        return Viewer.local_admin(), None
    user = catalog.user(name)
    if user is None:
        raise BioPilotError(
            f"no user {name!r} (--user / BIOPILOT_USER); an admin adds users with `biopilot users add`"
        )
    if user.disabled:
        raise BioPilotError(f"user {name} is disabled")
    return user.viewer, user


def acting_viewer(args: argparse.Namespace, catalog: Catalog) -> Viewer:
    return acting_user(args, catalog)[0]


def require_admin(viewer: Viewer, what: str) -> None:
    if not viewer.is_admin:
        raise BioPilotError(f"{viewer.name} is a {viewer.role.value}: only an admin may {what}")


def require_equipment(viewer: Viewer, equipment: str, what: str) -> None:
    """Admins, and operators of the equipment, may change its runs and data."""
    if viewer.is_admin:
        return
    if viewer.role == UserRole.OPERATOR and (not viewer.equipment or equipment in viewer.equipment):
        return
    raise BioPilotError(
        f"{viewer.name} is a {viewer.role.value}: only an admin or an operator of {equipment} may {what}"
    )


def query_for(
    viewer: Viewer,
    config: SiteConfig,
    catalog: Catalog,
    store: TimeSeriesStore,
    health: HealthStore | None = None,
) -> Query:
    from processing.queries import open_query

    return open_query(viewer, config, catalog, store, health)


def not_found(what: str, name: str, hint: str) -> BioPilotError:
    """The same words for a thing that does not exist and one the user may not see."""
    return BioPilotError(f"no {what} {name!r} that you may see; {hint}")
