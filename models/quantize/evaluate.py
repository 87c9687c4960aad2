"""Float vs int8, side by side in one run: accuracy on the fixture photos (refpipe's pipeline) and
latency per model with LiteRT's Interpreter and CompiledModel APIs (2 threads, XNNPACK).

    python models/quantize/evaluate.py [--rounds N] [--json OUT]

Latency: the models of one kind run interleaved (round-robin, 5 invokes each per round), so load
from other processes on the machine hits them alike; medians over all invokes are reported.
"""
import argparse, csv, json, pathlib, sys, time, warnings
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pipeline import Pipe, load, letterbox, align

MODELS = HERE.parent
FACES = MODELS.parent / 'tests' / 'fixtures' / 'faces'
EMB = {'float': 'MobileFaceNet.tflite', 'int8': 'MobileFaceNet_int8.tflite', 'dynamic_int8': 'MobileFaceNet_dynamic_int8.tflite'}
DET = {'short': {'float': 'face_detection_short_range.tflite', 'int8': 'face_detection_short_range_int8.tflite',
                 'dynamic_int8': 'face_detection_short_range_dynamic_int8.tflite'},
       'full': {'float': 'face_detection_full_range.tflite', 'int8': 'face_detection_full_range_int8.tflite',
                'dynamic_int8': 'face_detection_full_range_dynamic_int8.tflite'}}


def auc(scores, labels):
    s = np.asarray(scores); y = np.asarray(labels, bool)
    order = np.argsort(s, kind='mergesort'); ranks = np.empty(len(s)); ranks[order] = np.arange(1, len(s) + 1)
    for v in np.unique(s):  # average ranks of ties
        m = s == v; ranks[m] = ranks[m].mean()
    npos, nneg = y.sum(), (~y).sum()
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def acc_at(scores, labels, t):
    return float(np.mean((np.asarray(scores) >= t) == np.asarray(labels, bool)))


def best_acc(scores, labels):
    cands = np.unique(scores)
    accs = [acc_at(scores, labels, t) for t in cands]
    i = int(np.argmax(accs)); return accs[i], float(cands[i])


def face_metrics(emb, persons, pairs):
    sims = [float(emb[a] @ emb[b]) for a, b, _ in pairs]; same = [s for _, _, s in pairs]
    ba, bt = best_acc(sims, same)
    names = sorted(emb); X = np.stack([emb[n] for n in names]); S = X @ X.T; np.fill_diagonal(S, -2)
    nn = S.argmax(1); ident = sum(persons[names[i]] == persons[names[j]] for i, j in enumerate(nn))
    return dict(auc=round(auc(sims, same), 5), acc_best=round(ba, 4), best_threshold=round(bt, 3),
                acc_at_0_5=round(acc_at(sims, same, 0.5), 4), loo_identification=f'{ident}/{len(names)}')


def accuracy():
    labels = list(csv.DictReader(open(FACES / 'labels.csv')))
    persons = {r['file']: r['person'] for r in labels}
    pairs = [(r['file_a'], r['file_b'], r['same'] == '1') for r in csv.DictReader(open(FACES / 'pairs.csv'))]
    imgs = {f: load(FACES / f) for f in persons}
    extras = {f: load(FACES / f) for f in ('couple.jpg', 'messi5.jpg', 'selfie-many-people.jpg', 'img11_reflection.jpg')}
    negs = {p.name: load(p) for p in sorted((FACES / 'negatives').glob('*'))}
    out = {'detector': {}, 'embedder': {}}
    dets = {}
    for rng, variants in DET.items():
        for kind, f in variants.items():
            p = Pipe(MODELS / f, MODELS / EMB['float'], full=rng == 'full')
            d = {n: p.detect(im) for n, im in imgs.items()}; dets[rng, kind] = d
            row = dict(labelled_detected=f'{sum(len(v) > 0 for v in d.values())}/{len(d)}',
                       negatives_faces=sum(len(p.detect(im)) for im in negs.values()),
                       **{k.split('.')[0] + '_faces': len(p.detect(im)) for k, im in extras.items()})
            if kind != 'float':  # keypoint shift vs the float detector, in inter-ocular distances
                ref = dets[rng, 'float']; errs = []
                for n in d:
                    if d[n] and ref[n]:
                        a, b = np.array(d[n][0]['kps'][:4]), np.array(ref[n][0]['kps'][:4])
                        errs.append(np.abs(a - b).max() / np.linalg.norm(b[0] - b[1]))
                row['kps_shift_median'] = round(float(np.median(errs)), 4); row['kps_shift_max'] = round(float(np.max(errs)), 4)
            out['detector'][f'{rng}/{kind}'] = row
            print(json.dumps({f'detector {rng}/{kind}': row}), flush=True)
    combos = [('short', 'float', e) for e in EMB] + [('short', 'int8', 'int8'), ('short', 'dynamic_int8', 'dynamic_int8'),
                                                     ('full', 'float', 'float'), ('full', 'int8', 'int8')]
    for rng, dk, ek in combos:
        p = Pipe(MODELS / DET[rng]['float'], MODELS / EMB[ek])
        emb = {n: p.embed(imgs[n], v[0]['kps']) for n, v in dets[rng, dk].items() if v}
        row = face_metrics(emb, persons, pairs)
        out['embedder'][f'det {rng}/{dk} + emb {ek}'] = row
        print(json.dumps({f'det {rng}/{dk} + emb {ek}': row}), flush=True)
    return out


def inputs_for(size):
    im = load(FACES / 'img1.jpg')
    if size == 112:
        p = Pipe(MODELS / DET['short']['float'], MODELS / EMB['float'])
        x = align(im, p.detect(im)[0]['kps']); return np.stack([x, x])
    return letterbox(im, size)[0][None]


def interpreter_runner(path, x):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(path), num_threads=2); it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]['index'], x)
    return it.invoke


def compiled_runner(path, x):
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.cpu_options import CpuOptions
    from ai_edge_litert.options import Options
    opts = Options(hardware_accelerators=HardwareAccelerator.CPU, cpu_options=CpuOptions(num_threads=2))
    cm = CompiledModel.from_file(str(path), options=opts)
    ins, outs = cm.create_input_buffers(0), cm.create_output_buffers(0)
    ins[0].write(x)
    return lambda: cm.run_by_index(0, ins, outs)


def latency(rounds):
    res = {}
    # reference row, not committed: the float MobileFaceNet with its PReLU as one PRELU op
    import tempfile, graph_prep
    fp = pathlib.Path(tempfile.mkdtemp()) / 'MobileFaceNet_float_prelu.tflite'
    fp.write_bytes(graph_prep.prepare(MODELS / EMB['float'], native_prelu=True)[0])
    emb = dict(EMB, float_prelu_op=str(fp))
    groups = [('MobileFaceNet', 112, emb), ('BlazeFace short', 128, DET['short']), ('BlazeFace full', 192, DET['full'])]
    for api, make in (('Interpreter', interpreter_runner), ('CompiledModel', compiled_runner)):
        for gname, size, variants in groups:
            x = inputs_for(size)
            try:
                runs = {k: make(MODELS / f, x) for k, f in variants.items()}
            except Exception as e:  # noqa: BLE001 - report and go on
                res[f'{api} {gname}'] = f'error: {e}'; print(f'{api} {gname}: error: {e}', flush=True); continue
            for r in runs.values():
                for _ in range(5): r()
            ts = {k: [] for k in runs}
            for _ in range(rounds):
                for k, r in runs.items():
                    for _ in range(5):
                        t = time.perf_counter(); r(); ts[k].append(time.perf_counter() - t)
            med = {k: float(np.median(v)) * 1000 for k, v in ts.items()}
            p10 = {k: float(np.percentile(v, 10)) * 1000 for k, v in ts.items()}
            row = {k: dict(median_ms=round(m, 3), p10_ms=round(p10[k], 3), speedup=round(med['float'] / m, 2))
                   for k, m in med.items()}
            res[f'{api} {gname}'] = row
            print(json.dumps({f'{api} {gname}': row}), flush=True)
    return res


def main():
    warnings.filterwarnings('ignore')
    ap = argparse.ArgumentParser(); ap.add_argument('--rounds', type=int, default=40); ap.add_argument('--json')
    ap.add_argument('--skip-accuracy', action='store_true'); ap.add_argument('--skip-latency', action='store_true')
    a = ap.parse_args()
    out = {}
    if not a.skip_accuracy: out['accuracy'] = accuracy()
    if not a.skip_latency: out['latency'] = latency(a.rounds)
    if a.json: pathlib.Path(a.json).write_text(json.dumps(out, indent=1) + '\n')


if __name__ == '__main__':
    main()
