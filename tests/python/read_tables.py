"""Reads a tenant's Watchtrail tables with the Python `deltalake` and `pyarrow` packages (an
independent Delta reader) and prints counts and aggregates as JSON, for the open-format test.

Usage: read_tables.py <store directory> <tenant>
"""
import json
import sys

import pyarrow.compute as pc
from deltalake import DeltaTable


def main() -> None:
    root, tenant = sys.argv[1], sys.argv[2]
    out = {}

    metrics = DeltaTable(f"{root}/{tenant}/metrics").to_pyarrow_table()
    out["metrics_rows"] = metrics.num_rows
    out["metrics_value_sum"] = pc.sum(metrics["value"]).as_py()
    out["metrics_max_time_us"] = pc.max(metrics["time"]).cast("int64").as_py()
    out["metrics_series"] = len(
        set(
            (ns, name, tuple(sorted(dims)))
            for ns, name, dims in zip(
                metrics["namespace"].to_pylist(),
                metrics["metric_name"].to_pylist(),
                metrics["dimensions"].to_pylist(),
            )
        )
    )

    logs = DeltaTable(f"{root}/{tenant}/logs").to_pyarrow_table()
    out["logs_rows"] = logs.num_rows
    out["logs_message_bytes"] = pc.sum(pc.binary_length(logs["message"])).as_py()

    audit = DeltaTable(f"{root}/{tenant}/audit").to_pyarrow_table()
    out["audit_rows"] = audit.num_rows
    out["audit_distinct_eventids"] = len(pc.unique(audit["eventid"]))
    names = pc.value_counts(audit["eventname"]).to_pylist()
    out["audit_by_eventname"] = {v["values"]: v["counts"] for v in names}
    out["audit_denied"] = pc.sum(pc.equal(audit["errorcode"], "AccessDenied")).as_py()

    json.dump(out, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
