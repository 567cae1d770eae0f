"""The run configuration: MRT's INI sections and keys, validated, with paths relative to the file."""

from __future__ import annotations

import ast
import configparser
import os
from dataclasses import dataclass, field

from .errors import ConfigError
from .qconfig import QuantConfig, Settings

SCHEMA = {
    "DEFAULT": {"Model_dir", "Model_name", "Input_shape"},
    "CALIBRATION": {"Batch", "Calibrate_num", "Lambda", "Dataset", "Dataset_dir"},
    "QUANTIZATION": {"Input_precision", "Output_precision", "Shift_bits", "Cfg_groups", "Restore_name", "Cfg_json"},
    "EVALUATION": {"Batch", "Iter_num"},
}


@dataclass
class RunConfig:
    path: str
    model_dir: str
    model_name: str
    input_shape: tuple
    calib_batch: int = 16
    calib_num: int = 1
    lambda_: float | None = None
    dataset: str = "mnist5k"
    dataset_dir: str | None = None
    settings: Settings = field(default_factory=Settings)
    quant_config: QuantConfig = field(default_factory=QuantConfig)
    eval_batch: int = 500
    eval_num: int | None = None


def _int(section: str, key: str, text: str, default=None, minimum: int | None = None):
    if text.strip() == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"[{section}] {key}={text!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"[{section}] {key}={value} must be at least {minimum}")
    return value


def load_run_config(path: str) -> RunConfig:
    if not os.path.exists(path):
        raise ConfigError(f"config file {path} not found")
    parser = configparser.ConfigParser(default_section="__no_default__", interpolation=None)
    parser.optionxform = str  # MRT's keys are case-sensitive (Model_dir, Calibrate_num)
    try:
        parser.read(path)
    except configparser.Error as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for section in parser.sections():
        if section not in SCHEMA:
            raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(SCHEMA)})")
        for key in parser[section]:
            if key not in SCHEMA[section]:
                raise ConfigError(f"{path}: unknown key '{key}' in [{section}] "
                                  f"(known: {', '.join(sorted(SCHEMA[section]))})")
    get = lambda s, k, d="": parser[s][k] if parser.has_section(s) and k in parser[s] else d  # noqa: E731
    base = os.path.dirname(os.path.abspath(path))
    if not get("DEFAULT", "Model_name"):
        raise ConfigError(f"{path}: [DEFAULT] Model_name is required")
    try:
        shape = ast.literal_eval(get("DEFAULT", "Input_shape", "None"))
        shape = tuple(int(d) for d in shape)
    except (ValueError, SyntaxError, TypeError):
        raise ConfigError(f"{path}: [DEFAULT] Input_shape={get('DEFAULT', 'Input_shape')!r} is not a shape "
                          f"like (-1, 1, 28, 28)") from None
    lam = get("CALIBRATION", "Lambda").strip()
    try:
        lam = float(lam) if lam else None
    except ValueError:
        raise ConfigError(f"{path}: [CALIBRATION] Lambda={lam!r} is not a number") from None
    if lam is not None and not lam > 0:
        raise ConfigError(f"{path}: [CALIBRATION] Lambda={lam} must be positive")
    dataset_dir = get("CALIBRATION", "Dataset_dir").strip()
    qcfg = QuantConfig.from_mrt(get("QUANTIZATION", "Cfg_groups") + "," + get("CALIBRATION", "Cfg_groups", ""),
                                get("QUANTIZATION", "Restore_name"))
    json_path = get("QUANTIZATION", "Cfg_json").strip()
    if json_path:
        full = os.path.join(base, json_path)
        if not os.path.exists(full):
            raise ConfigError(f"{path}: [QUANTIZATION] Cfg_json file {full} not found")
        with open(full) as f:
            qcfg = QuantConfig({**qcfg, **QuantConfig.from_json(f.read())})
    return RunConfig(
        path=os.path.abspath(path),
        model_dir=os.path.join(base, os.path.expanduser(os.path.expandvars(get("DEFAULT", "Model_dir", ".")))),
        model_name=get("DEFAULT", "Model_name"),
        input_shape=shape,
        calib_batch=_int("CALIBRATION", "Batch", get("CALIBRATION", "Batch"), 16, 1),
        calib_num=_int("CALIBRATION", "Calibrate_num", get("CALIBRATION", "Calibrate_num"), 1, 1),
        lambda_=lam,
        dataset=get("CALIBRATION", "Dataset", "mnist5k").strip(),
        dataset_dir=os.path.join(base, dataset_dir) if dataset_dir else None,
        settings=Settings(
            input_precision=_int("QUANTIZATION", "Input_precision", get("QUANTIZATION", "Input_precision"), 8),
            output_precision=_int("QUANTIZATION", "Output_precision", get("QUANTIZATION", "Output_precision"), 8),
            shift_bits=_int("QUANTIZATION", "Shift_bits", get("QUANTIZATION", "Shift_bits"), 5),
            default_lambda=lam),
        quant_config=qcfg,
        eval_batch=_int("EVALUATION", "Batch", get("EVALUATION", "Batch"), 500, 1),
        eval_num=_int("EVALUATION", "Iter_num", get("EVALUATION", "Iter_num"), None, 1),
    )
