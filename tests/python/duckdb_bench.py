"""Times SQL queries in DuckDB over the Parquet files of Watchtrail's Delta tables: the peer of
`watchtrail-bench query`.

Reads a JSON spec on stdin: {"tables": {name: delta table directory}, "queries": [sql, ...],
"runs": n}. Each table becomes a view over exactly the files its Delta log lists as active (read
with the `deltalake` package). Every query runs once to warm up, then `runs` times. Prints a JSON
list with, per query, the wall times in milliseconds and the number of rows of the answer (as an Arrow
table, the form Watchtrail's gRPC API answers in).
"""
import json
import sys
import time

import duckdb
from deltalake import DeltaTable


def main() -> None:
    spec = json.load(sys.stdin)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name, path in spec["tables"].items():
        files = [uri.removeprefix("file://") for uri in DeltaTable(path).file_uris()]
        listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listing}])")
    out = []
    for sql in spec["queries"]:
        answer = con.sql(sql).to_arrow_table()
        times = []
        for _ in range(spec["runs"]):
            started = time.perf_counter()
            answer = con.sql(sql).to_arrow_table()
            times.append((time.perf_counter() - started) * 1000.0)
        out.append({"ms": times, "rows": answer.num_rows})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
