"""The one bulk reader of query results on PostgreSQL: a table's rows streamed out by `COPY ... TO STDOUT` as CSV
and parsed by Arrow (multi-threaded, several times faster than pandas' CSV reader) into a DataFrame whose
dtypes follow the table's column types (detection's batches, replay's recent days). Timestamps travel as
fixed-width UTC text and come back as `datetime64[ns, UTC]`; floats as float64; small integers (labels,
failure modes) as nullable Int8; other integers as int64 (Int64 where the column is nullable); text as
pandas' `string`."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from sqlalchemy.engine import Engine

_UTC_TEXT = "YYYY-MM-DD HH24:MI:SS.US"
_PANDAS = {pa.string(): pd.StringDtype(), pa.int8(): pd.Int8Dtype()}  # Arrow -> pandas extension types


def arrow_type(column: sa.Column) -> pa.DataType:
    """The Arrow type a column's CSV text is parsed as."""
    if isinstance(column.type, sa.SmallInteger):
        return pa.int8()
    kind = column.type.python_type
    types = {datetime: pa.timestamp("us"), float: pa.float64(), int: pa.int64(), str: pa.string()}
    if kind not in types:
        raise TypeError(f"{column.table.name}.{column.name}: no CSV parsing for {column.type}")
    return types[kind]


def copy_frame(
    engine: Engine,
    table: sa.Table,
    columns: Sequence[str],
    where: sa.ColumnElement[bool],
    order_by: Sequence[str] = (),
) -> pd.DataFrame:
    """`columns` of `table`'s rows matching `where` (in `order_by` order), read by one COPY TO (PostgreSQL)."""
    return copy_select(engine, {c: table.c[c] for c in columns}, table, where, [table.c[c] for c in order_by])


def copy_select(
    engine: Engine,
    columns: Mapping[str, sa.Column],
    source: sa.FromClause,
    where: sa.ColumnElement[bool],
    order_by: Sequence[sa.ColumnElement[Any]] = (),
) -> pd.DataFrame:
    """One column per `columns` (output name -> table column, possibly of joined tables in `source`) of the
    rows matching `where`, in `order_by` order, read by one COPY TO (PostgreSQL)."""
    selected = [
        sa.func.to_char(sa.func.timezone("UTC", column), _UTC_TEXT).label(name)
        if isinstance(column.type, sa.DateTime)
        else column.label(name)
        for name, column in columns.items()
    ]
    query = sa.select(*selected).select_from(source).where(where).order_by(*order_by)
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    buf = io.BytesIO()
    with engine.connect() as conn:
        with (
            conn.connection.driver_connection.cursor() as cur,
            cur.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER)") as copy,
        ):
            for block in copy:
                buf.write(block)
        conn.rollback()
    return parse_csv(buf.getvalue(), columns)


def parse_csv(data: bytes, columns: Mapping[str, sa.Column]) -> pd.DataFrame:
    """A COPY's CSV (with its header) as a DataFrame, one column per `columns` (name -> the table column
    whose type it is parsed by, `arrow_type`)."""
    types = {name: arrow_type(c) for name, c in columns.items()}
    table = pa_csv.read_csv(
        io.BytesIO(data),
        convert_options=pa_csv.ConvertOptions(column_types=types, strings_can_be_null=True),
    )
    df = table.to_pandas(types_mapper=_PANDAS.get, coerce_temporal_nanoseconds=True)
    for name, c in columns.items():
        if types[name] == pa.timestamp("us"):
            df[name] = df[name].dt.tz_localize("UTC")
        elif types[name] == pa.int64() and c.nullable:
            df[name] = df[name].astype("Int64")
    return df
