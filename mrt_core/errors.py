"""One error family, so callers (CLI, app) can show any engine failure as a message."""


class MRTError(Exception):
    """Base of every error the engine raises on bad input or an unsupported model."""


class ModelError(MRTError):
    """A malformed or unsupported model file or graph."""


class ConfigError(MRTError):
    """A wrong configuration key or value."""


class QuantizeError(MRTError):
    """A node that cannot be quantized (no rule, precision bound broken)."""


class CheckError(MRTError):
    """The integer checker found a value outside its recorded precision."""
