"""Regenerates the int8 models in models/ from the committed float models.

    python models/quantize/quantize.py            (or: bash models/quantize/run.sh)

For each float model: graph_prep.prepare() rewrites the flatbuffer into an equivalent float graph
the quantizer can handle (see graph_prep.py for why the stock files could not be quantized), then
ai-edge-quantizer makes
  *_int8.tflite          full-integer: int8 weights (per-channel symmetric) and int8 activations
                         (static ranges calibrated on the fixture photos); float32 input/output
                         tensors with QUANTIZE/DEQUANTIZE inside the graph.
  *_dynamic_int8.tflite  dynamic-range: int8 CONV_2D weights, float activations.
Each output is checked: float32 I/O with the float model's names/shapes, one XNNPACK partition,
and close to the float model on a calibration input. SHA-256s are printed at the end.
"""
import hashlib, json, os, sys, pathlib, warnings
import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import graph_prep
from pipeline import Pipe, align, letterbox, load

MODELS = HERE.parent
REPO = MODELS.parent
FACES = REPO / 'tests' / 'fixtures' / 'faces'
SRC = {'MobileFaceNet': 'MobileFaceNet.tflite',
       'face_detection_short_range': 'face_detection_short_range.tflite',
       'face_detection_full_range': 'face_detection_full_range.tflite'}


def calibration_images():
    """Every fixture photo (labelled, extras, negatives) and its mirror image, in a fixed order."""
    paths = sorted(FACES.glob('*.jpg')) + sorted((FACES / 'negatives').glob('*'))
    out = []
    for p in paths:
        im = load(p); out += [im, im.transpose(Image.FLIP_LEFT_RIGHT)]
    return out


def detector_samples(images, size):
    return [{'input': letterbox(im, size)[0][None]} for im in images]


def embedder_samples(images):
    """Aligned crops of every face the float short-range detector finds, two per batch."""
    p = Pipe(MODELS / SRC['face_detection_short_range'], MODELS / SRC['MobileFaceNet'])
    crops = [align(im, f['kps']) for im in images for f in p.detect(im)]
    if len(crops) % 2: crops.append(crops[0])
    return [{'input': np.stack(crops[i:i + 2])} for i in range(0, len(crops), 2)]


def static_recipe():
    from ai_edge_quantizer import recipe
    # int8 everywhere, except the graph input/output stay float32 (the runtime feeds/reads f32)
    return recipe.static_wi8_ai8() + [
        {'regex': '.*', 'operation': op, 'algorithm_key': 'no_quantize', 'op_config': {}}
        for op in ('INPUT', 'OUTPUT')]


def dynamic_recipe():
    from ai_edge_quantizer import recipe
    # CONV_2D only: XNNPACK does not take a dynamic-range DEPTHWISE_CONV_2D (each one would be
    # its own delegate partition)
    return recipe._dynamic_wix_afp32(8, operation_name=recipe.TFLOperationName.CONV_2D)


def quantize(prepared, rec, samples):
    from ai_edge_quantizer import quantizer
    q = quantizer.Quantizer(bytearray(prepared))
    q.load_quantization_recipe(rec)
    cal = q.calibrate({'serving_default': samples}, num_threads=1) if q.need_calibration else None
    return bytes(q.quantize(cal, enable_progress_report=False).quantized_model)


def finish(model_bytes, float_path):
    """Give the float outputs their original names back (the quantizer appends '_dequant')."""
    m = graph_prep.read(bytearray(model_bytes))
    ref = graph_prep.read(float_path)
    sg = m.subgraphs[0]; rsg = ref.subgraphs[0]
    want = [rsg.tensors[i].name for i in rsg.outputs]
    for i, name in zip(sg.outputs, want):
        t = sg.tensors[i]
        if t.name != name:
            for u in sg.tensors:  # the int8 tensor that had the name
                if u.name == name: u.name = name + b'_int8'
            t.name = name
    graph_prep.add_signature(m)
    return graph_prep.write(m)


def check(path, float_path, sample):
    from ai_edge_litert.interpreter import Interpreter
    a = Interpreter(model_path=str(float_path)); a.allocate_tensors()
    b = Interpreter(model_path=str(path), num_threads=2); b.allocate_tensors()
    for da, db in zip(a.get_input_details() + a.get_output_details(), b.get_input_details() + b.get_output_details()):
        assert db['dtype'] == np.float32 and da['name'] == db['name'] and list(da['shape']) == list(db['shape']), (da, db)
    parts = sum(o['op_name'] == 'DELEGATE' for o in b._get_ops_details())
    assert parts == 1, f'{path.name}: {parts} XNNPACK partitions'
    res = []
    for it in (a, b):
        it.set_tensor(it.get_input_details()[0]['index'], sample); it.invoke()
        res.append([it.get_tensor(o['index']) for o in it.get_output_details()])
    return [round(float(np.corrcoef(x.ravel(), y.ravel())[0, 1]), 4) for x, y in zip(*res)]


def main():
    warnings.filterwarnings('ignore')
    images = calibration_images()
    samples = {'MobileFaceNet': embedder_samples(images),
               'face_detection_short_range': detector_samples(images, 128),
               'face_detection_full_range': detector_samples(images, 192)}
    report = {}
    for name, src in SRC.items():
        float_path = MODELS / src
        for kind, rec, native in (('int8', static_recipe(), False), ('dynamic_int8', dynamic_recipe(), True)):
            prepared, prep = graph_prep.prepare(float_path, native_prelu=native)
            out = MODELS / f'{name}_{kind}.tflite'
            out.write_bytes(finish(quantize(prepared, rec, samples[name]), float_path))
            corr = check(out, float_path, samples[name][0]['input'])
            digest = hashlib.sha256(out.read_bytes()).hexdigest()
            report[out.name] = dict(source=src, recipe=kind, bytes=out.stat().st_size, sha256=digest,
                                    prep=prep, corr_vs_float=corr, calibration_samples=len(samples[name]))
            print(json.dumps({out.name: report[out.name]}), flush=True)
    (HERE / 'last_run.json').write_text(json.dumps(report, indent=1) + '\n')


if __name__ == '__main__':
    main()
