"""Writes models/MobileFaceNet_prelu.tflite: the committed float MobileFaceNet with each PReLU,
stored by the converter as five element-wise ops (RELU, ABS, SUB, MUL, ADD: relu(x) + c*(x - |x|)),
replaced by one PRELU op with alpha = 2c. Same weights, same arithmetic up to float rounding; XNNPACK
runs it ~1.4x faster because ~60 % of the stock file's time is those element-wise ops.

    /tmp/quant/bin/python models/quantize/prelu.py    (or: bash models/quantize/run.sh)

The rewrite is a pure flatbuffer transformation (graph_prep.rewrite_prelu, native=True), so the
output is bit-for-bit reproducible: run.sh checks it against SHA256SUMS. The script also checks that
the rewritten model's embeddings match the stock model's on aligned crops of every fixture face.
"""
import hashlib, json, pathlib, sys, warnings
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import graph_prep
from pipeline import Pipe, align, load

MODELS = HERE.parent
FACES = MODELS.parent / 'tests' / 'fixtures' / 'faces'
SRC, OUT = MODELS / 'MobileFaceNet.tflite', MODELS / 'MobileFaceNet_prelu.tflite'


def embeddings(path, crops):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(path), num_threads=1); it.allocate_tensors()
    i, o = it.get_input_details()[0]['index'], it.get_output_details()[0]['index']
    out = []
    for k in range(0, len(crops), 2):
        it.set_tensor(i, np.stack(crops[k:k + 2])); it.invoke(); out.append(it.get_tensor(o).copy())
    v = np.concatenate(out)
    return v / np.linalg.norm(v, axis=1, keepdims=True), sum(
        d['op_name'] == 'DELEGATE' for d in it._get_ops_details())


def main():
    warnings.filterwarnings('ignore')
    prepared, rep = graph_prep.prepare(SRC, native_prelu=True)
    assert rep['prelu_rewritten'] > 0, rep
    OUT.write_bytes(prepared)
    p = Pipe(MODELS / 'face_detection_short_range.tflite', SRC, threads=1)
    crops = [align(im, f['kps']) for im in map(load, sorted(FACES.glob('*.jpg'))) for f in p.detect(im)]
    if len(crops) % 2: crops.append(crops[0])
    a, _ = embeddings(SRC, crops)
    b, parts = embeddings(OUT, crops)
    cos = (a * b).sum(1)
    assert parts == 1, f'{OUT.name}: {parts} XNNPACK partitions'
    assert cos.min() > 0.99999, cos.min()
    print(json.dumps({OUT.name: dict(source=SRC.name, bytes=OUT.stat().st_size,
                                     sha256=hashlib.sha256(prepared).hexdigest(), prep=rep,
                                     faces=len(crops), min_cosine_vs_stock=float(cos.min()),
                                     max_abs_diff=float(np.abs(a - b).max()))}))


if __name__ == '__main__':
    main()
