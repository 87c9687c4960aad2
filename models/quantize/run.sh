#!/usr/bin/env bash
# Regenerates models/*int8*.tflite and models/MobileFaceNet_prelu.tflite from the float models
# and checks them against the SHA-256s recorded in models/quantize/SHA256SUMS. Then (optional)
# measures float vs int8:
#   bash models/quantize/run.sh            # quantize + verify hashes
#   bash models/quantize/run.sh --evaluate # also accuracy + latency (a few minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-/tmp/quant}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r models/quantize/requirements.txt
fi
"$VENV/bin/python" models/quantize/quantize.py 2> >(grep -v '^INFO' >&2)
"$VENV/bin/python" models/quantize/prelu.py 2> >(grep -v '^INFO' >&2)
(cd models && sha256sum -c quantize/SHA256SUMS)
if [ "${1:-}" = "--evaluate" ]; then
  "$VENV/bin/python" models/quantize/evaluate.py --json models/quantize/results.json 2> >(grep -v '^INFO\|WARNING\|└' >&2)
fi
