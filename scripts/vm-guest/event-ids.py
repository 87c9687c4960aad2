#!/usr/bin/env python3
"""Reads `mosquitto_sub -v` lines (topic, space, payload) from stdin and checks that every
event id on faced/<id>/events maps to one event: a re-delivery repeats the same payload, a
different payload under an id seen before means the id was reused. Prints a summary line, with
REUSED and the ids when that happened."""
import json
import sys

seen = {}
reused = set()
msgs = 0
# Bytes: the subscriber's log also holds the JPEG snapshots faced publishes.
for raw in sys.stdin.buffer:
    topic, _, payload = raw.decode("utf-8", "replace").rstrip("\n").partition(" ")
    if not topic.endswith("/events"):
        continue
    try:
        ev = json.loads(payload)
    except ValueError:
        continue
    msgs += 1
    eid = ev.get("event_id", 0)
    if eid == 0:  # published without being stored (disk full): no id to keep
        continue
    if eid in seen and seen[eid] != ev:
        reused.add(eid)
    seen.setdefault(eid, ev)
print(f"{msgs} event messages, {len(seen)} distinct ids, {msgs - len(seen)} repeated"
      + (f"; REUSED ids: {sorted(reused)[:10]}" if reused else "; no id reused"))
