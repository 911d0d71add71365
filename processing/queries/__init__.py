"""The query layer between storage and its readers (dashboard, CLI, exports): every read is made for a
viewer and filtered on the server side (queries/query.py); logins, sessions, passwords (queries/auth.py)."""

from processing.queries.query import Forbidden, Query, open_query

__all__ = ["Forbidden", "Query", "open_query"]
