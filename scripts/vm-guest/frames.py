#!/usr/bin/env python3
"""Whether faced's camera delivers frames, from the REST API inside the lab guest, as the admin
`lab` that scripts/vm-guest/run creates. The session cookie is kept in /tmp/lab-cookies and
reused across calls (the login is rate-limited, 10 a minute), signing in again on 401.

    frames.py fps CAMERA SECONDS     waits until GET /api/cameras shows CAMERA above 0 fps
    frames.py moving CAMERA SECONDS  waits until /api/live/CAMERA/frame.jpg changes (vivid
                                     prints a frame counter into every frame, so a new JPEG is
                                     a new frame; the fps figure keeps its last value when
                                     frames stop, so it cannot show that they resumed)

Prints what it saw; exit status 1 if it did not happen within SECONDS.
"""
import hashlib
import http.cookiejar
import json
import sys
import time
import urllib.error
import urllib.request

BASE = "http://127.0.0.1:8080"
JAR = "/tmp/lab-cookies"
jar = http.cookiejar.LWPCookieJar(JAR)
try:
    jar.load(ignore_discard=True, ignore_expires=True)
except OSError:
    pass
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))


def raw(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with opener.open(req, timeout=90) as r:
        return r.read()


def login():
    raw("POST", "/api/login", {"name": "lab", "password": "lab-password-1"})
    jar.save(ignore_discard=True, ignore_expires=True)


def get(path):
    try:
        return raw("GET", path)
    except urllib.error.HTTPError as e:
        if e.code != 401:
            raise
    login()
    return raw("GET", path)


def main():
    what, camera, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    end = time.monotonic() + seconds
    first = None
    seen = 0
    while True:
        try:
            if what == "fps":
                cams = json.loads(get("/api/cameras"))
                cam = next(c for c in cams if c["name"] == camera)
                if cam["fps"] > 0:
                    print(f'{cam["fps"]:.1f} fps, status {cam["status"]}')
                    return 0
                last = f'{cam["fps"]:.1f} fps, status {cam["status"]}'
            else:
                h = hashlib.sha256(get(f"/api/live/{camera}/frame.jpg")).hexdigest()[:12]
                seen += 1
                if first is None:
                    first = h
                elif h != first:
                    print(f"frame changed after {seen - 1} polls")
                    return 0
                last = f"same frame {h} in {seen} polls"
        except (urllib.error.URLError, OSError, StopIteration, ValueError) as e:
            last = f"error: {e}"
        if time.monotonic() > end:
            print(f"not within {seconds:.0f} s: {last}")
            return 1
        time.sleep(1)


sys.exit(main())
