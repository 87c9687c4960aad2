"""Face pipeline used for calibration and evaluation: a copy of shared/bench/refpipe.py's logic
(BlazeFace -> 4-point similarity alignment to the 112x112 template -> MobileFaceNet, batch of 2),
with the model files passed explicitly so float and int8 models can be swapped."""
import numpy as np
from PIL import Image, ImageOps
from ai_edge_litert.interpreter import Interpreter

TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [56.1396, 92.2848]], np.float32)


def anchors_short():
    a = []
    for stride, n in ((8, 2), (16, 6)):
        g = 128 // stride
        for y in range(g):
            for x in range(g):
                for _ in range(n):
                    a.append(((x + 0.5) / g, (y + 0.5) / g))
    return np.array(a, np.float32)


def anchors_full():
    g = 48
    return np.array([((x + .5) / g, (y + .5) / g) for y in range(g) for x in range(g)], np.float32)


def load(path):
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def letterbox(img, size):
    """Detector input: centred on a black square, resized, scaled to [-1, 1]. Returns (x, side)."""
    w, h = img.size; s = max(w, h)
    sq = Image.new("RGB", (s, s)); sq.paste(img, ((s - w) // 2, (s - h) // 2))
    return np.asarray(sq.resize((size, size), Image.BILINEAR), np.float32) / 127.5 - 1, s


def similarity(dst, src):
    """Least-squares similarity transform T with T(dst) ~= src, returned as 2x3."""
    n = len(dst); A = np.zeros((2 * n, 4)); b = np.zeros(2 * n)
    for i, ((x, y), (u, v)) in enumerate(zip(dst, src)):
        A[2 * i] = [x, -y, 1, 0]; b[2 * i] = u
        A[2 * i + 1] = [y, x, 0, 1]; b[2 * i + 1] = v
    a, bb, tx, ty = np.linalg.lstsq(A, b, rcond=None)[0]
    return np.array([[a, -bb, tx], [bb, a, ty]])


def align(img, kps):
    """Embedder input for one face: 112x112 aligned crop, (x - 127.5) / 128."""
    src = np.array([kps[1], kps[0], kps[2], kps[3]], np.float32)
    if src[0][0] > src[1][0]: src[[0, 1]] = src[[1, 0]]
    M = similarity(TEMPLATE, src)
    crop = img.transform((112, 112), Image.AFFINE, M.ravel().tolist(), Image.BILINEAR)
    return (np.asarray(crop, np.float32) - 127.5) / 128.0


def iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0])); iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy; return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


class Pipe:
    def __init__(self, detector, embedder, full=False, threads=2):
        self.size, self.anchors = (192, anchors_full()) if full else (128, anchors_short())
        self.det = Interpreter(model_path=str(detector), num_threads=threads); self.det.allocate_tensors()
        self.emb = Interpreter(model_path=str(embedder), num_threads=threads); self.emb.allocate_tensors()

    def detect(self, img, thresh=0.5):
        w, h = img.size
        x, s = letterbox(img, self.size)
        d = self.det; d.set_tensor(d.get_input_details()[0]['index'], x[None])
        d.invoke()
        outs = {o['name']: d.get_tensor(o['index'])[0] for o in d.get_output_details()}
        reg = [v for v in outs.values() if v.shape[-1] == 16][0]; cls = [v for v in outs.values() if v.shape[-1] == 1][0][:, 0]
        score = 1 / (1 + np.exp(-np.clip(cls, -100, 100)))
        idx = np.where(score >= thresh)[0]
        dets = []
        for i in idx:
            r = reg[i] / self.size; a = self.anchors[i]
            cx, cy, bw, bh = r[0] + a[0], r[1] + a[1], r[2], r[3]
            kp = np.array([[r[4 + 2 * k] + a[0], r[5 + 2 * k] + a[1]] for k in range(6)])
            dets.append((score[i], np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]), kp))
        dets.sort(key=lambda t: -t[0]); out = []
        while dets:  # weighted NMS
            best = dets[0]; grp = [t for t in dets if iou(best[1], t[1]) > 0.3]
            dets = [t for t in dets if iou(best[1], t[1]) <= 0.3]
            ws = np.array([t[0] for t in grp]); box = sum(t[1] * wt for t, wt in zip(grp, ws)) / ws.sum()
            kp = sum(t[2] * wt for t, wt in zip(grp, ws)) / ws.sum()
            off = np.array([(s - w) / 2, (s - h) / 2])
            out.append(dict(score=float(best[0]), box=(box.reshape(2, 2) * s - off).ravel().tolist(), kps=(kp * s - off).tolist()))
        return out

    def embed(self, img, kps):
        x = align(img, kps)
        e = self.emb; e.set_tensor(e.get_input_details()[0]['index'], np.stack([x, x])); e.invoke()
        v = e.get_tensor(e.get_output_details()[0]['index'])[0]
        return v / np.linalg.norm(v)
