#!/usr/bin/env bash
# The InsightFace Python reference for `npm run bench:reference`: a virtualenv outside the repo with
# pinned insightface, onnxruntime (CPU), OpenCV and numpy from PyPI. Benchmark tooling only; the
# product never runs Python.
#
#   bench/reference/setup.sh        create or reuse the venv; prints its python's path on stdout
#
# Idempotent: the venv is rebuilt only when the pins below change (a stamp file holds them).
# Folder: FACEMATCH_PYREF_DIR, default FACEMATCH_TEST_ENV_CACHE/pyref (~/.cache/facematch-test-env/pyref).
# Python: PYTHON (default python3, 3.10 or newer: insightface 2.1 needs it).
#
# Why these pins: onnxruntime 1.30.0 is the core of onnxruntime-node 1.30.0 (npm ls onnxruntime-node),
# so both sides run the same kernels. insightface 2.1 (the current release) is a pure-Python wheel,
# installed without its declared dependencies because they name the GUI build opencv-python (the
# headless build below provides the same cv2). Its FaceAnalysis detection + recognition path is the
# 0.7.x pipeline's: SCRFD letterboxed into det_size, (x-127.5)/128, score 0.5, NMS 0.4; norm_crop
# (scikit-image's similarity transform); ArcFaceONNX, one face per run. One 2.x addition: SCRFD runs
# a session with shapes fixed to det_size. 0.7.3 needs a Cython build and albumentations to import.
set -euo pipefail

PINS=(
  insightface==2.1
  onnxruntime==1.30.0
  opencv-python-headless==4.14.0.94
  numpy==2.4.6
  onnx==1.23.2
  scikit-image==0.26.0
  scipy==1.17.1
  tqdm==4.70.1
  requests==2.34.2
)

CACHE="${FACEMATCH_TEST_ENV_CACHE:-${HOME:-/root}/.cache/facematch-test-env}"
DIR="${FACEMATCH_PYREF_DIR:-$CACHE/pyref}"
PYTHON="${PYTHON:-python3}"
VENV="$DIR/venv"
STAMP="$VENV/.facematch-pins"
WANT="$(printf '%s\n' "${PINS[@]}")"

log() { printf 'pyref: %s\n' "$*" >&2; }

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  printf '%s\n' "$VENV/bin/python"
  exit 0
fi

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
  log "$PYTHON is missing or older than 3.10 (set PYTHON)"
  exit 1
fi

mkdir -p "$DIR"
# One setup at a time; a second one waits, then finds the stamp.
exec 9>"$DIR/.lock"
flock 9
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  printf '%s\n' "$VENV/bin/python"
  exit 0
fi

log "creating $VENV (pins: ${PINS[*]})"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input --quiet)
# Everything else with its dependencies, then insightface alone without its list (see above).
"${pip[@]}" install "${PINS[@]:1}" >&2
"${pip[@]}" install --no-deps "${PINS[0]}" >&2
# Fails here, not in the bench, when an import the reference needs is missing.
"$VENV/bin/python" -c 'import cv2, numpy, onnxruntime; from insightface.app import FaceAnalysis' >&2
printf '%s\n' "$WANT" >"$STAMP"
log "ready: onnxruntime $("$VENV/bin/python" -c 'import onnxruntime; print(onnxruntime.__version__)')"
printf '%s\n' "$VENV/bin/python"
