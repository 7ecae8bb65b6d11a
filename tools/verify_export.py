#!/usr/bin/env python3
"""Check an export of the ledger's event log (`ledger export-events`) on its own: standard library only.

    python3 verify_export.py EXPORT.jsonl          # a whole-log export
    python3 verify_export.py --part EXPORT.jsonl   # a --reseller or --subscription export: streams only

For every line it checks that the readable fields (type, occurred_at, actor, data) say what the stored
record says, recomputes the line's hash from the stored record and the two previous hashes, and checks
that those previous hashes are the hashes of the previous line (the whole log; not with --part) and of
the previous event of the same stream. The algorithm is stated in docs/event-export.md. Exit 0 and
"intact: N events, head HASH", or exit 1 naming the first line that fails and why.
"""

import argparse
import hashlib
import json
import sys
from datetime import UTC, datetime
from uuid import UUID

GENESIS = "0" * 64
ENVELOPE = {"timestamp", "originator_topic", "actor", "class_version"}


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def line_hash(line, position=None, previous=None, previous_in_stream=None):
    """The event's hash, from its stored record and the given place in the chain (by default its own)."""
    return hashlib.sha256(canonical({
        "position": line["position"] if position is None else position,
        "previous_hash": line["previous_hash"] if previous is None else previous,
        "previous_stream_hash": line["previous_stream_hash"] if previous_in_stream is None else previous_in_stream,
        "state_sha256": hashlib.sha256(line["stored"]["state"].encode("utf-8")).hexdigest(),
        "stream_id": line["stream_id"],
        "topic": line["stored"]["topic"],
        "version": line["version"],
    })).hexdigest()


def plain(value):
    """A stored value as the export renders it: times in ISO 8601 UTC to the second, ids as UUIDs."""
    if isinstance(value, dict) and set(value) == {"_type_", "_data_"}:
        kind, data = value["_type_"], value["_data_"]
        if kind == "datetime_iso":
            return datetime.fromisoformat(data).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return str(UUID(data)) if kind == "uuid_hex" else plain(data)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return [plain(item) for item in value] if isinstance(value, list) else value


def same(shown, stored):
    if isinstance(shown, dict) and isinstance(stored, dict):
        return shown.keys() == stored.keys() and all(same(shown[k], stored[k]) for k in shown)
    if isinstance(shown, list) and isinstance(stored, list):
        return len(shown) == len(stored) and all(same(a, b) for a, b in zip(shown, stored))
    if isinstance(shown, str) and isinstance(stored, str) and shown != stored and len(stored) == 32:
        try:
            return UUID(shown) == UUID(stored)  # an id the stored record keeps as bare hex
        except ValueError:
            return False
    return shown == stored and type(shown) is type(stored)


def readable_differs(line):
    """The first readable field that does not say what the stored (hashed) record says, if any."""
    topic, state = line["stored"]["topic"], json.loads(line["stored"]["state"])
    if line["type"] != topic.rsplit(".", 1)[-1] or line["stream_type"] != topic.split(":", 1)[1].split(".")[0]:
        return "type"
    if line["occurred_at"] != plain(state["timestamp"]):
        return "occurred_at"
    # An actor the stored record lacks was filled in by upcasting an older schema version: not covered either.
    upcast = line.get("schema_version", 1) > state.get("class_version", 1)
    if line["actor"] != state.get("actor") and not (upcast and "actor" not in state):
        return "actor"
    for key, value in state.items():  # fields added when an old event is read (upcasting) are not stored
        if key not in ENVELOPE and (key not in line["data"] or not same(line["data"][key], plain(value))):
            return f"data.{key}"
    return None


def check(lines, part):
    """None if intact, else (line number, reason)."""
    hashes = {line["hash"] for line in lines}
    streams, previous, last_position = {}, [GENESIS, GENESIS], 0
    for number, line in enumerate(lines, 1):
        if line.get("hash") is None:
            return number, "event inserted: it carries no hash (the chain never recorded it)"
        if line["position"] == last_position:
            return number, "event inserted: a position repeats"
        if line["position"] < last_position:
            return number, "order changed: positions go backwards"
        differs = readable_differs(line)
        if differs:
            return number, f"content edited: {differs} differs from the stored record"
        if line_hash(line) != line["hash"]:
            for other in lines:  # the same record hashed at another place: it was moved there
                if other is not line and line_hash(line, other["position"], other["previous_hash"],
                                                   other["previous_stream_hash"]) == other["hash"]:
                    return number, f"order changed: this event was recorded at position {other['position']}"
            return number, "content edited: the stored record does not match its hash"
        if not part and line["previous_hash"] != previous[-1]:
            if line["previous_hash"] == previous[-2]:
                return number - 1, "event inserted: this line is not in the chain"
            if line["previous_hash"] in hashes:
                return number, "order changed: the previous event in the chain is elsewhere in the file"
            return number, "event deleted: the previous event in the chain is missing"
        version, hashed = streams.get(line["stream_id"], (0, GENESIS))
        if line["version"] != version + 1 or line["previous_stream_hash"] != hashed:
            if line["version"] <= version:
                return number, "event inserted or order changed: the stream repeats a version"
            if line["version"] > version + 1:
                return number, f"event deleted: version {version + 1} of the stream is missing"
            return number, "event inserted: the stream's previous event is not the one before"
        streams[line["stream_id"]] = (line["version"], line["hash"])
        previous, last_position = [previous[-1], line["hash"]], line["position"]
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export")
    parser.add_argument("--part", action="store_true", help="a --reseller or --subscription export")
    args = parser.parse_args()
    with open(args.export, encoding="utf-8") as file:
        lines = [json.loads(text) for text in file if text.strip()]
    if lines and all(line.get("hash") is None for line in lines):
        print("not verifiable: no event carries a hash (a log not yet under the chain: ledger verify --upgrade)")
        return 1
    failure = check(lines, args.part)
    if failure:
        number, reason = failure
        line = lines[number - 1]
        print(f"TAMPERED at line {number} (position {line['position']}, stream {line['stream_id']} "
              f"version {line['version']}): {reason}")
        return 1
    print(f"intact: {len(lines)} events, head {lines[-1]['hash'] if lines else GENESIS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
