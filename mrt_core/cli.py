"""`mrt run CONFIG.ini [--json OUT.json]`: prepare, calibrate, quantize, check and evaluate one model."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from .errors import MRTError


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.2f}"


def _short(cfg) -> str:
    parts = [cfg.granularity] if cfg.granularity != "layer-wise" else []
    if cfg.quant_type != "UniformSymmetric":
        parts.append(cfg.quant_type)
    if cfg.restore:
        parts.append("restore")
    return "/".join(parts) or "default"


def run(args) -> int:
    from .session import Session
    t = time.perf_counter()
    session, run_cfg = Session.from_ini(args.config)
    load_seconds = time.perf_counter() - t
    session.features()
    t = time.perf_counter()
    config = run_cfg.quant_config
    if args.preset == "recommended":
        # the preset fills in what the config file leaves at its default; the file's own entries win
        config = type(config)({**session.recommended_config(), **config})
    model = session.quantize(config)
    for warning in model.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    quantize_seconds = time.perf_counter() - t
    t = time.perf_counter()
    ev = session.evaluate(model, check=True)
    seconds = {"load": load_seconds, "prepare": session.seconds["prepare"],
               "calibrate": session.seconds["calibrate"], "quantize": quantize_seconds,
               "evaluate": time.perf_counter() - t}
    print(f"model {run_cfg.model_name}: {ev.num_samples} test samples of '{session.dataset.name}'")
    print(f"{'node':40s} {'op':16s} {'bits':>4s} {'SQNR dB':>8s} {'cosine':>8s} {'max err':>9s}")
    for layer in ev.layers:
        mark = "  (restored: float)" if layer.restored else ""
        print(f"{layer.name[:40]:40s} {layer.op[:16]:16s} {layer.precision:4d} {_fmt(layer.sqnr_db):>8s} "
              f"{layer.cosine:8.4f} {layer.max_abs:9.4g}{mark}")
    print(f"float  top1 {ev.float_top1:6.2f}%  top5 {ev.float_top5:6.2f}%")
    print(f"quant  top1 {ev.quant_top1:6.2f}%  top5 {ev.quant_top5:6.2f}%   max precision {ev.max_precision} bits"
          f" (integer check passed)")
    fid = ev.fidelity
    print(f"agreement with float: top-1 {fid['top1_agreement']:.1f}%, top-5 overlap {fid['top5_overlap']:.1f}%, "
          f"logit cosine {fid['logit_cosine']:.4f} ({fid['num_samples']} samples)")
    views = session.fidelity_on_views(model) if args.fidelity_views else None
    if views:
        print(f"over {views['num_samples']} samples x views: top-1 agreement {views['top1_agreement']:.1f}%, "
              f"logit cosine {views['logit_cosine']:.4f}")
    if args.preset != "default":
        print(f"preset {args.preset}: " + (", ".join(f"{k}={_short(v)}" for k, v in sorted(config.items())) or "nothing"))
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))
    if args.export:
        from .export import export_quantized
        paths = export_quantized(model, args.export, run_cfg.model_name + "_int")
        print("exported: " + ", ".join(paths))
    if args.json:
        out = {
            "model": run_cfg.model_name, "float_top1": ev.float_top1, "float_top5": ev.float_top5,
            "quant_top1": ev.quant_top1, "quant_top5": ev.quant_top5, "max_precision": ev.max_precision,
            "num_samples": ev.num_samples, "seconds": seconds, "fidelity": fid, "fidelity_views": views,
            "preset": args.preset, "config": json.loads(config.to_json()), "warnings": model.warnings,
            "dataset": session.dataset.name, "integer_check": "passed",
            "layers": [{"name": l.name, "op": l.op, "precision": l.precision,
                        "sqnr_db": None if math.isinf(l.sqnr_db) else l.sqnr_db, "cosine": l.cosine,
                        "max_abs_error": l.max_abs, "restored": l.restored} for l in ev.layers],
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mrt", description="MRT Studio: integer quantization of MXNet models")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="prepare, calibrate, quantize and evaluate the model of an INI config")
    p.add_argument("config")
    p.add_argument("--json", help="write the results as JSON to this file")
    p.add_argument("--preset", choices=("default", "recommended"), default="default",
                   help="recommended: apply the candidate discovery's weight-scale suggestions (per-output-channel / "
                        "group-wise weights); default: MRT's plain layer-wise settings")
    p.add_argument("--export", metavar="DIR", help="write the integer-only model (JSON + params + scales) here")
    p.add_argument("--fidelity-views", action="store_true",
                   help="also report agreement with the float model over all samples and augmented views")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except MRTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
