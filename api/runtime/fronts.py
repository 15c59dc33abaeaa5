"""Stored Pareto fronts: a Pareto query reads the fronts, not the archive.

A front is D_v accuracy (``val_accuracy``, measured on the validation set drawn from the training
set) against a cost: membership never reads test accuracy, which each row carries beside it.
Rows without a D_v accuracy (stored before it was recorded) are on no front and not counted.

For every (dataset, teacher identity) the store keeps, per cost (MFLOPs, adaptive MFLOPs,
parameters) and with or without the teachers' own rows, the architectures on that group's front
(``pareto_members``), and the group's counts of ranked rows (``pareto_groups``). They change in
the transaction that stores architectures:

- new rows are merged into their group's current front (the front of the front and the new
  points is the front of all points: anything the old front dominated stays dominated);
- when rows are replaced (a job's results stored again) the fronts of their groups are rebuilt
  from the group's rows, the only case that reads a whole group.

Every writer first raises the one row of ``pareto_revision`` (which also locks it until the
transaction ends), then locks its groups' rows (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite
writes one transaction at a time). So writers take turns, always in that order (no two wait on
each other crosswise), and a reader that sees an unchanged revision knows every front is
unchanged: the API answers a repeated query from its last response (``api.http.kept``).

A query over several groups (no dataset or no teacher given) takes the front of the union of
their fronts, which is the front of the union of their rows. Ties (equal cost and D_v accuracy)
keep the lowest id, in the stored fronts and in the query alike.

Functions take a SQLAlchemy ``Connection`` or ``Session`` (Core statements only), so the
migration that creates the tables builds the fronts of an existing archive with them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import suppress
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from db.models import COSTS, Architecture, ParetoGroup, ParetoMember, ParetoRevision
from search.pareto import pareto_front

A = cast(Table, Architecture.__table__)
G = cast(Table, ParetoGroup.__table__)
M = cast(Table, ParetoMember.__table__)
R = cast(Table, ParetoRevision.__table__)
VARIANTS = [(cost, with_teacher) for cost in COSTS for with_teacher in (True, False)]
TEACHER_STAGE = "T"
RANKED = "val_accuracy"  # the accuracy a front ranks on: D_v's, never the test set's

Group = tuple[str, str]  # (dataset, teacher identity)
Point = tuple[int, float, float]  # (id, D_v accuracy, cost)


def front_of(points: Iterable[Point]) -> list[Point]:
    """The non-dominated points by increasing cost; of equal points the lowest id."""
    return pareto_front(
        sorted(points, key=lambda p: p[0]), accuracy=lambda p: p[1], cost=lambda p: p[2]
    )


_RAISE = update(R).where(R.c.id == 1).values(revision=R.c.revision + 1)


_REVISION_SQL = f"SELECT revision FROM {R.name} WHERE id = 1"  # the same on every backend


def revision(conn: Connection) -> int:
    """The fronts' revision: it changes whenever any stored front or count does. Read it before
    the fronts: what is read next is then at least as new as the revision it is kept under, and a
    kept response is never served once a later revision is committed.

    Every kept Pareto answer reads it, so it goes through the driver's cursor, in ``conn``'s
    transaction: SQLAlchemy's statement execution took about 180 of its 380 us on PostgreSQL (137
    of 278 on SQLite). A driver error is raised as SQLAlchemy raises one (``DBAPIError``; a
    dropped connection invalidated, so ``Database.loop_read`` tries again on a new one)."""
    dbapi = conn.dialect.loaded_dbapi
    raw = conn.connection.dbapi_connection
    assert raw is not None  # a Connection in use holds its DBAPI connection
    cursor = raw.cursor()
    try:
        cursor.execute(_REVISION_SQL)
        row = cursor.fetchone()
    except dbapi.Error as exc:
        gone = conn.dialect.is_disconnect(exc, raw, cursor)
        if gone:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            _REVISION_SQL, None, exc, dbapi.Error, connection_invalidated=gone, dialect=conn.dialect
        ) from exc
    finally:
        with suppress(dbapi.Error):  # closing a dropped connection's cursor may fail too
            cursor.close()
    if row is None:
        raise LookupError(f"{R.name}: its row is missing (the database is not migrated)")
    return int(row[0])


def _lock(conn: Any, groups: Iterable[Group], revise: bool = True) -> None:
    """The revision raised (its row locked until the transaction ends), then each group's row,
    created when new, locked too (in a fixed order: two writers never wait on each other
    crosswise). ``revise=False``: only the migration that builds the first fronts, before the
    revision's table exists."""
    groups = sorted(set(groups))
    if not groups:  # nothing changes: no revision, no lock
        return
    if revise:
        conn.execute(_RAISE)
    name = (conn.get_bind() if isinstance(conn, Session) else conn).dialect.name
    for dataset, teacher in groups:
        values = {"dataset": dataset, "teacher": teacher, "rows": 0, "rows_without_teacher": 0}
        if name == "postgresql":
            conn.execute(postgresql.insert(G).values(**values).on_conflict_do_nothing())
        elif name == "sqlite":
            conn.execute(sqlite.insert(G).values(**values).on_conflict_do_nothing())
        else:  # pragma: no cover - the service runs on SQLite or PostgreSQL
            if conn.execute(select(G.c.rows).where(_is(G, dataset, teacher))).first() is None:
                conn.execute(insert(G).values(**values))
        conn.execute(select(G.c.rows).where(_is(G, dataset, teacher)).with_for_update())


def _is(table: Any, dataset: str, teacher: str) -> Any:
    return and_(table.c.dataset == dataset, table.c.teacher == teacher)


def _members(conn: Any, group: Group, cost: str, with_teacher: bool) -> list[Point]:
    query = (
        select(A.c.id, A.c[RANKED], A.c[cost])
        .join(M, M.c.architecture_id == A.c.id)
        .where(_is(M, *group), M.c.cost == cost, M.c.with_teacher == with_teacher)
    )
    return [(int(i), float(a), float(c)) for i, a, c in conn.execute(query)]


def _replace(
    conn: Any, group: Group, cost: str, with_teacher: bool, old: set[int], new: set[int]
) -> None:
    gone, joined = old - new, new - old
    if gone:
        conn.execute(
            delete(M).where(
                _is(M, *group),
                M.c.cost == cost,
                M.c.with_teacher == with_teacher,
                M.c.architecture_id.in_(gone),
            )
        )
    if joined:
        conn.execute(
            insert(M),
            [
                {"dataset": group[0], "teacher": group[1], "cost": cost,
                 "with_teacher": with_teacher, "architecture_id": i}
                for i in sorted(joined)
            ],
        )  # fmt: skip


def added(conn: Any, ids: Sequence[int]) -> None:
    """Merge the stored rows ``ids`` (just inserted) into their groups' fronts and counts (rows
    without a D_v accuracy change neither)."""
    if not ids:
        return
    rows = conn.execute(
        select(A.c.id, A.c.dataset, A.c.teacher, A.c.stage, A.c[RANKED], *(A.c[c] for c in COSTS))
        .where(A.c.id.in_(list(ids)), A.c[RANKED].is_not(None))
    ).all()  # fmt: skip
    by_group: dict[Group, list[Any]] = defaultdict(list)
    for row in rows:
        by_group[(row.dataset, row.teacher)].append(row)
    _lock(conn, by_group)
    for group, new in by_group.items():
        without = [r for r in new if r.stage != TEACHER_STAGE]
        conn.execute(
            update(G)
            .where(_is(G, *group))
            .values(rows=G.c.rows + len(new), rows_without_teacher=G.c.rows_without_teacher
                    + len(without))
        )  # fmt: skip
        for cost, with_teacher in VARIANTS:
            current = _members(conn, group, cost, with_teacher)
            points = [(int(r.id), float(getattr(r, RANKED)), float(getattr(r, cost))) for r in
                      (new if with_teacher else without)]  # fmt: skip
            front = front_of([*current, *points])
            _replace(conn, group, cost, with_teacher, {p[0] for p in current},
                     {p[0] for p in front})  # fmt: skip


def removing(conn: Any, ids: Sequence[int]) -> set[Group]:
    """Before the rows ``ids`` are deleted: take them off the fronts; returns their groups,
    whose fronts :func:`rebuild` must then recompute."""
    if not ids:
        return set()
    groups = {
        (d, t)
        for d, t in conn.execute(
            select(A.c.dataset, A.c.teacher).where(A.c.id.in_(list(ids))).distinct()
        )
    }
    _lock(conn, groups)
    conn.execute(delete(M).where(M.c.architecture_id.in_(list(ids))))
    return groups


def rebuild(
    conn: Any,
    groups: Iterable[Group] | None = None,
    *,
    revise: bool = True,
    ranked_on: str = RANKED,
) -> None:
    """Recompute the counts and fronts of ``groups`` (all of them: None) from their rows
    (``revise``: see ``_lock``). ``ranked_on``: only a migration's downgrade, which builds the
    fronts an earlier schema ranked on test accuracy."""
    score = A.c[ranked_on]
    if groups is None:  # everything: groups without rows left go too
        if revise:  # even when no group is left to lock below
            conn.execute(_RAISE)
        conn.execute(delete(M))
        conn.execute(delete(G))
        groups = {(d, t) for d, t in conn.execute(select(A.c.dataset, A.c.teacher).distinct())}
    groups = sorted(set(groups))
    _lock(conn, groups, revise)
    for group in groups:
        rows = conn.execute(
            select(A.c.id, A.c.stage, score, *(A.c[c] for c in COSTS))
            .where(_is(A, *group), score.is_not(None))
        ).all()  # fmt: skip
        without = [r for r in rows if r.stage != TEACHER_STAGE]
        conn.execute(
            update(G)
            .where(_is(G, *group))
            .values(rows=len(rows), rows_without_teacher=len(without))
        )
        conn.execute(delete(M).where(_is(M, *group)))
        for cost, with_teacher in VARIANTS:
            front = front_of(
                (int(r.id), float(r[2]), float(getattr(r, cost)))
                for r in (rows if with_teacher else without)
            )
            _replace(conn, group, cost, with_teacher, set(), {p[0] for p in front})


@cache
def _front_statements(cost: str, include_teacher: bool, by_dataset: bool, by_teacher: bool) -> Any:
    """The two statements of a front query, built once per shape (their SQL is compiled and
    cached by SQLAlchemy once, not rebuilt per request); the dataset and teacher are bound."""
    where = [M.c.cost == cost, M.c.with_teacher == include_teacher]
    group_where = []
    if by_dataset:
        where.append(M.c.dataset == bindparam("dataset"))
        group_where.append(G.c.dataset == bindparam("dataset"))
    if by_teacher:
        where.append(M.c.teacher == bindparam("teacher"))
        group_where.append(G.c.teacher == bindparam("teacher"))
    counted = G.c.rows if include_teacher else G.c.rows_without_teacher
    considered = select(func.coalesce(func.sum(counted), 0)).where(*group_where)
    # the count rides along with the members (one round trip); an empty front asks it alone
    members = (
        select(A, considered.scalar_subquery().label("considered"))
        .join(M, M.c.architecture_id == A.c.id)
        .where(*where)
    )
    return members, considered


def front_rows(
    conn: Any, *, dataset: str | None, teacher: str | None, cost: str, include_teacher: bool
) -> tuple[list[Any], int]:
    """The architectures (whole rows, by increasing cost) on the front of D_v accuracy against
    ``cost`` of those matching the filters, and how many of them have a D_v accuracy: reads the
    groups' stored fronts and counts only."""
    members, considered = _front_statements(cost, include_teacher, bool(dataset), bool(teacher))
    params = {k: v for k, v in (("dataset", dataset), ("teacher", teacher)) if v}
    rows = {int(r.id): r for r in conn.execute(members, params).all()}
    if not rows:
        return [], int(conn.execute(considered, params).scalar())
    front = front_of(
        (i, float(r._mapping[RANKED]), float(r._mapping[cost])) for i, r in rows.items()
    )
    return [rows[p[0]] for p in front], int(next(iter(rows.values())).considered)
