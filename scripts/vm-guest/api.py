#!/usr/bin/env python3
"""faced's REST API from inside the lab guest (docs/api.md), as the admin `lab` that
scripts/vm-guest/run creates with `faced user add`.

    api.py fps CAMERA SECONDS   waits until GET /api/cameras shows CAMERA above 0 fps and
                                prints the rate (exit status 1 if it did not within SECONDS)
    api.py get PATH             any GET, JSON printed

It signs in once per run: the login is rate-limited.
"""
import http.cookiejar
import json
import sys
import time
import urllib.request

BASE = "http://127.0.0.1:8080"
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    # Generous: under TCG with a busy host, the sign-in's password hash alone took over 10 s.
    with opener.open(req, timeout=90) as r:
        return json.load(r)


call("POST", "/api/login", {"name": "lab", "password": "lab-password-1"})
if sys.argv[1] == "fps":
    end = time.monotonic() + float(sys.argv[3])
    while True:
        cam = next(c for c in call("GET", "/api/cameras") if c["name"] == sys.argv[2])
        if cam["fps"] > 0 or time.monotonic() > end:
            break
        time.sleep(1)
    print(f'{cam["fps"]:.1f} fps, status {cam["status"]}, {cam["dropped"]} dropped')
    sys.exit(0 if cam["fps"] > 0 else 1)
else:
    print(json.dumps(call("GET", sys.argv[2])))
