#!/usr/bin/env python3
"""faced's REST API from inside the lab guest (docs/api.md), as the admin `lab` that
scripts/vm-guest/run creates with `faced user add`.

    api.py fps CAMERA     the camera's frame rate from GET /api/cameras
    api.py get PATH       any GET, JSON printed
"""
import http.cookiejar
import json
import sys
import urllib.request

BASE = "http://127.0.0.1:8080"
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with opener.open(req, timeout=10) as r:
        return json.load(r)


call("POST", "/api/login", {"name": "lab", "password": "lab-password-1"})
if sys.argv[1] == "fps":
    cams = call("GET", "/api/cameras")
    print(next(c["fps"] for c in cams if c["name"] == sys.argv[2]))
else:
    print(json.dumps(call("GET", sys.argv[2])))
