"""Quantization settings and per-node configuration (MRT's Cfg_groups / Restore_name, and JSON)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from .errors import ConfigError

GRANULARITIES = ("layer-wise", "channel-wise", "group-wise", "output-channel-wise")
QUANT_TYPES = ("UniformSymmetric", "UniformAffine")
OPTIMIZOR_ATTRS = {
    "HistoricalValue": {"lambda"},
    "MovingAverage": {"c"},
    "KLDivergence": {"bucket_bits", "quant_bits"},
    "OutlierRemoval": {"percentile"},
}


@dataclass
class Settings:
    input_precision: int = 8
    output_precision: int = 8
    shift_bits: int = 5
    default_lambda: float | None = None  # CALIBRATION Lambda: HistoricalValue's lambda where a node sets none

    def __post_init__(self):
        for key in ("input_precision", "output_precision"):
            value = getattr(self, key)
            if not isinstance(value, int) or not 2 <= value <= 16:
                raise ConfigError(f"{key} must be an integer in [2, 16], got {value!r}")
        if not isinstance(self.shift_bits, int) or not 0 <= self.shift_bits <= 16:
            raise ConfigError(f"shift_bits must be an integer in [0, 16], got {self.shift_bits!r}")

    @property
    def merge_precision(self) -> int:
        """Precision at which per-channel partial results are brought to one scale before merging."""
        return 2 * self.output_precision


@dataclass
class NodeConfig:
    granularity: str = "layer-wise"
    ichannel: int = 1
    step: int = 1
    quant_type: str = "UniformSymmetric"
    optimizor: dict = field(default_factory=lambda: {"name": "HistoricalValue"})
    restore: bool = False

    def validate(self, where: str) -> "NodeConfig":
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"{where}: unknown granularity '{self.granularity}' (use {', '.join(GRANULARITIES)})")
        if self.quant_type not in QUANT_TYPES:
            raise ConfigError(f"{where}: unknown quant_type '{self.quant_type}' (use {', '.join(QUANT_TYPES)})")
        if not isinstance(self.step, int) or self.step < 1:
            raise ConfigError(f"{where}: step must be a positive integer, got {self.step!r}")
        if self.ichannel != 1:
            raise ConfigError(f"{where}: only ichannel 1 (the channel axis of NCHW / NK) is supported, "
                              f"got {self.ichannel!r}")
        name = self.optimizor.get("name")
        if name not in OPTIMIZOR_ATTRS:
            raise ConfigError(f"{where}: unknown optimizor '{name}' (use {', '.join(OPTIMIZOR_ATTRS)})")
        extra = set(self.optimizor) - {"name"} - OPTIMIZOR_ATTRS[name]
        if extra:
            raise ConfigError(f"{where}: optimizor {name} has no attribute {', '.join(sorted(extra))} "
                              f"(it takes {', '.join(sorted(OPTIMIZOR_ATTRS[name])) or 'none'})")
        for key, value in self.optimizor.items():
            if key != "name":
                _check_attr(where, name, key, value)
        if not isinstance(self.restore, bool):
            raise ConfigError(f"{where}: restore must be true or false, got {self.restore!r}")
        return self

    def is_default(self) -> bool:
        return self == NodeConfig()


# optimizor attribute -> (type, low, high, inclusive high): the ranges where each one means something
_ATTR_RANGES = {
    "lambda": (float, 0.0, 1e6, True), "c": (float, 0.0, 1.0, True),
    "percentile": (float, 0.0, 50.0, False), "bucket_bits": (int, 4, 16, True), "quant_bits": (int, 2, 16, True),
}


def _check_attr(where: str, optimizor: str, key: str, value) -> None:
    kind, low, high, inclusive = _ATTR_RANGES[key]
    ok_type = isinstance(value, int) if kind is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{where}: {optimizor} {key} must be {'an integer' if kind is int else 'a number'}, "
                          f"got {value!r}")
    if not (low < value if kind is float else low <= value) or not (value <= high if inclusive else value < high):
        raise ConfigError(f"{where}: {optimizor} {key}={value} is outside its range "
                          f"({low}, {high}{']' if inclusive else ')'}")


_FIELDS = {"granularity", "ichannel", "step", "quant_type", "optimizor", "restore"}


def node_config_from_dict(name: str, data: dict) -> NodeConfig:
    unknown = set(data) - _FIELDS
    if unknown:
        raise ConfigError(f"node '{name}': unknown config key(s) {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(_FIELDS))})")
    data = dict(data)
    if isinstance(data.get("optimizor"), str):
        data["optimizor"] = {"name": data["optimizor"]}
    return NodeConfig(**data).validate(f"node '{name}'")


class QuantConfig(dict):
    """Original node name -> NodeConfig; nodes not listed use the defaults."""

    def get_node(self, name: str) -> NodeConfig:
        return self.get(name) or NodeConfig()

    def with_node(self, name: str, **changes) -> "QuantConfig":
        new = QuantConfig(self)
        cfg = asdict(self.get_node(name))
        cfg.update(changes)
        cfg = node_config_from_dict(name, cfg)
        if cfg.is_default():
            new.pop(name, None)
        else:
            new[name] = cfg
        return new

    # ---- JSON
    def to_json(self) -> str:
        return json.dumps({k: asdict(v) for k, v in sorted(self.items())}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "QuantConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config JSON is malformed: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("config JSON must be an object of node name -> settings")
        return cls({k: node_config_from_dict(k, v) for k, v in data.items()})

    # ---- MRT INI: Cfg_groups entries and Restore_name
    def to_mrt(self) -> tuple[str, str]:
        """(Cfg_groups, Restore_name) values in MRT's syntax ('.' separates dict items, ';' maps keys)."""
        lines = []
        for name, cfg in sorted(self.items()):
            if cfg.granularity != "layer-wise":
                gn = f'{{"gn_type"; "{cfg.granularity}". "ichannel"; {cfg.ichannel}. "step"; {cfg.step}}}'
                lines.append(f'["{name}"]: gn_info: {gn}')
            if cfg.quant_type != "UniformSymmetric":
                lines.append(f'["{name}"]: quant_type: {cfg.quant_type}')
            if cfg.optimizor != {"name": "HistoricalValue"}:
                attrs = "".join(f'. "{k}"; {_mrt_value(v, name)}' for k, v in cfg.optimizor.items() if k != "name")
                lines.append(f'["{name}"]: opt_info: {{"opt_type"; "{cfg.optimizor["name"]}"{attrs}}}')
        restore = ",".join(sorted(n for n, c in self.items() if c.restore))
        return ",\n  ".join(lines), restore

    @classmethod
    def from_mrt(cls, cfg_groups: str, restore_name: str = "") -> "QuantConfig":
        entries: dict[str, dict] = {}
        for item in _split_entries(cfg_groups or ""):
            m = re.fullmatch(r'\[\s*"([^"]+)"\s*\]\s*:\s*(\w+)\s*:\s*(.+)', item, re.S)
            if not m:
                raise ConfigError(f"Cfg_groups entry not understood: {item!r} "
                                  f'(expected ["name"]: gn_info|quant_type|opt_info: value)')
            name, key, value = m.group(1), m.group(2), m.group(3).strip()
            cfg = entries.setdefault(name, {})
            if key == "gn_info":
                info = _parse_mrt_dict(value, name)
                unknown = set(info) - {"gn_type", "ichannel", "step"}
                if unknown:
                    raise ConfigError(f"node '{name}': unknown gn_info key(s) {', '.join(sorted(unknown))}")
                cfg["granularity"] = info.get("gn_type", "layer-wise")
                if "ichannel" in info:
                    cfg["ichannel"] = info["ichannel"]
                if "step" in info:
                    cfg["step"] = info["step"]
            elif key == "quant_type":
                cfg["quant_type"] = value
            elif key == "opt_info":
                info = _parse_mrt_dict(value, name)
                if "opt_type" not in info:
                    raise ConfigError(f"node '{name}': opt_info needs an \"opt_type\"")
                cfg["optimizor"] = {"name": info.pop("opt_type"), **info}
            else:
                raise ConfigError(f"node '{name}': unknown Cfg_groups key '{key}' (use gn_info, quant_type, opt_info)")
        for name in [n.strip() for n in (restore_name or "").replace("\n", ",").split(",") if n.strip()]:
            entries.setdefault(name, {})["restore"] = True
        return cls({k: node_config_from_dict(k, v) for k, v in entries.items()})


def _mrt_value(value, node: str) -> str:
    if isinstance(value, float):
        raise ConfigError(f"node '{node}': the float {value} cannot be written in MRT's Cfg_groups syntax "
                          f"('.' separates items there); use the JSON form")
    return json.dumps(value)


def _split_entries(text: str) -> list[str]:
    """Split on commas that are outside braces (MRT entries are separated by ',')."""
    items, depth, cur = [], 0, []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur))
    return [i.strip() for i in items if i.strip()]


def _parse_mrt_dict(text: str, node: str) -> dict:
    """MRT's dict syntax: {"k"; v. "k2"; v2} — ';' for ':' and '.' for ','."""
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise ConfigError(f"node '{node}': expected {{...}}, got {text!r}")
    body = text[1:-1].strip()
    out = {}
    for part in [p for p in re.split(r'\.(?=\s*")', body) if p.strip()]:
        k, sep, v = part.partition(";")
        if not sep:
            raise ConfigError(f"node '{node}': item {part.strip()!r} lacks ';'")
        try:
            out[json.loads(k.strip())] = json.loads(v.strip())
        except json.JSONDecodeError:
            raise ConfigError(f"node '{node}': cannot read item {part.strip()!r}") from None
    return out
