"""Decode a `dio-trace --perfetto` file with Perfetto's own schema
(perfetto_trace_pb2 from the `perfetto` PyPI package) and print it as JSON
for dio-trace/tests/perfetto.rs to check. Fails on anything the schema
does not know: a wrong field number would be an unknown field."""

import json
import sys

from google.protobuf import unknown_fields
from google.protobuf.json_format import MessageToDict
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

trace = pb.Trace()
with open(sys.argv[1], "rb") as f:
    trace.ParseFromString(f.read())


def unknown(msg):
    """Fields the schema does not know, anywhere in the message."""
    found = list(unknown_fields.UnknownFieldSet(msg))
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        items = value if fd.is_repeated else [value]
        for v in items:
            found += unknown(v)
    return found


packets = []
for p in trace.packet:
    bad = unknown(p)
    if bad:
        sys.exit(f"packet with fields unknown to Perfetto's schema: {p}")
    packets.append(MessageToDict(p, preserving_proto_field_name=True))
json.dump(packets, sys.stdout)
