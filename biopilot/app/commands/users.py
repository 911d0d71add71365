"""`biopilot users add|list|disable|enable|passwd|invite`: who may sign in, with which role, and which
trials a partner is invited to. Admin only (the first user of a data directory is added by its host, and
must be an admin). Every change goes to the audit log with --why.

A new local account gets a one-time password printed once (the user must change it at first sign-in), or its
password from an environment variable or a 0600 file (--password-env VAR: $VAR or $VAR_FILE). A user who
signs in through the plant's identity provider is added with --oidc E-MAIL (and needs no password).

`users list --json`: [{"name", "role", "tenant", "equipment", "display_name", "disabled",
"must_change_password", "has_password", "oidc_subject", "created", "created_by"}]
"""

from __future__ import annotations

import argparse
import json

from biopilot.access import UserRole
from biopilot.app.commands.acting import acting_user, add_user_option, require_admin
from biopilot.app.commands.common import add_config_options, site_config
from biopilot.errors import BioPilotError

ROLES = [r.value for r in UserRole]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("users", help="users, roles and trial invitations (admin)")
    us = sp.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    a = us.add_parser("add", help="add a user (prints a one-time password)")
    _common(a)
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=ROLES)
    a.add_argument("--tenant", default=None, help="a startup member's tenant (the startup's id)")
    a.add_argument(
        "--equipment", action="append", default=[], help="an operator's equipment (repeatable; default: all)"
    )
    a.add_argument("--display-name", default="")
    a.add_argument("--oidc", default=None, metavar="E-MAIL", help="signs in through the identity provider as")
    a.add_argument(
        "--password-env",
        default=None,
        metavar="VAR",
        help="take the password from $VAR (or the 0600 file $VAR_FILE)",
    )
    a.add_argument("--no-password", action="store_true", help="no local password (identity provider only)")
    a.set_defaults(func=_cmd_add)

    ls = us.add_parser("list", help="list users")
    _common(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_cmd_list)

    for action, disabled in (("disable", True), ("enable", False)):
        d = us.add_parser(action, help=f"{action} a user ({'ends their sessions' if disabled else 'again'})")
        _common(d)
        d.add_argument("name")
        d.set_defaults(func=_cmd_disable, disabled=disabled)

    p = us.add_parser("passwd", help="set a new one-time password (or one from --password-env)")
    _common(p)
    p.add_argument("name")
    p.add_argument("--password-env", default=None, metavar="VAR")
    p.set_defaults(func=_cmd_passwd)

    i = us.add_parser("invite", help="invite a partner to a trial (--revoke withdraws it)")
    _common(i)
    i.add_argument("name")
    i.add_argument("--trial", required=True)
    i.add_argument("--revoke", action="store_true")
    i.set_defaults(func=_cmd_invite)


def _common(sp: argparse.ArgumentParser) -> None:
    add_config_options(sp)
    add_user_option(sp)
    sp.add_argument("--why", default="", help="the reason, for the audit log")


def _open(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from storage import open_catalog

    _, config = site_config(args)
    return config, open_catalog(config, args.data_dir)


def _password(args: argparse.Namespace, what: str) -> tuple[str, bool]:
    """(password, must change): from --password-env, else a one-time password."""
    from biopilot.secrets import read_secret
    from processing.queries.auth import one_time_password

    if args.password_env:
        value = read_secret(args.password_env, what=f"--password-env {args.password_env}")
        if value is None:
            raise BioPilotError(f"{what}: ${args.password_env} (or ${args.password_env}_FILE) is not set")
        return value, False
    return one_time_password(), True


def _cmd_add(args: argparse.Namespace) -> int:
    from processing.queries.auth import Authenticator, hash_password

    config, catalog = _open(args)
    try:
        viewer, _ = acting_user(args, catalog)
        if catalog.has_users():
            require_admin(viewer, "add users")
        elif args.role != UserRole.ADMIN.value:
            raise BioPilotError("the first user of a data directory is an admin (--role admin)")
        for eq in args.equipment:
            try:
                config.equipment_by_id(eq)
            except KeyError:
                raise BioPilotError(f"--equipment {eq!r} is not a configured equipment id") from None
        password, must_change = None, False
        if not args.no_password and not (args.oidc and not args.password_env):
            password, must_change = _password(args, f"users add {args.name}")
            Authenticator(catalog).check_new_password(password)
        user = catalog.add_user(
            args.name,
            args.role,
            created_by=viewer.name,
            tenant=args.tenant,
            equipment=args.equipment,
            display_name=args.display_name,
            oidc_subject=args.oidc,
            password_hash=hash_password(password) if password is not None else None,
            must_change=must_change,
        )
        catalog.audit.append(
            viewer.name,
            "user.add",
            user.name,
            why=args.why,
            role=user.role.value,
            tenant=user.tenant,
            equipment=list(user.equipment),
            oidc=user.oidc_subject,
            password="one-time" if must_change else "from environment" if password else "none",
        )
        shown = ""
        if must_change:
            shown = f"; one-time password (shown once, must be changed at first sign-in): {password}"
        print(f"added {user.viewer.describe()}{shown}")
    finally:
        catalog.close()
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    _, catalog = _open(args)
    try:
        viewer, _ = acting_user(args, catalog)
        require_admin(viewer, "list users")
        users = catalog.users()
        invitations = catalog.invitations()
    finally:
        catalog.close()
    if args.json:
        print(json.dumps([u.to_json() for u in users], indent=2))
        return 0
    if not users:
        print(
            "no users: the dashboard is open on 127.0.0.1 only; `biopilot users add NAME --role admin` starts"
        )
        return 0
    print(f"{'user':16} {'role':9} {'tenant / equipment':24} {'state':9} invited to")
    for u in users:
        scope = u.tenant or (
            ", ".join(u.equipment) if u.equipment else "all equipment" if u.role == "operator" else ""
        )
        state = (
            "disabled"
            if u.disabled
            else "new"
            if u.must_change_password
            else "oidc"
            if not u.has_password
            else "active"
        )
        trials = ", ".join(i.trial_id for i in invitations if i.user == u.name)
        print(f"{u.name:16} {u.role.value:9} {scope:24} {state:9} {trials}")
    return 0


def _cmd_disable(args: argparse.Namespace) -> int:
    _, catalog = _open(args)
    try:
        viewer, _ = acting_user(args, catalog)
        require_admin(viewer, "disable or enable users")
        if args.disabled and args.name == viewer.name:
            raise BioPilotError("you cannot disable yourself")
        user = catalog.set_user_disabled(args.name, args.disabled)
        action = "user.disable" if args.disabled else "user.enable"
        catalog.audit.append(viewer.name, action, user.name, why=args.why)
        print(f"{'disabled' if args.disabled else 'enabled'} {user.name}")
    finally:
        catalog.close()
    return 0


def _cmd_passwd(args: argparse.Namespace) -> int:
    from processing.queries.auth import Authenticator

    _, catalog = _open(args)
    try:
        viewer, _ = acting_user(args, catalog)
        require_admin(viewer, "set passwords")
        if catalog.user(args.name) is None:
            raise BioPilotError(f"no user {args.name!r}; `biopilot users list` shows them")
        password, must_change = _password(args, f"users passwd {args.name}")
        Authenticator(catalog).set_password(
            args.name, password, by=viewer.name, must_change=must_change, why=args.why or "reset"
        )
        if must_change:
            print(
                f"{args.name}: one-time password (shown once, must be changed at first sign-in): {password}"
            )
        else:
            print(f"{args.name}: password set from ${args.password_env}")
    finally:
        catalog.close()
    return 0


def _cmd_invite(args: argparse.Namespace) -> int:
    _, catalog = _open(args)
    try:
        viewer, _ = acting_user(args, catalog)
        require_admin(viewer, "invite partners")
        if args.revoke:
            if not catalog.uninvite(args.trial, args.name):
                raise BioPilotError(f"{args.name} is not invited to {args.trial}")
            catalog.audit.append(viewer.name, "trial.uninvite", args.trial, why=args.why, user=args.name)
            print(f"withdrew the invitation of {args.name} to trial {args.trial}")
        else:
            catalog.invite(args.trial, args.name, invited_by=viewer.name)
            catalog.audit.append(viewer.name, "trial.invite", args.trial, why=args.why, user=args.name)
            print(f"invited {args.name} to trial {args.trial}")
    finally:
        catalog.close()
    return 0
