"""Stored baseline references: golden-batch envelopes per equipment + product + tag + alignment, and
batch MSPC models per equipment + product, in the catalog's database (storage/db.py, tables of migration
30), so live runs and pages use them without computing them again.

A row keeps the reference's JSON document exactly as processing made it — processing.envelope.Envelope.to_json
(format "biopilot-envelope-1") or processing.mspc.MspcModel.to_json ("biopilot-mspc-1"); storage does not
interpret it — with the baseline run ids it rests on, the number of grid points, and when and by whom it was
computed. `alignment` is the alignment's key (processing.baseline.alignment_key): "time_since_inoculation",
"phase_landmarks:fed_batch,harvest", …; the landmark reference times are in the document.

Saving a reference of the same key (equipment, product, tag, alignment for an envelope; equipment, product for
a model) replaces it. Listings without `docs` read the summaries only (a model's document is ~100 kB).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from biopilot.samples import from_us, to_us
from storage.db import Database

_ENVELOPE_COLUMNS = "equipment, product, tag, alignment, unit, runs, n_runs, points, computed_us, computed_by"
_MODEL_COLUMNS = (
    "equipment, product, alignment, variables, runs, n_runs, n_components, points, computed_us, computed_by"
)
_UPSERT_ENVELOPE = (
    f"INSERT INTO baseline_envelopes ({_ENVELOPE_COLUMNS}, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (equipment, product, tag, alignment) DO UPDATE SET unit = excluded.unit,"
    " runs = excluded.runs, n_runs = excluded.n_runs, points = excluded.points,"
    " computed_us = excluded.computed_us, computed_by = excluded.computed_by, doc = excluded.doc"
)
_UPSERT_MODEL = (
    f"INSERT INTO mspc_models ({_MODEL_COLUMNS}, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (equipment, product) DO UPDATE SET alignment = excluded.alignment,"
    " variables = excluded.variables, runs = excluded.runs, n_runs = excluded.n_runs,"
    " n_components = excluded.n_components, points = excluded.points, computed_us = excluded.computed_us,"
    " computed_by = excluded.computed_by, doc = excluded.doc"
)


@dataclass(frozen=True)
class StoredEnvelope:
    """A stored golden-batch envelope of one tag. doc: Envelope.to_json() (None in a summary listing)."""

    equipment: str
    product: str  # "" for runs without a product
    tag: str
    alignment: str  # the alignment key
    unit: str
    runs: tuple[str, ...]  # the baseline run ids used
    points: int  # grid points
    computed: datetime
    computed_by: str
    doc: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The summary (without the document)."""
        return {
            "equipment": self.equipment,
            "product": self.product,
            "tag": self.tag,
            "alignment": self.alignment,
            "unit": self.unit,
            "runs": list(self.runs),
            "points": self.points,
            "computed": self.computed.isoformat(),
            "computed_by": self.computed_by,
        }


@dataclass(frozen=True)
class StoredModel:
    """A stored batch MSPC model of one equipment + product. doc: MspcModel.to_json() (None in a summary)."""

    equipment: str
    product: str
    alignment: str
    variables: tuple[str, ...]  # the tags, in the model's column order
    runs: tuple[str, ...]
    n_components: int
    points: int
    computed: datetime
    computed_by: str
    doc: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "equipment": self.equipment,
            "product": self.product,
            "alignment": self.alignment,
            "variables": list(self.variables),
            "runs": list(self.runs),
            "n_components": self.n_components,
            "points": self.points,
            "computed": self.computed.isoformat(),
            "computed_by": self.computed_by,
        }


class References:
    """The stored envelopes and MSPC models, in the catalog's database (`catalog.db`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, envelopes: Sequence[StoredEnvelope] = (), model: StoredModel | None = None) -> None:
        """Store envelopes and a model in one transaction (each replaces the one of the same key)."""
        env_rows = [
            (
                e.equipment,
                e.product,
                e.tag,
                e.alignment,
                e.unit,
                json.dumps(list(e.runs)),
                len(e.runs),
                e.points,
                to_us(e.computed),
                e.computed_by,
                _doc(e.doc, f"envelope of {e.tag}"),
            )
            for e in envelopes
        ]
        with self.db.transaction("store baseline references") as cur:
            if env_rows:
                cur.executemany(_UPSERT_ENVELOPE, env_rows)
            if model is not None:
                cur.execute(
                    _UPSERT_MODEL,
                    (
                        model.equipment,
                        model.product,
                        model.alignment,
                        json.dumps(list(model.variables)),
                        json.dumps(list(model.runs)),
                        len(model.runs),
                        model.n_components,
                        model.points,
                        to_us(model.computed),
                        model.computed_by,
                        _doc(model.doc, f"MSPC model of {model.equipment}"),
                    ),
                )

    def envelopes(
        self,
        equipment: str | None = None,
        product: str | None = None,
        *,
        alignment: str | None = None,
        tag: str | None = None,
        docs: bool = True,
    ) -> list[StoredEnvelope]:
        """Stored envelopes (with their documents unless docs=False) by equipment, product, tag, alignment."""
        where, params = _filters(equipment=equipment, product=product, alignment=alignment, tag=tag)
        cols = _ENVELOPE_COLUMNS + (", doc" if docs else "")
        rows = self.db.query(
            f"SELECT {cols} FROM baseline_envelopes{where} ORDER BY equipment, product, alignment, tag",
            params,
        )
        return [_envelope(r, docs) for r in rows]

    def model(self, equipment: str, product: str, *, docs: bool = True) -> StoredModel | None:
        models = self.models(equipment, product, docs=docs)
        return models[0] if models else None

    def models(
        self, equipment: str | None = None, product: str | None = None, *, docs: bool = False
    ) -> list[StoredModel]:
        where, params = _filters(equipment=equipment, product=product)
        cols = _MODEL_COLUMNS + (", doc" if docs else "")
        rows = self.db.query(f"SELECT {cols} FROM mspc_models{where} ORDER BY equipment, product", params)
        return [_model(r, docs) for r in rows]

    def stamp(self, equipment: str, product: str) -> tuple[int, int, int]:
        """(newest envelope computed_us, model computed_us, envelope count) of an equipment + product: it
        changes whenever a reference is saved again (what a reader caches its parsed documents by)."""
        env = self.db.query(
            "SELECT MAX(computed_us), COUNT(*) FROM baseline_envelopes WHERE equipment = ? AND product = ?",
            (equipment, product),
        )
        mod = self.db.query(
            "SELECT computed_us FROM mspc_models WHERE equipment = ? AND product = ?", (equipment, product)
        )
        e_us, count = env[0] if env else (None, 0)
        return (int(e_us or 0), int(mod[0][0]) if mod else 0, int(count or 0))

    def delete(self, equipment: str, product: str) -> int:
        """Remove every stored reference of an equipment + product; the number of rows removed."""
        with self.db.transaction(f"remove the baseline references of {equipment}") as cur:
            n = len(
                cur.execute(
                    "SELECT tag FROM baseline_envelopes WHERE equipment = ? AND product = ?",
                    (equipment, product),
                )
            ) + len(
                cur.execute(
                    "SELECT equipment FROM mspc_models WHERE equipment = ? AND product = ?",
                    (equipment, product),
                )
            )
            cur.execute(
                "DELETE FROM baseline_envelopes WHERE equipment = ? AND product = ?", (equipment, product)
            )
            cur.execute("DELETE FROM mspc_models WHERE equipment = ? AND product = ?", (equipment, product))
        return n


def _doc(doc: Mapping[str, Any] | None, what: str) -> str:
    if doc is None:
        raise ValueError(f"the {what} has no document to store")
    return json.dumps(doc, separators=(",", ":"))


def _filters(**values: str | None) -> tuple[str, tuple[object, ...]]:
    where, params = [], []
    for column, value in values.items():
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    return (" WHERE " + " AND ".join(where) if where else ""), tuple(params)


def _envelope(row: tuple[Any, ...], docs: bool) -> StoredEnvelope:
    eq, product, tag, alignment, unit, runs, _n, points, computed, by = row[:10]
    return StoredEnvelope(
        str(eq),
        str(product),
        str(tag),
        str(alignment),
        str(unit),
        tuple(json.loads(str(runs))),
        int(points),
        from_us(int(computed)),
        str(by),
        json.loads(str(row[10])) if docs else None,
    )


def _model(row: tuple[Any, ...], docs: bool) -> StoredModel:
    eq, product, alignment, variables, runs, _n, a, points, computed, by = row[:10]
    return StoredModel(
        str(eq),
        str(product),
        str(alignment),
        tuple(json.loads(str(variables))),
        tuple(json.loads(str(runs))),
        int(a),
        int(points),
        from_us(int(computed)),
        str(by),
        json.loads(str(row[10])) if docs else None,
    )
