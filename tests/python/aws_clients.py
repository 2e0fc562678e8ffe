"""Drives Watchtrail's AWS APIs with the real boto3 (and botocore's signer), as an SDK user would.

Usage: aws_clients.py ENDPOINT SCENARIO

The credentials come from AWS_SHARED_CREDENTIALS_FILE (profiles `default`, and `reader` for a
read-only key), written from `watchtrail keys create --aws-credentials`. Each scenario prints
one JSON document of what it saw; the Rust test asserts on it and reads the same data back
through SQL.
"""

import datetime
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request

import boto3
import botocore
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.exceptions
import botocore.loaders
import botocore.session

ENDPOINT = sys.argv[1]
SCENARIO = sys.argv[2]
REGION = "us-east-1"
NO_RETRY = botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"})


def client(service, profile="default", region=REGION, session=None):
    s = session or boto3.session.Session(profile_name=profile)
    return s.client(service, endpoint_url=ENDPOINT, region_name=region, config=NO_RETRY)


def session_with_protocol(protocol):
    """A session whose CloudWatch model speaks `protocol` (`query` or `json`): the protocols older
    SDKs and other SDKs send, through botocore's own serializers."""
    root = tempfile.mkdtemp()
    loader = botocore.loaders.Loader()
    model = loader.load_service_model("cloudwatch", "service-2")
    model["metadata"]["protocol"] = protocol
    model["metadata"]["protocols"] = [protocol]
    version = model["metadata"]["apiVersion"]
    path = os.path.join(root, "cloudwatch", version)
    os.makedirs(path)
    with open(os.path.join(path, "service-2.json"), "w") as f:
        json.dump(model, f)
    session = botocore.session.Session(profile="default")
    session.get_component("data_loader").search_paths.insert(0, root)
    return boto3.session.Session(botocore_session=session)


def error_of(call):
    try:
        call()
    except botocore.exceptions.ClientError as e:
        return {
            "code": e.response["Error"]["Code"],
            "message": e.response["Error"].get("Message", ""),
            "status": e.response["ResponseMetadata"].get("HTTPStatusCode"),
            "class": type(e).__name__,
        }
    return None


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def cloudwatch(out):
    t = now().replace(microsecond=0) - datetime.timedelta(minutes=5)
    cw = client("cloudwatch")
    # 1,000 datums: over botocore's 10 KB threshold, so the body goes gzip-compressed.
    data = [
        {
            "MetricName": "Latency",
            "Dimensions": [{"Name": "Host", "Value": f"h{i % 10}"}],
            "Timestamp": t,
            "Value": float(i % 100),
            "Unit": "Milliseconds",
        }
        for i in range(1000)
    ]
    cw.put_metric_data(Namespace="Boto", MetricData=data)
    cw.put_metric_data(
        Namespace="Boto",
        MetricData=[
            {
                "MetricName": "Requests",
                "Timestamp": t,
                "Values": [1.0, 2.0, 3.0],
                "Counts": [1.0, 1.0, 2.0],
                "Unit": "Count",
                "StorageResolution": 1,
            },
            {
                "MetricName": "Batch",
                "Timestamp": t,
                "StatisticValues": {"SampleCount": 4, "Sum": 10, "Minimum": 1, "Maximum": 4},
            },
        ],
    )
    # Every protocol puts and reads.
    for proto in ["query", "json"]:
        other = client("cloudwatch", session=session_with_protocol(proto))
        other.put_metric_data(
            Namespace="Boto",
            MetricData=[{"MetricName": f"Via-{proto}", "Timestamp": t, "Value": 7.0}],
        )
        out[f"stats_{proto}"] = [
            {"Sum": p["Sum"], "SampleCount": p["SampleCount"]}
            for p in other.get_metric_statistics(
                Namespace="Boto",
                MetricName="Requests",
                StartTime=t - datetime.timedelta(minutes=1),
                EndTime=t + datetime.timedelta(minutes=1),
                Period=60,
                Statistics=["Sum", "SampleCount"],
            )["Datapoints"]
        ]
        out[f"invalid_{proto}"] = error_of(
            lambda: other.get_metric_statistics(
                Namespace="Boto",
                MetricName="Latency",
                StartTime=t,
                EndTime=t + datetime.timedelta(minutes=1),
                Period=45,
                Statistics=["Sum"],
            )
        )
    stats = cw.get_metric_statistics(
        Namespace="Boto",
        MetricName="Latency",
        Dimensions=[{"Name": "Host", "Value": "h3"}],
        StartTime=t - datetime.timedelta(minutes=1),
        EndTime=t + datetime.timedelta(minutes=1),
        Period=60,
        Statistics=["SampleCount", "Sum", "Minimum", "Maximum", "Average"],
    )
    out["latency_h3"] = [
        {k: p[k] for k in ["SampleCount", "Sum", "Minimum", "Maximum", "Average", "Unit"]}
        | {"Timestamp": p["Timestamp"].isoformat()}
        for p in stats["Datapoints"]
    ]
    pct = cw.get_metric_statistics(
        Namespace="Boto",
        MetricName="Latency",
        Dimensions=[{"Name": "Host", "Value": "h3"}],
        StartTime=t - datetime.timedelta(minutes=1),
        EndTime=t + datetime.timedelta(minutes=1),
        Period=60,
        ExtendedStatistics=["p50"],
    )
    out["latency_h3_p50"] = [p["ExtendedStatistics"]["p50"] for p in pct["Datapoints"]]
    names = []
    for page in cw.get_paginator("list_metrics").paginate(Namespace="Boto"):
        names += [
            (m["MetricName"], tuple((d["Name"], d["Value"]) for d in m["Dimensions"]))
            for m in page["Metrics"]
        ]
    out["listed"] = sorted({n for n, _ in names})
    out["listed_count"] = len(names)
    out["recent"] = len(cw.list_metrics(Namespace="Boto", RecentlyActive="PT3H")["Metrics"])
    out["by_dimension"] = len(
        cw.list_metrics(Namespace="Boto", Dimensions=[{"Name": "Host", "Value": "h1"}])["Metrics"]
    )
    out["invalid_cbor"] = error_of(
        lambda: cw.put_metric_data(
            Namespace="Boto",
            MetricData=[{"MetricName": "Bad", "Value": 1.0, "Unit": "Parsecs"}],
        )
    )
    out["bad_token"] = error_of(lambda: cw.list_metrics(NextToken="nonsense"))
    reader = client("cloudwatch", profile="reader")
    out["reader_put"] = error_of(
        lambda: reader.put_metric_data(Namespace="Boto", MetricData=[{"MetricName": "X", "Value": 1.0}])
    )
    out["reader_list"] = len(reader.list_metrics(Namespace="Boto")["Metrics"])


def alarms(out):
    cw = client("cloudwatch")
    q = client("cloudwatch", session=session_with_protocol("query"))
    common = dict(
        Namespace="Boto",
        MetricName="Latency",
        Dimensions=[{"Name": "Host", "Value": "h3"}],
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=1,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
    )
    cw.put_metric_alarm(AlarmName="boto-high", Threshold=50.0, Tags=[{"Key": "team", "Value": "sre"}], **common)
    q.put_metric_alarm(AlarmName="boto-low", Threshold=1.5, ActionsEnabled=False, **common)
    names = []
    for page in cw.get_paginator("describe_alarms").paginate(PaginationConfig={"PageSize": 1}):
        names += [a["AlarmName"] for a in page["MetricAlarms"]]
    out["paged"] = names
    high = cw.describe_alarms(AlarmNames=["boto-high"])["MetricAlarms"][0]
    out["high"] = {k: high.get(k) for k in ["Threshold", "Period", "Statistic", "StateValue", "Namespace"]}
    out["high_updated_is_time"] = isinstance(high.get("StateUpdatedTimestamp"), datetime.datetime)
    low = q.describe_alarms(AlarmNamePrefix="boto-l")["MetricAlarms"]
    out["low"] = [{"Threshold": a["Threshold"], "ActionsEnabled": a.get("ActionsEnabled")} for a in low]
    cw.set_alarm_state(AlarmName="boto-high", StateValue="ALARM", StateReason="testing the pager")
    out["in_alarm"] = [a["AlarmName"] for a in cw.describe_alarms(StateValue="ALARM")["MetricAlarms"]]
    history = []
    for _ in range(50):
        history = cw.describe_alarm_history(AlarmName="boto-high", HistoryItemType="StateUpdate")[
            "AlarmHistoryItems"
        ]
        if history:
            break
        time.sleep(0.2)
    out["history"] = [h["HistorySummary"] for h in history]
    cw.disable_alarm_actions(AlarmNames=["boto-high"])
    out["disabled"] = cw.describe_alarms(AlarmNames=["boto-high"])["MetricAlarms"][0]["ActionsEnabled"]
    out["disable_unknown"] = error_of(lambda: cw.disable_alarm_actions(AlarmNames=["boto-high", "nope"]))
    cw.enable_alarm_actions(AlarmNames=["boto-high"])
    out["enabled"] = cw.describe_alarms(AlarmNames=["boto-high"])["MetricAlarms"][0]["ActionsEnabled"]
    out["for_metric"] = [
        a["AlarmName"]
        for a in cw.describe_alarms_for_metric(
            Namespace="Boto", MetricName="Latency", Dimensions=[{"Name": "Host", "Value": "h3"}], Statistic="Maximum"
        )["MetricAlarms"]
    ]
    out["for_other_metric"] = len(
        cw.describe_alarms_for_metric(Namespace="Boto", MetricName="Latency")["MetricAlarms"]
    )
    out["delete_unknown"] = error_of(lambda: cw.delete_alarms(AlarmNames=["boto-low", "nope"]))
    cw.delete_alarms(AlarmNames=["boto-low"])
    out["after_delete"] = [a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]]
    out["bad_operator"] = error_of(
        lambda: cw.put_metric_alarm(AlarmName="bad", Threshold=1.0, **(common | {"ComparisonOperator": "Bigger"}))
    )
    out["reader_put"] = error_of(
        lambda: client("cloudwatch", profile="reader").put_metric_alarm(AlarmName="r", Threshold=1.0, **common)
    )


def logs(out):
    lg = client("logs")
    base = int(time.time() * 1000) - 60_000
    events = [{"timestamp": base + i, "message": f"line {i} {'ERROR' if i % 10 == 0 else 'ok'}"} for i in range(50)]
    r = lg.put_log_events(logGroupName="/boto/app", logStreamName="s1", logEvents=events)
    out["put"] = {"rejected": r.get("rejectedLogEventsInfo")}
    old = [
        {"timestamp": base - 15 * 86_400_000, "message": "too old"},
        {"timestamp": base, "message": "fine"},
    ]
    r = lg.put_log_events(logGroupName="/boto/app", logStreamName="s2", logEvents=old)
    out["put_old"] = r.get("rejectedLogEventsInfo")
    out["unordered"] = error_of(
        lambda: lg.put_log_events(
            logGroupName="/boto/app",
            logStreamName="s2",
            logEvents=[{"timestamp": base + 5, "message": "b"}, {"timestamp": base, "message": "a"}],
        )
    )
    # GetLogEvents: newest page first, then backwards to the start, then forward to the end.
    page = lg.get_log_events(logGroupName="/boto/app", logStreamName="s1", limit=20)
    out["tail"] = [e["message"] for e in page["events"]]
    seen = list(out["tail"])
    token = page["nextBackwardToken"]
    for _ in range(10):
        p = lg.get_log_events(logGroupName="/boto/app", logStreamName="s1", limit=20, nextToken=token)
        if not p["events"]:
            break
        seen = [e["message"] for e in p["events"]] + seen
        token = p["nextBackwardToken"]
    out["backwards"] = seen
    head = lg.get_log_events(logGroupName="/boto/app", logStreamName="s1", limit=30, startFromHead=True)
    nxt = lg.get_log_events(
        logGroupName="/boto/app", logStreamName="s1", limit=30, nextToken=head["nextForwardToken"]
    )
    end = lg.get_log_events(
        logGroupName="/boto/app", logStreamName="s1", limit=30, nextToken=nxt["nextForwardToken"]
    )
    out["forward"] = [e["message"] for e in head["events"] + nxt["events"]]
    out["forward_end"] = {"events": len(end["events"]), "same": end["nextForwardToken"] == nxt["nextForwardToken"]}
    found = []
    for page in lg.get_paginator("filter_log_events").paginate(
        logGroupName="/boto/app", filterPattern="ERROR", PaginationConfig={"PageSize": 2}
    ):
        found += [(e["logStreamName"], e["message"]) for e in page["events"]]
    out["filtered"] = found
    out["bad_pattern"] = error_of(
        lambda: lg.filter_log_events(logGroupName="/boto/app", filterPattern='{ $.a = ')
    )


def log_admin(out):
    lg = client("logs")
    lg.create_log_group(logGroupName="/boto/made")
    out["create_again"] = error_of(lambda: lg.create_log_group(logGroupName="/boto/made"))
    out["create_with_events"] = error_of(lambda: lg.create_log_group(logGroupName="/boto/app"))
    out["bad_group"] = error_of(lambda: lg.create_log_group(logGroupName="bad:name"))
    lg.create_log_stream(logGroupName="/boto/made", logStreamName="first")
    lg.put_retention_policy(logGroupName="/boto/made", retentionInDays=7)
    out["bad_retention"] = error_of(lambda: lg.put_retention_policy(logGroupName="/boto/made", retentionInDays=8))
    groups = []
    for page in lg.get_paginator("describe_log_groups").paginate(
        logGroupNamePrefix="/boto/", PaginationConfig={"PageSize": 1}
    ):
        groups += [(g["logGroupName"], g.get("retentionInDays"), "creationTime" in g) for g in page["logGroups"]]
    out["groups"] = groups
    lg.delete_retention_policy(logGroupName="/boto/made")
    out["delete_retention_again"] = error_of(lambda: lg.delete_retention_policy(logGroupName="/boto/made"))
    streams = lg.describe_log_streams(logGroupName="/boto/app", orderBy="LastEventTime", descending=True)
    out["streams"] = [s["logStreamName"] for s in streams["logStreams"]]
    lg.put_metric_filter(
        logGroupName="/boto/app",
        filterName="errors",
        filterPattern="ERROR",
        metricTransformations=[{"metricName": "Errors", "metricNamespace": "BotoLogs", "metricValue": "1"}],
    )
    out["filters"] = [f["filterName"] for f in lg.describe_metric_filters(logGroupName="/boto/app")["metricFilters"]]
    out["filter_count"] = [
        g["metricFilterCount"] for g in lg.describe_log_groups(logGroupNamePrefix="/boto/app")["logGroups"]
    ]
    lg.put_log_events(
        logGroupName="/boto/app",
        logStreamName="s3",
        logEvents=[{"timestamp": int(time.time() * 1000), "message": "late ERROR"}],
    )
    out["tested"] = [
        m["eventNumber"]
        for m in lg.test_metric_filter(filterPattern="ERROR", logEventMessages=["a ERROR", "fine", "ERROR b"])[
            "matches"
        ]
    ]
    out["bad_filter"] = error_of(
        lambda: lg.put_metric_filter(
            logGroupName="/boto/app",
            filterName="bad",
            filterPattern='{ $.a = ',
            metricTransformations=[{"metricName": "M", "metricNamespace": "N", "metricValue": "1"}],
        )
    )
    lg.delete_metric_filter(logGroupName="/boto/app", filterName="errors")
    out["filters_after"] = len(lg.describe_metric_filters(logGroupName="/boto/app")["metricFilters"])
    out["delete_filter_again"] = error_of(
        lambda: lg.delete_metric_filter(logGroupName="/boto/app", filterName="errors")
    )
    out["reader_create"] = error_of(lambda: client("logs", profile="reader").create_log_group(logGroupName="/r"))


def cloudtrail(out):
    ct = client("cloudtrail")
    found = []
    for page in ct.get_paginator("lookup_events").paginate(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "PutMetricData"}],
        PaginationConfig={"PageSize": 2},
    ):
        found += page["Events"]
    out["lookups"] = len(found)
    out["first"] = {
        "EventName": found[0]["EventName"] if found else None,
        "EventSource": found[0].get("EventSource") if found else None,
        "record": json.loads(found[0]["CloudTrailEvent"])["eventName"] if found else None,
        "ReadOnly": found[0].get("ReadOnly") if found else None,
    }
    eds = "0123abcd-0123-4567-89ab-0123456789ab"
    qid = ct.start_query(
        QueryStatement=f"SELECT eventName, count(*) AS n FROM {eds} WHERE eventName = 'PutMetricData' GROUP BY eventName"
    )["QueryId"]
    out["lake_rows"] = ct.get_query_results(QueryId=qid)["QueryResultRows"]
    out["lake_status"] = ct.describe_query(QueryId=qid)["QueryStatus"]
    qid = ct.start_query(QueryStatement=f"SELECT eventID FROM {eds} ORDER BY eventTime LIMIT 5")["QueryId"]
    rows, token = [], None
    while True:
        page = ct.get_query_results(QueryId=qid, MaxQueryResults=2, **({"NextToken": token} if token else {}))
        rows += page["QueryResultRows"]
        token = page.get("NextToken")
        if not token:
            break
    out["lake_paged"] = len(rows)
    out["lake_bad"] = error_of(lambda: ct.start_query(QueryStatement="SELEC nonsense"))
    out["lake_unknown"] = error_of(lambda: ct.get_query_results(QueryId="00000000-0000-0000-0000-000000000000"))
    out["two_attributes"] = error_of(
        lambda: ct.lookup_events(
            LookupAttributes=[
                {"AttributeKey": "EventName", "AttributeValue": "a"},
                {"AttributeKey": "Username", "AttributeValue": "b"},
            ]
        )
    )


def signatures(out):
    creds = boto3.session.Session(profile_name="default").get_credentials()
    out["wrong_region"] = error_of(
        lambda: client("cloudwatch", region="eu-west-1").list_metrics()
    )
    # A Logs call signed for the `monitoring` service.
    body = json.dumps({"logGroupName": "/boto/app", "logStreamName": "s1"}).encode()
    req = botocore.awsrequest.AWSRequest(
        method="POST",
        url=ENDPOINT + "/",
        data=body,
        headers={"X-Amz-Target": "Logs_20140328.GetLogEvents", "Content-Type": "application/x-amz-json-1.1"},
    )
    botocore.auth.SigV4Auth(creds, "monitoring", REGION).add_auth(req)
    out["wrong_service"] = send(req.prepare())
    # A call signed 16 minutes ago.
    real = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda *a, **k: real(*a, **k) - datetime.timedelta(minutes=16)
    try:
        out["skewed"] = error_of(lambda: client("cloudwatch").list_metrics())
    finally:
        botocore.auth.get_current_datetime = real
    # A presigned Query-protocol URL works until it expires.
    q = client("cloudwatch", session=session_with_protocol("query"))
    url = q.generate_presigned_url("list_metrics", Params={"Namespace": "Boto"}, ExpiresIn=2)
    # botocore signs a Query-protocol URL for the method the operation uses (POST).
    out["presigned_fresh"] = fetch(urllib.request.Request(url, data=b"", method="POST"))
    time.sleep(3.5)
    out["presigned_expired"] = fetch(urllib.request.Request(url, data=b"", method="POST"))
    out["unsigned"] = fetch(ENDPOINT + "/?Action=ListMetrics&Version=2010-08-01")


def send(prepared):
    r = urllib.request.Request(prepared.url, data=prepared.body, headers=dict(prepared.headers), method=prepared.method)
    return fetch(r)


def fetch(req):
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return {"status": r.status, "body": r.read().decode()[:2000]}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode()[:2000]}


def main():
    out = {}
    {"cloudwatch": cloudwatch, "alarms": alarms, "logs": logs, "log_admin": log_admin, "cloudtrail": cloudtrail, "signatures": signatures}[SCENARIO](out)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
