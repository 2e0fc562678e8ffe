"""Writes a copy of a CloudTrail trail bucket with signed digest files, as CloudTrail lays it
out: two hourly log files, two chained digests (the first a starting digest), each digest's
signature (its S3 object's x-amz-meta-signature) next to it as `<file>.sig`, and the public key
as `aws cloudtrail list-public-keys` prints it. Usage: cloudtrail_digests.py DIR KEYS_JSON"""

import base64
import gzip
import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

root = sys.argv[1]
account, region, bucket, trail = "123456789012", "us-east-1", "trail-bucket", "org-trail"
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
fingerprint = hashlib.sha256(der).hexdigest()


def event(i, hour):
    return {
        "eventVersion": "1.08",
        "eventID": f"aws-digest-{hour}-{i}",
        "eventTime": f"2023-07-10T{hour}:{10 + i}:00Z",
        "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject",
        "awsRegion": region,
        "sourceIPAddress": "203.0.113.9",
        "userIdentity": {"type": "IAMUser", "userName": "bob"},
    }


def write(rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(text.encode())
    return path


logs = []
for hour, n, suffix in (("10", 3, "a1"), ("11", 2, "b2")):
    key_path = (f"AWSLogs/{account}/CloudTrail/{region}/2023/07/10/"
                f"{account}_CloudTrail_{region}_20230710T{hour}05Z_{suffix}.json.gz")
    text = json.dumps({"Records": [event(i, hour) for i in range(n)]})
    write(key_path, text)
    logs.append((key_path, hashlib.sha256(text.encode()).hexdigest(), hour))

previous = None
for key_path, digest_hash, hour in logs:
    end = f"2023-07-10T{int(hour) + 1:02d}:00:00Z"
    obj = (f"AWSLogs/{account}/CloudTrail-Digest/{region}/2023/07/10/"
           f"{account}_CloudTrail-Digest_{region}_{trail}_{region}_20230710T{int(hour) + 1:02d}0000Z.json.gz")
    doc = {
        "awsAccountId": account,
        "digestStartTime": f"2023-07-10T{hour}:00:00Z",
        "digestEndTime": end,
        "digestS3Bucket": bucket,
        "digestS3Object": obj,
        "digestPublicKeyFingerprint": fingerprint,
        "digestSignatureAlgorithm": "SHA256withRSA",
        "newestEventTime": None,
        "oldestEventTime": None,
        "previousDigestS3Bucket": bucket if previous else None,
        "previousDigestS3Object": previous[0] if previous else None,
        "previousDigestHashValue": previous[1] if previous else None,
        "previousDigestHashAlgorithm": "SHA-256" if previous else None,
        "previousDigestSignature": previous[2] if previous else None,
        "logFiles": [{
            "s3Bucket": bucket, "s3Object": key_path, "hashValue": digest_hash,
            "hashAlgorithm": "SHA-256", "newestEventTime": None, "oldestEventTime": None,
        }],
    }
    text = json.dumps(doc)
    to_sign = "\n".join([
        end, f"{bucket}/{obj}", hashlib.sha256(text.encode()).hexdigest(),
        previous[2] if previous else "null",
    ])
    signature = key.sign(to_sign.encode(), padding.PKCS1v15(), hashes.SHA256()).hex()
    path = write(obj, text)
    with open(path + ".sig", "w") as f:
        f.write(signature + "\n")
    previous = (obj, hashlib.sha256(text.encode()).hexdigest(), signature)

with open(sys.argv[2], "w") as f:
    json.dump({"PublicKeyList": [{
        "Value": base64.b64encode(der).decode(),
        "ValidityStartTime": "2023-01-01T00:00:00Z",
        "ValidityEndTime": "2024-01-01T00:00:00Z",
        "Fingerprint": fingerprint,
    }]}, f)
