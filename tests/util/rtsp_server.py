#!/usr/bin/python3
"""A real RTSP server for the camera tests: GStreamer's (Debian's gir1.2-gst-rtsp-server-1.0,
through python3-gi), serving an H.264 MP4 file at rtsp://127.0.0.1:PORT/stream, RTP over
UDP or interleaved TCP as the client asks. Each client gets the file from its start (not
shared), so a reconnecting client sees faces again.

Usage: rtsp_server.py PORT FILE.mp4 [USER PASSWORD]   (prints "ready" when listening)
With USER and PASSWORD, clients must authenticate (Digest).
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

Gst.init(None)
port, path = sys.argv[1], sys.argv[2]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( filesrc location={path} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
factory.set_shared(False)
if len(sys.argv) == 5:
    user, password = sys.argv[3], sys.argv[4]
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
    # Digest, as IP cameras ask for (the password never crosses the wire).
    auth.add_digest(user, password, token)
    auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    server.set_auth(auth)
    perms = GstRtspServer.RTSPPermissions()
    perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
    perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
    factory.set_permissions(perms)
server.get_mount_points().add_factory("/stream", factory)
if server.attach(None) == 0:
    sys.exit(f"rtsp_server.py: cannot listen on 127.0.0.1:{port}")
print("ready", flush=True)
GLib.MainLoop().run()
