"""One-pass kernels for chains of elementwise integer ops (bias add, relu, requantization shifts, clips).

Run one numpy op at a time, such a chain reads and writes the whole activation once per op; here it is
read once and written once. Values are int64 inside the kernel, so every step is exact: the integer
contract keeps every intermediate below 2^32 and the constants below 2^16."""

from __future__ import annotations

import numba
import numpy as np

ADD, MUL, RELU, RIGHT_SHIFT, LEFT_SHIFT, CLIP, CHANNEL_RIGHT_SHIFT = range(7)
ROW_MIN = 32  # shorter (sample, channel) rows run as one row per sample
PARALLEL_MIN = 1 << 16  # smaller values run as one task: waking threads would cost more


@numba.njit(inline="always")
def _apply(buf, codes, iargs, consts, t, c0):  # pragma: no cover - compiled
    """Step t on a row held in buf (int64); c0 is the row's constant (per-channel rows) or -1, in which
    case consts[t] holds one constant per element of the row."""
    code = codes[t]
    a, b = iargs[t, 0], iargs[t, 1]
    n = buf.shape[0]
    if code == ADD:
        if c0 >= 0:
            v = consts[t, c0]
            for j in range(n):
                buf[j] += v
        else:
            for j in range(n):
                buf[j] += consts[t, j]
    elif code == MUL:
        if c0 >= 0:
            v = consts[t, c0]
            for j in range(n):
                buf[j] *= v
        else:
            for j in range(n):
                buf[j] *= consts[t, j]
    elif code == RELU:
        for j in range(n):
            buf[j] = max(buf[j], 0)
    else:
        if code == RIGHT_SHIFT:
            if a > 0:  # rounding right shift: ((x >> (s-1)) + 1) >> 1
                for j in range(n):
                    buf[j] = ((buf[j] >> (a - 1)) + 1) >> 1
            a, b = -b, b
        elif code == CHANNEL_RIGHT_SHIFT:  # the same, by each channel's own shift (all >= 1)
            if c0 >= 0:
                v = consts[t, c0] - 1
                for j in range(n):
                    buf[j] = ((buf[j] >> v) + 1) >> 1
            else:
                for j in range(n):
                    buf[j] = ((buf[j] >> (consts[t, j] - 1)) + 1) >> 1
            a, b = -b, b
        elif code == LEFT_SHIFT:
            for j in range(n):
                buf[j] = buf[j] << a
            a, b = -b, b
        for j in range(n):  # CLIP to [a, b], and the shifts' clip to their precision
            buf[j] = min(max(buf[j], a), b)


@numba.njit(cache=True, nogil=True)
def _run_rows(x, out, codes, iargs, consts, per_channel, row, first):  # pragma: no cover - compiled
    """x, out: (rows, L), rows first, first+1, ... of the whole value. per_channel: row r has channel
    r % C and one constant per step (consts: (k, C)); otherwise every row is one sample and consts (k, L)
    has one constant per element. row: a length-L array whose dtype the work is done in."""
    channels = consts.shape[1]
    buf = np.empty_like(row)
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            buf[j] = x[r, j]
        c0 = (first + r) % channels if per_channel else -1
        for t in range(codes.shape[0]):
            _apply(buf, codes, iargs, consts, t, c0)
        for j in range(x.shape[1]):
            out[r, j] = buf[j]


@numba.njit(parallel=True, cache=True, nogil=True)
def _run_blocks(x, out, codes, iargs, consts, per_channel, row, blocks):  # pragma: no cover - compiled
    """_run_rows on `blocks` row blocks at once, one per core."""
    step = (x.shape[0] + blocks - 1) // blocks
    for b in numba.prange(blocks):
        a = b * step
        _run_rows(x[a:a + step], out[a:a + step], codes, iargs, consts, per_channel, row, a)


@numba.njit(parallel=True, cache=True, nogil=True)
def _pool_rows(x, out, kh, kw, sh, sw, ph, pw, take_max):  # pragma: no cover - compiled
    """x: (rows, H, W) int32, out: (rows, OH, OW); each output the sum (zeros outside x) or the max (of
    the elements inside x; every window holds one) of its window."""
    height, width = x.shape[1], x.shape[2]
    for r in numba.prange(x.shape[0]):
        for oh in range(out.shape[1]):
            h0 = oh * sh - ph
            for ow in range(out.shape[2]):
                w0 = ow * sw - pw
                acc = -(1 << 62) if take_max else 0
                for i in range(max(h0, 0), min(h0 + kh, height)):
                    for j in range(max(w0, 0), min(w0 + kw, width)):
                        acc = max(acc, x[r, i, j]) if take_max else acc + x[r, i, j]
                out[r, oh, ow] = acc


@numba.njit(parallel=True, cache=True, nogil=True)
def _pool_2x2(x, out, take_max):  # pragma: no cover - compiled
    """_pool_rows for the common 2x2 window at stride 2: its constant offsets run 10x faster."""
    for r in numba.prange(x.shape[0]):
        for oh in range(out.shape[1]):
            for ow in range(out.shape[2]):
                a, b = x[r, 2 * oh, 2 * ow], x[r, 2 * oh, 2 * ow + 1]
                c, d = x[r, 2 * oh + 1, 2 * ow], x[r, 2 * oh + 1, 2 * ow + 1]
                out[r, oh, ow] = max(max(a, b), max(c, d)) if take_max else np.int64(a) + b + c + d


@numba.njit(parallel=True, cache=True, nogil=True)
def _pool_global(x, out, take_max):  # pragma: no cover - compiled
    """x: (rows, H * W); out: (rows,), the sum or the max of each row."""
    for r in numba.prange(x.shape[0]):
        acc = np.int64(x[r, 0])
        for j in range(1, x.shape[1]):
            acc = max(acc, x[r, j]) if take_max else acc + x[r, j]
        out[r] = acc


def pool(x: np.ndarray, take_max: bool, kernel, stride, pad, out_hw) -> np.ndarray:
    """Max or sum pooling of the last two axes of an integer value, exact (int64 sums); out_hw: the
    output's (rows, columns), as the op's convention decides them. MXNet pools no integer dtype, and has
    no fast kernel for pool_type sum."""
    x = np.ascontiguousarray(x, dtype=np.int32)
    height, width = x.shape[-2:]
    rows = x.reshape(-1, height, width)
    out = np.empty((rows.shape[0], *out_hw), dtype=np.int32)
    if tuple(out_hw) == (1, 1) and tuple(kernel) == (height, width) and not any(pad):
        _pool_global(rows.reshape(len(rows), -1), out.reshape(-1), take_max)
    elif (tuple(kernel) == (2, 2) and tuple(stride) == (2, 2) and not any(pad)
          and 2 * out_hw[0] <= height and 2 * out_hw[1] <= width):
        _pool_2x2(rows, out, take_max)
    else:
        _pool_rows(rows, out, *kernel, *stride, *pad, take_max)
    return out.reshape(*x.shape[:-2], *out_hw)


ERROR_BLOCKS = 16  # fixed, so the sums are the same on any number of cores


@numba.njit(parallel=True, cache=True, nogil=True)
def _error_sums(ref, got, inv_scale, offset):  # pragma: no cover - compiled
    """Per block of the flat inputs, with g = got * inv_scale + offset in float32 (the dequantized value,
    as numpy computes it): sum r^2, sum (r - g)^2, sum r * g, sum g^2 and max |r - g|, in float64."""
    n = ref.size
    step = (n + ERROR_BLOCKS - 1) // ERROR_BLOCKS
    parts = np.zeros((ERROR_BLOCKS, 5))
    for b in numba.prange(ERROR_BLOCKS):
        signal = noise = dot = got_sq = worst = 0.0
        for i in range(b * step, min(n, (b + 1) * step)):
            r = np.float64(ref[i])
            g = np.float64(np.float32(np.float32(got[i]) * inv_scale) + offset)
            e = r - g
            signal += r * r
            noise += e * e
            dot += r * g
            got_sq += g * g
            worst = max(worst, abs(e))
        parts[b, 0], parts[b, 1], parts[b, 2], parts[b, 3], parts[b, 4] = signal, noise, dot, got_sq, worst
    return parts


ERROR_DTYPES = (np.float32, np.int8, np.int16, np.int32)  # a float value, and integer ones of each width


def error_sums(ref: np.ndarray, got: np.ndarray, scale: float = 1.0, offset: float = 0.0):
    """(sum r^2, sum (r - g)^2, sum r * g, sum g^2, max |r - g|) of a float reference and g = got / scale +
    offset, in one pass with float64 sums: numpy would need the dequantized value and a temporary per term."""
    r = np.ascontiguousarray(ref, dtype=np.float32).reshape(-1)
    g = np.ascontiguousarray(got).reshape(-1)
    if g.dtype not in ERROR_DTYPES:
        g = g.astype(np.int32 if g.dtype.kind in "iu" else np.float32)
    if r.size != g.size:
        raise ValueError(f"reference and value differ in size: {r.size} vs {g.size}")
    parts = _error_sums(r, g, np.float32(1.0 / scale), np.float32(offset))
    return (*(float(v) for v in parts[:, :4].sum(axis=0)), float(parts[:, 4].max()))


def keeps_zero(code: int, a: int, b: int, const) -> bool:
    """Whether the step maps 0 to 0, so a zero pad may run before or after it."""
    if code == ADD:
        return const is not None and not np.any(const)
    if code == CLIP:
        return a <= 0 <= b
    return True  # relu, both shifts, multiply


class Chain:
    """Elementwise steps waiting to run on `source` (the value the first step reads), then an optional
    zero pad of the last two axes (pad = (rows, columns) on each side): a Convolution can take that pad
    as its own padding, and the steps never see the padded zeros."""

    def __init__(self, source: np.ndarray):
        self.source = source
        self.channels = source.shape[1] if source.ndim > 1 else 1
        self.steps: list[tuple[int, int, int, np.ndarray | None]] = []
        self.pad: tuple[int, int] | None = None

    def accepts(self, const: np.ndarray | None) -> bool:
        """A constant operand fuses when it is a scalar or one value per channel (axis 1)."""
        if const is None:
            return True
        if const.size == 1:
            return True
        shape = const.shape
        if len(shape) > self.source.ndim:
            return False
        lead = len(shape) - self.source.ndim  # numpy aligns shapes at the right
        dims = [1] * (-lead) + list(shape)
        return all(d == 1 for i, d in enumerate(dims) if i != 1) and dims[1] == self.channels

    def add(self, code: int, a: int = 0, b: int = 0, const: np.ndarray | None = None) -> None:
        self.steps.append((code, a, b, const))

    def non_decreasing(self) -> bool:
        """Whether every step keeps order (x <= y gives f(x) <= f(y)): all but a negative multiplier."""
        return all(code != MUL or np.all(const >= 0) for code, _, _, const in self.steps)

    def numpy_source(self) -> np.ndarray:
        """The source as numpy (an MXNet result is copied out once, here)."""
        if not isinstance(self.source, np.ndarray):
            self.source = self.source.asnumpy()
        return self.source

    def run(self, dtype) -> np.ndarray:
        k = len(self.steps)
        codes = np.array([st[0] for st in self.steps], dtype=np.int64)
        iargs = np.array([[st[1], st[2]] for st in self.steps], dtype=np.int64).reshape(k, 2)
        # int32 holds every value (the contract bounds each node by its precision, at most 32 bits), and
        # does twice the work per vector instruction; a left shift can pass 2^31 before its clip
        work = np.int64 if LEFT_SHIFT in codes else np.int32
        consts = np.zeros((k, self.channels), dtype=work)
        for t, (_, _, _, const) in enumerate(self.steps):
            if const is not None:
                consts[t] = np.broadcast_to(const.reshape(-1), (self.channels,)) if const.size == 1 \
                    else const.reshape(-1)
        x = np.ascontiguousarray(self.numpy_source())
        shape = x.shape
        n = shape[0] if x.ndim else 1
        per_channel = x.size >= ROW_MIN * n * self.channels  # long rows: one (sample, channel) per row
        if not per_channel:  # short rows (FullyConnected outputs): one sample per row, constants spread out
            consts = np.repeat(consts, x.size // max(n * self.channels, 1), axis=1)
        x2 = x.reshape(n * self.channels if per_channel else n, -1)
        out = np.empty(x2.shape, dtype=dtype)
        args = (codes, iargs.astype(work), consts, per_channel, np.zeros(x2.shape[1], work))
        if _parallel(x, work):
            _run_blocks(x2, out, *args, min(len(x2), 4 * numba.get_num_threads()))
        else:
            _run_rows(x2, out, *args, 0)
        return out.reshape(shape)


def _parallel(x: np.ndarray, work) -> bool:
    """Large values of the common dtypes run on every core. Each parallel variant takes seconds to compile
    (once per machine: numba caches it on disk), so the rare ones (float64 values, int64 work) do not."""
    return (x.size >= PARALLEL_MIN and numba.get_num_threads() > 1 and work is np.int32
            and x.dtype in (np.float32, np.int32))


def warm_up() -> None:
    """Compile every kernel variant the executor uses, so that no first run waits for the compiler
    (make runs it when it sets up the environment; afterwards numba loads them from its disk cache)."""
    variants = [(source, out, code) for source in (np.float32, np.float64, np.int32)
                for out in (np.float32, np.int32) for code in (RELU, LEFT_SHIFT)]  # int32 and int64 work
    variants += [(source, np.uint8, RELU) for source in (np.float32, np.int32)]  # int8 convolutions' data
    for source, out, code in variants:
        for size in (1, PARALLEL_MIN):  # one task, and every core
            chain = Chain(np.zeros((1, 1, size), source))
            chain.add(code, 1, 1)
            chain.run(out)
    for dtype in ERROR_DTYPES:
        error_sums(np.zeros(1, np.float32), np.zeros(1, dtype))
    for kernel, stride in (((2, 2), (2, 2)), ((2, 2), (1, 1)), ((3, 3), (1, 1))):  # each kernel above
        pool(np.zeros((1, 1, 3, 3), np.int32), True, kernel, stride, (0, 0), (1, 1))


if __name__ == "__main__":
    warm_up()
