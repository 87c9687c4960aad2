#!/usr/bin/env python3
"""Feeds a v4l2loopback device with MJPEG frames: ffmpeg's v4l2 output only writes raw pixel
formats, so this sets the output format to MJPG (VIDIOC_S_FMT) and writes one whole JPEG per
write() (v4l2loopback takes the write's length as the frame's bytesused).

    mjpeg-writer.py /dev/videoN FILE.jpg FPS
"""
import fcntl
import struct
import sys
import time

dev, path, fps = sys.argv[1], sys.argv[2], float(sys.argv[3])
jpeg = open(path, "rb").read()
# The JPEG's size from its SOF0/SOF2 marker.
i = 2
while True:
    marker, length = jpeg[i + 1], struct.unpack(">H", jpeg[i + 2:i + 4])[0]
    if marker in (0xC0, 0xC2):
        height, width = struct.unpack(">HH", jpeg[i + 5:i + 9])
        break
    i += 2 + length

V4L2_BUF_TYPE_VIDEO_OUTPUT = 2
V4L2_FIELD_NONE = 1
V4L2_COLORSPACE_JPEG = 7
MJPG = struct.unpack("<I", b"MJPG")[0]
# struct v4l2_format on LP64 (amd64, arm64): __u32 type, 4 bytes padding (the union holds
# pointers), 200-byte union; VIDIOC_S_FMT = _IOWR('V', 5, struct v4l2_format).
FMT_SIZE = 208
VIDIOC_S_FMT = (3 << 30) | (FMT_SIZE << 16) | (ord("V") << 8) | 5
sizeimage = max(len(jpeg) * 2, width * height)
pix = struct.pack("<12I", width, height, MJPG, V4L2_FIELD_NONE, 0, sizeimage,
                  V4L2_COLORSPACE_JPEG, 0, 0, 0, 0, 0)
fmt = struct.pack("<I4x", V4L2_BUF_TYPE_VIDEO_OUTPUT) + pix
fmt += b"\0" * (FMT_SIZE - len(fmt))

with open(dev, "wb", buffering=0) as f:
    fcntl.ioctl(f, VIDIOC_S_FMT, bytearray(fmt))
    print(f"{dev}: MJPG {width}x{height}, {len(jpeg)} bytes per frame at {fps} fps", flush=True)
    period = 1.0 / fps
    nxt = time.monotonic()
    while True:
        f.write(jpeg)
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))
