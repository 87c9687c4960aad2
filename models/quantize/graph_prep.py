"""Rewrites a float .tflite flatbuffer into a form ai-edge-quantizer can quantize, without
changing what it computes (checked by quantize.py against the original).

Why the quantizer failed on the committed float models:
  1. MobileFaceNet and BlazeFace short-range are old TOCO files whose OperatorCode tables set only
     `deprecated_builtin_code` and leave `builtin_code` = 0 (= ADD). ai-edge-quantizer reads
     `builtin_code` alone, so it saw every op as ADD: the conv filters were quantized as if they were
     ADD activations (asymmetric, zero_point != 0 -> CONV_2D fails to prepare), and the dynamic and
     weight-only recipes found no CONV_2D to quantize (size ratio 1.0).
  2. The BlazeFace detectors store weights and biases as float16 constants behind DEQUANTIZE ops,
     so CONV_2D's filter is a computed tensor, not a constant, and is not quantizable.
  3. MobileFaceNet has no SignatureDef, which the quantizer's calibrator needs.
  4. MobileFaceNet's PReLU is spelled relu(x) + c * (x - |x|); ABS has no int8 kernel in the
     quantizer, so every block would fall back to float around it.

  5. XNNPACK (LiteRT 2.3.0) does not delegate a stand-alone int8 RELU (nor int8 PRELU): each one
     cut the int8 graph into another delegate partition, and the int8 model ran 3x slower than float.

Fixes, in order: fix_opcodes, fold_fp16_dequantize, fuse_relu (RELU into the CONV/ADD before it),
rewrite_prelu (+ relu_as_mul), compact, add_signature.
"""
import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as s

OP = s.BuiltinOperator
OPNAME = {v: k for k, v in vars(OP).items() if not k.startswith('_')}


def read(path):
    buf = open(path, 'rb').read() if not isinstance(path, (bytes, bytearray)) else bytes(path)
    m = s.ModelT.InitFromObj(s.Model.GetRootAsModel(buf, 0))
    for b in m.buffers:  # data stored after the flatbuffer (offset/size): pull it inline
        if b.offset and b.offset > 1:
            b.data = np.frombuffer(buf[b.offset:b.offset + b.size], np.uint8)
            b.offset = 0; b.size = 0
    return m


def write(model):
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b'TFL3')
    return bytes(b.Output())


def op_code(model, op):
    c = model.operatorCodes[op.opcodeIndex]
    return max(c.builtinCode, c.deprecatedBuiltinCode)


def fix_opcodes(model):
    """Old files: builtin_code 0 with the real op in deprecated_builtin_code (< 127)."""
    n = 0
    for c in model.operatorCodes:
        if c.builtinCode < c.deprecatedBuiltinCode:
            c.builtinCode = c.deprecatedBuiltinCode; n += 1
    return n


def const(model, t):
    b = model.buffers[t.buffer]
    return b.data is not None and len(b.data) > 0


def fold_fp16_dequantize(model):
    """Replace DEQUANTIZE(float16 constant) by the float32 constant it computes."""
    sg = model.subgraphs[0]; keep = []; n = 0
    for op in sg.operators:
        if op_code(model, op) == OP.DEQUANTIZE:
            src = sg.tensors[op.inputs[0]]
            if src.type == s.TensorType.FLOAT16 and const(model, src):
                dst = sg.tensors[op.outputs[0]]
                val = np.frombuffer(bytes(model.buffers[src.buffer].data), '<f2').astype('<f4')
                nb = s.BufferT(); nb.data = np.frombuffer(val.tobytes(), np.uint8)
                model.buffers.append(nb); dst.buffer = len(model.buffers) - 1
                n += 1
                continue
        keep.append(op)
    sg.operators = keep
    return n


def opcode_index(model, code):
    for k, c in enumerate(model.operatorCodes):
        if max(c.builtinCode, c.deprecatedBuiltinCode) == code:
            return k
    oc = s.OperatorCodeT(); oc.builtinCode = code; oc.deprecatedBuiltinCode = min(code, 127); oc.version = 1
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def add_const(model, name, value):
    sg = model.subgraphs[0]
    b = s.BufferT(); b.data = np.frombuffer(np.asarray(value, '<f4').tobytes(), np.uint8)
    model.buffers.append(b)
    t = s.TensorT(); t.name = name; t.shape = np.array(np.shape(value), np.int32); t.type = s.TensorType.FLOAT32
    t.buffer = len(model.buffers) - 1
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def relu_as_mul(model, op):
    """RELU(x) -> MUL(x, 1.0) with a fused RELU: same value; XNNPACK runs int8 MUL+RELU but not
    a stand-alone int8 RELU (each one split the int8 graph into another delegate partition)."""
    x = int(op.inputs[0])
    one = add_const(model, model.subgraphs[0].tensors[int(op.outputs[0])].name.decode() + '/one', np.ones([1], np.float32))
    op.opcodeIndex = opcode_index(model, OP.MUL)
    op.inputs = np.array([x, one], np.int32)
    op.builtinOptionsType = s.BuiltinOptions.MulOptions
    op.builtinOptions = s.MulOptionsT(); op.builtinOptions.fusedActivationFunction = s.ActivationFunctionType.RELU


FUSABLE = {OP.CONV_2D: 'Conv2DOptions', OP.DEPTHWISE_CONV_2D: 'DepthwiseConv2DOptions', OP.ADD: 'AddOptions'}


def fuse_relu(model):
    """producer(...)=x, RELU(x)=y with x used only there  ->  producer with fused RELU = y."""
    sg = model.subgraphs[0]
    users = {}
    for i, op in enumerate(sg.operators):
        for t in op.inputs:
            users.setdefault(int(t), []).append(i)
    producer = {int(o): i for i, op in enumerate(sg.operators) for o in op.outputs}
    outs = set(int(t) for t in sg.outputs); drop = set()
    for i, op in enumerate(sg.operators):
        if op_code(model, op) != OP.RELU:
            continue
        x = int(op.inputs[0])
        if x in outs or users.get(x) != [i] or x not in producer:
            continue
        p = sg.operators[producer[x]]
        if op_code(model, p) not in FUSABLE or p.builtinOptions is None:
            continue
        if p.builtinOptions.fusedActivationFunction != s.ActivationFunctionType.NONE:
            continue
        p.builtinOptions.fusedActivationFunction = s.ActivationFunctionType.RELU
        p.outputs = np.array(op.outputs, np.int32)
        drop.add(i)
    sg.operators = [op for i, op in enumerate(sg.operators) if i not in drop]
    return len(drop)


def rewrite_prelu(model, native=False):
    """relu(x) + c*(x - |x|)  ->  relu(x) + (2c)*(x - relu(x)): same value, no ABS; the RELU
    itself becomes MUL(x, 1) with a fused RELU (see relu_as_mul)."""
    sg = model.subgraphs[0]
    producer = {o: i for i, op in enumerate(sg.operators) for o in op.outputs}
    users = {}
    for i, op in enumerate(sg.operators):
        for t in op.inputs:
            users.setdefault(t, []).append(i)
    drop = set(); n = 0; prelus = {}
    for i, op in enumerate(sg.operators):
        if op_code(model, op) != OP.ABS:
            continue
        x, a = op.inputs[0], op.outputs[0]
        subs = [j for j in users.get(a, []) if op_code(model, sg.operators[j]) == OP.SUB]
        relus = [j for j in users.get(x, []) if op_code(model, sg.operators[j]) == OP.RELU]
        if len(users[a]) != 1 or len(subs) != 1 or len(relus) != 1:
            continue
        sub = sg.operators[subs[0]]
        if list(sub.inputs) != [x, a] or len(users[sub.outputs[0]]) != 1:
            continue
        mul = sg.operators[users[sub.outputs[0]][0]]
        if op_code(model, mul) != OP.MUL:
            continue
        cidx = [t for t in mul.inputs if t != sub.outputs[0]][0]
        ct = sg.tensors[cidx]
        if not const(model, ct) or sum(1 for t in sg.tensors if t.buffer == ct.buffer) != 1:
            continue
        r = sg.operators[relus[0]].outputs[0]
        if relus[0] > subs[0]:
            continue  # RELU must run before the SUB that now reads it
        c = np.frombuffer(bytes(model.buffers[ct.buffer].data), '<f4') * np.float32(2)
        model.buffers[ct.buffer].data = np.frombuffer(c.astype('<f4').tobytes(), np.uint8)
        if native:  # one float PRELU(x, alpha = 2c) takes the final ADD's place
            add = sg.operators[users[mul.outputs[0]][0]]
            p = s.OperatorT(); p.opcodeIndex = opcode_index(model, OP.PRELU)
            p.inputs = np.array([x, cidx], np.int32); p.outputs = np.array(add.outputs, np.int32)
            ct.shape = np.array([1, 1, len(c)], np.int32)
            drop |= {i, relus[0], subs[0], users[sub.outputs[0]][0]}
            prelus[users[mul.outputs[0]][0]] = p; n += 1
            continue
        sub.inputs = np.array([x, r], np.int32)
        relu_as_mul(model, sg.operators[relus[0]])
        drop.add(i); n += 1
    sg.operators = [prelus.get(i, op) for i, op in enumerate(sg.operators) if i not in drop]
    return n


def compact(model):
    """Drop tensors no op or graph I/O uses, buffers no tensor uses, and unused op codes."""
    sg = model.subgraphs[0]
    used = set(int(t) for t in sg.inputs) | set(int(t) for t in sg.outputs)
    for op in sg.operators:
        used |= {int(t) for t in op.inputs if t >= 0} | {int(t) for t in op.outputs}
    order = sorted(used); tmap = {o: n for n, o in enumerate(order)}
    sg.tensors = [sg.tensors[o] for o in order]
    remap = lambda v: np.array([tmap[int(t)] if t >= 0 else -1 for t in v], np.int32)
    sg.inputs, sg.outputs = remap(sg.inputs), remap(sg.outputs)
    for op in sg.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
    bufs = sorted({t.buffer for t in sg.tensors} - {0}); bmap = {o: n + 1 for n, o in enumerate(bufs)}
    model.buffers = [model.buffers[0]] + [model.buffers[o] for o in bufs]
    for t in sg.tensors:
        t.buffer = bmap.get(t.buffer, 0)
    codes = sorted({op.opcodeIndex for op in sg.operators}); cmap = {o: n for n, o in enumerate(codes)}
    model.operatorCodes = [model.operatorCodes[o] for o in codes]
    for op in sg.operators:
        op.opcodeIndex = cmap[op.opcodeIndex]
    model.metadata = None; model.metadataBuffer = None


def add_signature(model, key='serving_default'):
    sg = model.subgraphs[0]
    def tmap(idx):
        m = s.TensorMapT(); m.name = sg.tensors[idx].name.decode(); m.tensorIndex = int(idx); return m
    sd = s.SignatureDefT(); sd.signatureKey = key; sd.subgraphIndex = 0
    sd.inputs = [tmap(i) for i in sg.inputs]; sd.outputs = [tmap(i) for i in sg.outputs]
    model.signatureDefs = [sd]


def prepare(path, native_prelu=False):
    """Returns (flatbuffer bytes, report dict) of the quantizer-ready float model. native_prelu:
    MobileFaceNet's PReLU as one float PRELU op (for float-activation models) instead of int8-able
    MUL/SUB/MUL/ADD."""
    m = read(path)
    rep = dict(opcodes_fixed=fix_opcodes(m), fp16_folded=fold_fp16_dequantize(m), relu_fused=fuse_relu(m),
               prelu_rewritten=rewrite_prelu(m, native_prelu))
    compact(m); add_signature(m)
    return write(m), rep

