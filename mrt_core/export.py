"""Writing the integer-only model: symbol JSON + params (integer values) + what a runtime needs to know."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np

from .errors import QuantizeError
from .mxnet_io import save_mxnet
from .quantize import QuantizedModel


def quantization_info(model: QuantizedModel) -> dict:
    """Input scales, output scales and every node's precision: how to feed and read the integer model."""
    outputs = {}
    for prepared, qt in model.values.items():
        if qt.name in model.graph.outputs:
            outputs[qt.name] = {"scale": float(np.max(qt.scale)), "precision": qt.precision,
                                "zero_offset": qt.offset, "of": prepared}
    return {
        "inputs": {n: {"scale": s, "precision": model.settings.input_precision}
                   for n, s in model.input_scales.items()},
        "outputs": outputs,
        "precision": dict(model.precision),
        "note": "real = integer / scale + zero_offset; inputs: q = clip(round(x * scale), +-(2^(p-1)-1))",
    }


def export_quantized(model: QuantizedModel, directory: str, name: str) -> list[str]:
    """Write NAME.json + NAME.params (MRT naming) + NAME.quant.json; refuses a model with restored nodes."""
    if model.float_nodes:
        restored = sorted({model.reports[p].origin for p, r in model.reports.items() if r.restored})
        raise QuantizeError(f"restored nodes compute in float, so this is not an integer-only model: "
                            f"{', '.join(restored)} (restoration is for diagnosis; clear it to export)")
    sym, params = save_mxnet(model.graph, directory, name, naming="mrt")
    meta = os.path.join(directory, f"{name}.quant.json")
    with open(meta, "w") as f:
        json.dump(quantization_info(model), f, indent=1)
    return [sym, params, meta]


def export_zip(model: QuantizedModel, name: str) -> bytes:
    """The exported files as one zip, for a download button."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_quantized(model, tmp, name)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for p in paths:
                z.write(p, os.path.basename(p))
        return buf.getvalue()
