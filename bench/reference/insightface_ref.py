"""The InsightFace Python pipeline, as a long-lived reference process for bench/reference.bench.ts.

Benchmark tooling only (never part of the product). Runs insightface's FaceAnalysis (SCRFD detection
+ norm_crop alignment + ArcFaceONNX embedding) on the same model files as facematch's `test` pack,
with facematch's settings: detector input 640x640, score threshold 0.5, NMS IoU 0.4.

    python insightface_ref.py --det DET.onnx --rec REC.onnx --work DIR [--det-threads N --rec-threads N]
        [--det-spinning 0|1 --rec-spinning 0|1] [--rec-mean 127 --rec-std 128]

Protocol (binary stdin, text stdout, one request at a time):
  request:  one JSON line {"name": str, "size": int, "embeddings": bool}, then `size` bytes of an
            encoded image; end of input ends the process.
  response: one JSON line {"name", "width", "height", "faces": [{"box": [x1,y1,x2,y2], "score"}],
            "ms": {"decode", "total"}, "embeddings"?: [[512 floats]...]} or {"name", "error"}.
  The first line on stdout, before any request, is {"ready": {...settings and versions...}}.

`ms.total` is time.perf_counter() around cv2.imdecode + FaceAnalysis.get on bytes already in
memory: decode, detect, align and embed of one photo, the same span facematch's analyze() covers.
Nothing from this process goes to stderr except errors (insightface's model messages are debug logs).
"""

import argparse
import json
import os
import sys
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--det", required=True, help="SCRFD detector .onnx")
    parser.add_argument("--rec", required=True, help="ArcFace-layout embedder .onnx")
    parser.add_argument("--work", required=True, help="folder for the model directory FaceAnalysis reads")
    # onnxruntime session settings per model, so that they can match facematch's.
    for model in ("det", "rec"):
        parser.add_argument(f"--{model}-threads", type=int, default=0, help="intra-op threads (0: onnxruntime's default)")
        parser.add_argument(f"--{model}-spinning", type=int, choices=(0, 1), default=1, help="idle intra-op threads spin (1, onnxruntime's default) or sleep (0)")
    parser.add_argument("--det-size", type=int, default=640)
    parser.add_argument("--det-thresh", type=float, default=0.5)
    parser.add_argument("--nms", type=float, default=0.4)
    parser.add_argument("--rec-mean", type=float, default=None, help="embedder input mean (default: insightface's guess)")
    parser.add_argument("--rec-std", type=float, default=None, help="embedder input std (default: insightface's guess)")
    args = parser.parse_args()

    # scikit-image 0.26 deprecates the SimilarityTransform.estimate() that norm_crop calls.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"insightface\.")
    import cv2
    import numpy as np
    import onnxruntime
    import insightface
    from insightface.app import FaceAnalysis

    # FaceAnalysis loads every .onnx of one folder: link the two files (never copy weights).
    model_dir = os.path.join(args.work, "models", "facematch-reference")
    os.makedirs(model_dir, exist_ok=True)
    for stale in os.listdir(model_dir):
        os.unlink(os.path.join(model_dir, stale))
    for f in (args.det, args.rec):
        os.symlink(os.path.abspath(f), os.path.join(model_dir, os.path.basename(f)))

    def session_options(threads: int, spinning: int) -> "onnxruntime.SessionOptions":
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if threads > 0:
            options.intra_op_num_threads = threads
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    app = FaceAnalysis(
        name=model_dir,
        allowed_modules=["detection", "recognition"],
        providers=["CPUExecutionProvider"],
        sess_options=session_options(args.det_threads, args.det_spinning),
    )
    app.prepare(ctx_id=0, det_thresh=args.det_thresh, det_size=(args.det_size, args.det_size))
    det = app.models["detection"]
    rec = app.models.get("recognition")
    if rec is None:
        raise SystemExit(f"insightface did not route {args.rec} to its recognition model")
    det.nms_thresh = args.nms
    # FaceAnalysis gives every model the same session options; the embedder's may differ.
    if (args.rec_threads, args.rec_spinning) != (args.det_threads, args.det_spinning):
        rec.session = onnxruntime.InferenceSession(
            rec.model_file,
            sess_options=session_options(args.rec_threads, args.rec_spinning),
            providers=["CPUExecutionProvider"],
        )
    # ArcFaceONNX guesses the input normalisation from the graph's first nodes (127.5/127.5, or 0/1
    # when the graph subtracts and scales itself); the model pack's manifest is the truth.
    guessed = {"mean": rec.input_mean, "std": rec.input_std}
    if args.rec_mean is not None:
        rec.input_mean = args.rec_mean
    if args.rec_std is not None:
        rec.input_std = args.rec_std

    out = sys.stdout
    ready = {
        "insightface": insightface.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "sessions": {
            "detector": {"threads": args.det_threads, "spinning": bool(args.det_spinning)},
            "embedder": {"threads": args.rec_threads, "spinning": bool(args.rec_spinning)},
        },
        "cv2_threads": cv2.getNumThreads(),
        "det_size": list(det.input_size),
        "det_thresh": det.det_thresh,
        "nms": det.nms_thresh,
        "det_mean_std": [det.input_mean, det.input_std],
        "rec_mean_std": [rec.input_mean, rec.input_std],
        "rec_guessed_mean_std": [guessed["mean"], guessed["std"]],
        "providers": det.session.get_providers(),
    }
    out.write(json.dumps({"ready": ready}) + "\n")
    out.flush()

    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return
        req = json.loads(line)
        data = stdin.read(req["size"])
        if len(data) != req["size"]:
            raise SystemExit(f"{req['name']}: expected {req['size']} bytes, got {len(data)}")
        buf = np.frombuffer(data, dtype=np.uint8)
        t0 = time.perf_counter()
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        t1 = time.perf_counter()
        if img is None:
            out.write(json.dumps({"name": req["name"], "error": "OpenCV could not decode the image"}) + "\n")
            out.flush()
            continue
        faces = app.get(img)
        t2 = time.perf_counter()
        res = {
            "name": req["name"],
            "width": int(img.shape[1]),
            "height": int(img.shape[0]),
            "faces": [{"box": [float(v) for v in f.bbox], "score": float(f.det_score)} for f in faces],
            "ms": {"decode": (t1 - t0) * 1000, "total": (t2 - t0) * 1000},
        }
        if req.get("embeddings"):
            res["embeddings"] = [[float(v) for v in f.normed_embedding] for f in faces]
        out.write(json.dumps(res) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
