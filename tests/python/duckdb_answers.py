"""Answers SQL with DuckDB over a tenant's Watchtrail tables, for the differential test.

The tables are read with the Python `deltalake` package (an independent Delta reader) into
Arrow and registered in DuckDB under their Watchtrail names. Then each line of stdin is one
JSON request {"id": ..., "sql": ...}; each answer is one JSON line
{"id": ..., "rows": [[...], ...]} or {"id": ..., "error": "..."}. Values are JSON scalars:
integers stay integers, floats are floats, timestamps are microseconds since the epoch.

Usage: duckdb_answers.py <store directory> <tenant>
"""
import datetime
import decimal
import json
import sys

import duckdb
from deltalake import DeltaTable


def scalar(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        delta = v - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return str(v)


def main() -> None:
    root, tenant = sys.argv[1], sys.argv[2]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    tables = {}
    for name in ("metrics", "logs", "audit"):
        tables[name] = DeltaTable(f"{root}/{tenant}/{name}").to_pyarrow_table()
        con.register(name, tables[name])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            rows = con.execute(req["sql"]).fetchall()
            out = {"id": req["id"], "rows": [[scalar(v) for v in row] for row in rows]}
        except duckdb.Error as e:
            out = {"id": req["id"], "error": str(e).splitlines()[0]}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
