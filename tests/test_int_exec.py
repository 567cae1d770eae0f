"""The fused integer executor (chains of elementwise ops in one pass, pads taken by convolutions) gives
exactly the integers of the node-by-node reference, which is checked against quant_math by hand."""
import numpy as np
import pytest

from mrt_core import quant_math as qm
from mrt_core.int_exec import run_int
from mrt_core.int_kernels import ADD, CLIP, LEFT_SHIFT, MUL, RELU, RIGHT_SHIFT, Chain
from mrt_core.qconfig import QuantConfig
from mrt_core.session import Session
from conftest import sample_ini


@pytest.mark.parametrize("source_dtype", [np.int32, np.float32, np.float64])
def test_right_shift_exhaustive_against_the_contract(source_dtype):
    x = np.arange(-2 ** 11, 2 ** 11 + 1).reshape(1, 1, -1)
    for s in range(0, 14):
        chain = Chain(x.astype(source_dtype))
        chain.add(RIGHT_SHIFT, s, qm.int_range(8))
        want = qm.right_shift_round(x, s, 8)
        assert np.array_equal(chain.run(np.int32), want), s


def test_steps_by_hand_per_channel_and_per_sample_rows():
    # two samples, three channels, rows of 40 (one row per sample and channel) and of 1 (one per sample)
    rng = np.random.RandomState(0)
    for length in (40, 1):
        x = rng.randint(-3000, 3000, (2, 3, length))
        bias = np.array([5, -7, 100]).reshape(1, 3, 1)
        frac = np.array([3, 1, 7]).reshape(1, 3, 1)
        chain = Chain(x.astype(np.float32))
        chain.add(ADD, const=bias)
        chain.add(RELU)
        chain.add(MUL, const=frac)
        chain.add(RIGHT_SHIFT, 4, qm.int_range(10))
        chain.add(CLIP, -3, 250)
        want = np.clip(qm.right_shift_round(np.maximum(x + bias, 0) * frac, 4, 10), -3, 250)
        got = chain.run(np.float32)
        assert got.dtype == np.float32 and np.array_equal(got, want), length


def test_left_shift_clips_values_past_int32():
    x = np.array([[[2 ** 30 - 1, -2 ** 30, 5]]])
    chain = Chain(x.astype(np.int32))
    chain.add(LEFT_SHIFT, 3, qm.int_range(32))
    assert np.array_equal(chain.run(np.int32), qm.left_shift(x, 3, 32))


def test_chain_accepts_only_scalar_or_per_channel_constants():
    chain = Chain(np.zeros((2, 3, 4, 4), np.int32))
    assert chain.accepts(None) and chain.accepts(np.array([7]))
    assert chain.accepts(np.zeros((1, 3, 1, 1))) and chain.accepts(np.zeros((3, 1, 1)))
    assert not chain.accepts(np.zeros((1, 3, 4, 4))) and not chain.accepts(np.zeros((1, 2, 1, 1)))


def _configs(session):
    convs = [n.name for n in session.original.op_nodes() if n.op in ("Convolution", "FullyConnected")]
    first, last = convs[0], convs[-1]
    affine = QuantConfig()
    for n in session.original.op_nodes():
        if n.op in ("relu", "Activation", "Pooling", "pad"):
            affine = affine.with_node(n.name, quant_type="UniformAffine")
    return {
        "default": QuantConfig(),
        "channel-wise": QuantConfig().with_node(first, granularity="channel-wise", step=2)
        .with_node(last, granularity="channel-wise", step=3),
        "per-channel weights": QuantConfig().with_node(first, granularity="output-channel-wise"),
        "affine activations": affine,
        "restored": QuantConfig().with_node(first, restore=True).with_node(last, restore=True),
    }


@pytest.mark.parametrize("name", ["lenet", "resnet", "digits_mlp"])
def test_fused_equals_node_by_node_on_samples(name):
    session, run = Session.from_ini(sample_ini(name))
    x = session.dataset.x_test[:16]
    for label, cfg in _configs(session).items():
        model = session.quantize(cfg)
        for keep in ("all", "outputs"):
            ref = run_int(model, {session.input_name: x}, keep=keep, strict=True)
            got = run_int(model, {session.input_name: x}, keep=keep)
            assert set(got) == set(ref)
            bad = [n for n in ref if got[n].dtype != ref[n].dtype or not np.array_equal(got[n], ref[n])]
            assert not bad, (name, label, keep, bad[:3])


def test_fused_with_cache_and_overrides_matches_reference():
    session, run = Session.from_ini(sample_ini("resnet"))
    model = session.quantize(run.quant_config)
    x = session.dataset.x_test[:8]
    ref = run_int(model, {session.input_name: x}, keep="all", strict=True)
    mid = [n for n in model.graph.nodes if n.endswith("requant.shift")][2]
    # a value given from outside (as the local-error diagnosis does) is used as is
    got = run_int(model, {}, keep="outputs", overrides={mid: ref[mid]} | {
        n: ref[n] for n in model.graph.nodes if n not in model.graph.descendants(mid) and n != mid
        and any(u in model.graph.descendants(mid) for u in model.graph.consumers()[n])})
    out = model.graph.outputs[0]
    assert np.array_equal(got[out], ref[out])


def test_keeps_zero_says_which_steps_map_zero_to_zero():
    from mrt_core.int_kernels import keeps_zero
    cases = [(ADD, 0, 0, np.array([3])), (ADD, 0, 0, np.array([0])), (MUL, 0, 0, np.array([5])), (RELU, 0, 0, None),
             (RIGHT_SHIFT, 3, 127, None), (LEFT_SHIFT, 2, 127, None), (CLIP, 1, 9, None), (CLIP, -4, 9, None)]
    for code, a, b, const in cases:
        chain = Chain(np.zeros((1, 1, 4), np.int32))
        chain.add(code, a, b, const)
        maps_to_zero = not np.any(chain.run(np.int32))
        assert keeps_zero(code, a, b, const) == maps_to_zero, (code, a, b, const)


def test_wide_linear_runs_in_float32_only_when_its_weights_keep_every_partial_sum_exact():
    from mrt_core.calibrate import calibrate
    from mrt_core.graph import Graph, Node
    from mrt_core.int_exec import _mx_dtype
    from mrt_core.quantize import quantize

    def model_for(w):
        nodes = [Node("data", "null"), Node("w", "null"),
                 Node("fc", "FullyConnected", ["data", "w"], {"num_hidden": w.shape[0], "no_bias": True})]
        g = Graph(nodes, {"w": w}, ["fc"])
        g.input_shapes = {"data": (-1, w.shape[1])}
        x = np.ones((1, w.shape[1]), np.float32)
        return quantize(g, calibrate(g, x, 1, 1)), x

    k = 1152  # bits(1152) + 8 + 8 = 27: the precision bound alone (2^25) would need float64
    small = np.full((2, k), 0.05, np.float32)
    small[:, 0] = 1.0  # one large weight per row: quantized, the rest are 6 or 7, sum|w| * 127 < 2^24
    model, x = model_for(small)
    node = model.graph.nodes[model.values["fc"].name]
    assert model.precision[node.name] == 27 and _mx_dtype(node, model) == "float32"
    wq = model.graph.params[node.inputs[1]].astype(np.int64)
    xq = np.where(wq[:1] >= 0, 127, -127)  # the worst case: every product at its largest, one sign
    want = xq @ wq.T  # exact, in int64
    assert np.abs(want).max() < 2 ** 24
    got = run_int(model, {"data": (xq / model.input_scales["data"]).astype(np.float32)})[node.name]
    assert np.array_equal(got, want)

    big = np.ones((2, k), np.float32)  # sum|w| * 127 = 1152 * 127 * 127 > 2^24: float64
    model, _ = model_for(big)
    node = model.graph.nodes[model.values["fc"].name]
    assert _mx_dtype(node, model) == "float64"


def test_incremental_evaluate_equals_a_fresh_one():
    """Reruns start from the previous run's checkpoints and reuse unchanged layers' statistics; every
    figure must be what a session without that history computes."""
    session, run = Session.from_ini(sample_ini("resnet"))
    fresh, _ = Session.from_ini(sample_ini("resnet"))
    session.eval_num = fresh.eval_num = 3  # 300 images: enough for every path, and quick
    nodes = [n.name for n in session.original.op_nodes()]
    convs = [n.name for n in session.original.op_nodes() if n.op == "Convolution"]
    cfg = QuantConfig()
    steps = [cfg, cfg.with_node(convs[3], granularity="output-channel-wise"),
             cfg.with_node(convs[3], granularity="output-channel-wise").with_node(nodes[-1], restore=True),
             cfg.with_node(convs[0], quant_type="UniformAffine"), cfg]
    for c in steps:
        got = session.evaluate(session.quantize(c))
        fresh._int_cache, fresh._stats_cache = {}, {}
        want = fresh.evaluate(fresh.quantize(c))
        assert (got.quant_top1, got.quant_top5, got.fidelity) == (want.quant_top1, want.quant_top5, want.fidelity)
        assert [(r.name, r.sqnr_db, r.cosine, r.max_abs) for r in got.layers] == \
            [(r.name, r.sqnr_db, r.cosine, r.max_abs) for r in want.layers]


def test_a_rerun_that_computes_nothing_keeps_the_checkpoints():
    session, run = Session.from_ini(sample_ini("lenet"))
    session.eval_num = 2
    model = session.quantize(QuantConfig())
    session.evaluate(model)
    held = dict(session._int_cache)
    assert held
    session.evaluate(session.quantize(QuantConfig()))  # same fingerprints: nothing to compute
    assert session._int_cache.keys() == held.keys()


def test_channel_right_shift_matches_the_contract_per_channel_in_both_row_layouts():
    from mrt_core.int_kernels import CHANNEL_RIGHT_SHIFT
    shifts = np.array([1, 4, 9, 32]).reshape(1, 4, 1)
    for length in (64, 1):
        x = (np.arange(2 * 4 * length) * 7919 % 8191 - 4095).reshape(2, 4, length) * 977
        chain = Chain(x.astype(np.int32))
        chain.add(CHANNEL_RIGHT_SHIFT, 0, qm.int_range(16), shifts)
        want = np.stack([qm.right_shift_round(x[:, i], int(s), 16) for i, s in enumerate(shifts.ravel())], axis=1)
        assert np.array_equal(chain.run(np.int32), want), length


POOLS = [  # (pool_type, attrs): windows, strides, pads and both conventions MXNet sizes outputs by
    ("max", dict(kernel=(2, 2), stride=(2, 2))), ("sum", dict(kernel=(2, 2), stride=(2, 2))),
    ("max", dict(kernel=(3, 3), stride=(1, 1))), ("sum", dict(kernel=(3, 2), stride=(2, 1), pad=(1, 1))),
    ("sum", dict(kernel=(3, 3), stride=(2, 2), pooling_convention="full")),
    ("max", dict(kernel=(3, 3), stride=(2, 2), pooling_convention="full")),
    ("max", dict(kernel=(2, 2), stride=(2, 2))), ("sum", dict(kernel=(1, 1), global_pool=True)),
    ("max", dict(kernel=(1, 1), global_pool=True)),
]


@pytest.mark.parametrize("pool_type,attrs", POOLS)
def test_integer_pool_kernel_equals_mxnet_float64(pool_type, attrs):
    import types

    import mxnet as mx

    from mrt_core.graph import Graph, Node
    from mrt_core.int_exec import _make_pool_window
    from mrt_core.int_kernels import pool
    node = Node("p", "Pooling", ["x"], {"pool_type": pool_type, **attrs})
    model = types.SimpleNamespace(float_nodes=set(), graph=Graph([Node("x", "null"), node], {}, ["p"]))
    window = _make_pool_window(node, model)
    assert window is not None
    rng = np.random.RandomState(3)
    for hw in ((7, 7), (8, 6), (14, 14)):
        x = rng.randint(-2 ** 20, 2 ** 20, (3, 5, *hw)).astype(np.int32)
        want = mx.nd.Pooling(mx.nd.array(x, dtype="float64"), pool_type=pool_type, **attrs).asnumpy()
        got = pool(x, *window(x.shape))
        assert got.dtype == np.int32 and np.array_equal(got, want), hw
    assert window((3, 5, 7)) is None  # not NCHW: MXNet pools it


def test_non_negative_values_are_found_by_construction():
    import types

    from mrt_core.graph import Graph, Node
    from mrt_core.int_exec import _non_negative
    nodes = [Node("x", "null"), Node("b", "null"), Node("n", "null"),
             Node("r", "relu", ["x"]), Node("s", "cvm_right_shift", ["r"], {"shift_bit": 2, "precision": 8}),
             Node("add_pos", "broadcast_add", ["s", "b"]), Node("add_neg", "broadcast_add", ["s", "n"]),
             Node("pad", "pad", ["add_pos"], {"mode": "constant", "pad_width": (0,) * 8, "constant_value": 0}),
             Node("cat", "Concat", ["pad", "s"], {"dim": 1}), Node("cat_neg", "Concat", ["cat", "add_neg"], {"dim": 1}),
             Node("clip", "clip", ["x"], {"a_min": 0, "a_max": 9}), Node("raw", "clip", ["x"], {"a_min": -1, "a_max": 9}),
             Node("clip_r", "clip", ["r"], {"a_min": -1, "a_max": 9}),
             Node("below", "clip", ["r"], {"a_min": -5, "a_max": -1})]  # a relu'd value clipped to -1
    graph = Graph(nodes, {"b": np.array([3.0]), "n": np.array([-1.0])}, ["cat_neg", "clip", "raw", "clip_r", "below"])
    model = types.SimpleNamespace(float_nodes=set(), graph=graph, exec_cache={})
    assert _non_negative(model) == {"r", "s", "add_pos", "pad", "cat", "clip", "clip_r"}


def _int8_convs(model):
    from mrt_core.int_exec import _takes_int8
    return [n.name for n in model.graph.op_nodes() if _takes_int8(model, n)]


def test_int8_convolutions_only_where_every_sum_stays_below_2_to_the_24():
    """oneDNN passes its int32 sums through float32: 130 x 5 x 5 products of 127 x 127 (52,419,250) came back
    as 52,419,248. Such a convolution runs in float64 instead, exactly."""
    import mxnet as mx

    from mrt_core.calibrate import calibrate
    from mrt_core.mxnet_io import graph_from_json
    from mrt_core.prepare import prepare
    from mrt_core.quantize import quantize
    d = mx.sym.var("data")
    r0 = mx.sym.relu(mx.sym.Convolution(d, kernel=(1, 1), num_filter=130, no_bias=True, name="c0"), name="r0")
    out = mx.sym.Convolution(r0, kernel=(5, 5), num_filter=2, no_bias=True, name="c1")
    params = {"c0_weight": np.ones((130, 1, 1, 1), np.float32), "c1_weight": np.ones((2, 130, 5, 5), np.float32)}
    g = graph_from_json(out.tojson(), params)
    g.input_shapes = {"data": (-1, 1, 5, 5)}
    g = prepare(g)
    x = np.ones((1, 1, 5, 5), np.float32)
    model = quantize(g, calibrate(g, x, 1, 1))
    assert _int8_convs(model) == []
    got = run_int(model, {"data": x}, keep="outputs")[model.graph.outputs[0]]
    assert np.all(got == 130 * 25 * 127 * 127)


def test_the_reference_right_shift_by_one_does_not_wrap_at_the_int32_bound():
    from mrt_core.graph import Node
    from mrt_core.int_exec import _right_shift
    node = Node("s", "cvm_right_shift", ["x"], {"shift_bit": 1, "precision": 32})
    x = np.array([2 ** 31 - 1, -2 ** 31 + 1, 5, -7], np.int32)
    got = _right_shift(node, x)
    assert got.dtype == np.int32 and got.tolist() == qm.right_shift_round(x.astype(np.int64), 1, 32).tolist()


def test_int8_convolutions_take_non_negative_8_bit_data_and_give_the_reference_integers():
    from mrt_core.int_exec import _int8_convolution_is_exact
    if not _int8_convolution_is_exact():
        pytest.skip("this MXNet build or CPU has no exact int8 convolution; the float path runs instead")
    session, run = Session.from_ini(sample_ini("resnet"))
    model = session.quantize(run.quant_config)
    int8 = _int8_convs(model)
    first = model.graph.nodes[int8[0]] if int8 else None
    assert len(int8) >= 4 and all(model.precision[model.graph.nodes[n].inputs[0]] <= 8 for n in int8)
    # the first conv reads the signed input and the depthwise one has groups: both stay in float
    assert not any(model.graph.nodes[n].inputs[0] == session.input_name for n in int8)
    # a value given from outside may be negative: that run falls back to the exact float path
    x = session.dataset.x_test[:4]
    ref = run_int(model, {session.input_name: x}, keep="all", strict=True)
    data = first.inputs[0]
    given = {data: ref[data] - 3}
    given.update({n: ref[n] for n in model.graph.nodes if n != data and n not in model.graph.descendants(data)
                  and model.graph.nodes[n].op != "null"})
    want = run_int(model, {}, keep=[first.name], overrides=given, strict=True)[first.name]
    got = run_int(model, {}, keep=[first.name], overrides=given)[first.name]
    assert np.array_equal(got, want) and given[data].min() < 0


def test_an_inexact_int8_convolution_is_never_used(monkeypatch):
    import mxnet as mx

    from mrt_core import int_exec
    real = mx.nd.contrib.quantized_conv

    def saturating(*args, **kwargs):  # what pairs of products summed in int16 would give
        out, lo, hi = real(*args, **kwargs)
        return mx.nd.array(np.clip(out.asnumpy(), -2 ** 15, 2 ** 15 - 1), dtype="int32"), lo, hi
    monkeypatch.setattr(mx.nd.contrib, "quantized_conv", saturating)
    int_exec._int8_convolution_is_exact.cache_clear()
    try:
        assert not int_exec._int8_convolution_is_exact()
        session, run = Session.from_ini(sample_ini("lenet"))
        assert _int8_convs(session.quantize(run.quant_config)) == []
    finally:
        int_exec._int8_convolution_is_exact.cache_clear()


def test_error_statistics_equal_float64_sums_by_numpy():
    from mrt_core.session import ErrorStats
    rng = np.random.RandomState(5)
    ref = rng.randn(3, 7, 1001).astype(np.float32)
    got = (ref + rng.randn(*ref.shape) * 0.1).astype(np.float32)
    r, g = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    st = ErrorStats().add(ref[:2], got[:2]).merge(ErrorStats().add(ref[2:], got[2:]))  # in two batches
    assert st.sqnr_db == pytest.approx(10 * np.log10((r @ r) / ((r - g) @ (r - g))), rel=1e-12)
    assert st.cosine == pytest.approx((r @ g) / np.sqrt((r @ r) * (g @ g)), rel=1e-12)
    assert st.max_abs == np.abs(r - g).max()
    same = ErrorStats().add(ref, ref)
    assert same.sqnr_db == float("inf") and same.cosine == pytest.approx(1.0) and same.max_abs == 0.0
    assert ErrorStats().add(np.zeros(5, np.float32), np.zeros(5, np.float32)).cosine == 1.0
    # a quantized value dequantized on the fly: the same sums as from numpy's dequantized float32 value
    for dtype in (np.int8, np.int16, np.int32):
        q = rng.randint(-127, 128, ref.shape).astype(dtype)
        deq = np.multiply(q, np.float32(1 / 37.5), dtype=np.float32) + np.float32(0.25)
        a, b = ErrorStats().add(ref, q, 37.5, 0.25), ErrorStats().add(ref, deq)
        assert (a.signal, a.noise, a.dot, a.got_sq, a.max_abs) == (b.signal, b.noise, b.dot, b.got_sq, b.max_abs)


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(channels=st.integers(8, 20), kernel=st.sampled_from([1, 3]), stride=st.integers(1, 2),
       dilate=st.integers(1, 2), pad=st.integers(0, 2), pool=st.sampled_from(["max", "avg", "global"]),
       pool_k=st.integers(2, 3), convention=st.sampled_from(["valid", "full"]),
       gran=st.sampled_from(["layer-wise", "output-channel-wise", "channel-wise"]),
       affine=st.booleans(), seed=st.integers(0, 10_000))
def test_property_fused_equals_reference_on_random_conv_nets(channels, kernel, stride, dilate, pad, pool, pool_k,
                                                            convention, gran, affine, seed):
    """conv -> relu -> conv (int8 where its data allows) -> relu -> pool (integer kernels) -> dense (BLAS):
    every value of the fast path is the reference's."""
    import mxnet as mx

    from mrt_core.calibrate import calibrate
    from mrt_core.mxnet_io import graph_from_json
    from mrt_core.prepare import prepare
    from mrt_core.quantize import quantize
    rng = np.random.RandomState(seed)
    d = mx.sym.var("data")
    c0 = mx.sym.Convolution(d, kernel=(3, 3), pad=(1, 1), num_filter=channels, name="c0")
    r0 = mx.sym.relu(c0, name="r0")
    c1 = mx.sym.Convolution(r0, kernel=(kernel, kernel), stride=(stride, stride), dilate=(dilate, dilate),
                            pad=(pad, pad), num_filter=12, name="c1")
    r1 = mx.sym.relu(c1, name="r1")
    if pool == "global":
        p = mx.sym.Pooling(r1, kernel=(1, 1), global_pool=True, pool_type="avg", name="p")
    else:
        p = mx.sym.Pooling(r1, kernel=(pool_k, pool_k), stride=(2, 2), pool_type=pool,
                           pooling_convention=convention, name="p")
    out = mx.sym.FullyConnected(mx.sym.flatten(p), num_hidden=5, name="fc")
    shape = (6, 3, 11, 11)
    shapes = dict(zip(out.list_arguments(), out.infer_shape(data=shape)[0]))
    params = {k: rng.randn(*v).astype(np.float32) for k, v in shapes.items() if k != "data"}
    g = graph_from_json(out.tojson(), params)
    g.input_shapes = {"data": (-1,) + shape[1:]}
    g = prepare(g)
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    cfg = QuantConfig().with_node("c1", granularity=gran, step=4)
    if affine:
        cfg = cfg.with_node("r0", quant_type="UniformAffine")
    model = quantize(g, calibrate(g, x, 6, 1), cfg)
    ref = run_int(model, {"data": x}, keep="all", strict=True)
    got = run_int(model, {"data": x}, keep="all")
    bad = [n for n in ref if got[n].dtype != ref[n].dtype or not np.array_equal(got[n], ref[n])]
    assert not bad, bad[:3]
    from mrt_core.int_exec import _int8_convolution_is_exact
    if gran == "layer-wise" and not affine and _int8_convolution_is_exact():
        assert _int8_convs(model)  # c1 reads relu'd 8-bit data: the int8 path is the one compared here


def test_a_global_pool_of_a_3d_value_runs_in_mxnet_and_gives_the_reference():
    import mxnet as mx

    from mrt_core.calibrate import calibrate
    from mrt_core.mxnet_io import graph_from_json
    from mrt_core.prepare import prepare
    from mrt_core.quantize import quantize
    d = mx.sym.var("data")
    out = mx.sym.Pooling(mx.sym.relu(d, name="r"), kernel=(1,), global_pool=True, pool_type="max", name="p")
    g = graph_from_json(out.tojson(), {})
    g.input_shapes = {"data": (-1, 4, 9)}
    g = prepare(g)
    x = np.random.RandomState(2).uniform(-1, 1, (5, 4, 9)).astype(np.float32)
    model = quantize(g, calibrate(g, x, 5, 1))
    ref = run_int(model, {"data": x}, keep="all", strict=True)
    got = run_int(model, {"data": x}, keep="all")
    assert all(np.array_equal(got[n], ref[n]) for n in ref)
    assert ref[model.graph.outputs[0]].shape == (5, 4, 1)


def _quantized(sym, shape, params=None, cfg=None, seed=0, low=-1.0, high=1.0):
    import mxnet as mx  # noqa: F401

    from mrt_core.calibrate import calibrate
    from mrt_core.mxnet_io import graph_from_json
    from mrt_core.prepare import prepare
    from mrt_core.quantize import quantize
    rng = np.random.RandomState(seed)
    shapes = dict(zip(sym.list_arguments(), sym.infer_shape(data=shape)[0]))
    params = params or {k: rng.randn(*v).astype(np.float32) for k, v in shapes.items() if k != "data"}
    g = graph_from_json(sym.tojson(), params)
    g.input_shapes = {"data": (-1,) + shape[1:]}
    g = prepare(g)
    x = rng.uniform(low, high, shape).astype(np.float32)
    return quantize(g, calibrate(g, x, shape[0], 1), cfg or QuantConfig()), x, g


def test_clips_whose_bounds_lie_outside_the_input_range_keep_exact_values_and_precisions():
    import mxnet as mx
    d = mx.sym.var("data")
    conv = mx.sym.Convolution(d, kernel=(1, 1), num_filter=8, no_bias=True, name="c")
    for lo, hi in ((2.0, 3.0), (-1e9, 0.5), (0.0, 1e30)):  # above the range, far below, far above
        out = mx.sym.clip(mx.sym.relu(conv, name="r") if lo > 0 else conv, lo, hi, name="cl")
        model, x, g = _quantized(out, (4, 3, 5, 5))
        node = model.graph.nodes[model.values["cl"].name]
        assert abs(float(node.attr("a_min"))) < 2 ** 31 and abs(float(node.attr("a_max"))) < 2 ** 31
        ref = run_int(model, {"data": x}, keep="all", strict=True)  # the checker runs on every value here
        got = run_int(model, {"data": x}, keep="all")
        assert all(got[n].dtype == ref[n].dtype and np.array_equal(got[n], ref[n]) for n in ref), (lo, hi)
        from mrt_core.float_exec import run_float
        want = run_float(g, {"data": x})[g.outputs[0]].asnumpy()
        deq = ref[node.name] / model.values["cl"].scale
        assert np.allclose(deq, want, atol=0.05 * max(np.abs(want).max(), 1e-3)), (lo, hi)


def test_values_given_from_outside_are_int32_and_must_be_integers():
    from mrt_core.errors import ModelError
    session, run = Session.from_ini(sample_ini("lenet"))
    model = session.quantize(run.quant_config)
    x = session.dataset.x_test[:2]
    ref = run_int(model, {session.input_name: x}, keep="all", strict=True)
    mid = next(n for n in model.graph.nodes if n.endswith("requant.shift"))
    given = {n: ref[n] for n in model.graph.nodes if model.graph.nodes[n].op != "null" and n != mid
             and n not in model.graph.descendants(mid)}
    out = model.graph.outputs[0]
    for as_type in (np.int64, np.float64):
        for strict in (True, False):
            got = run_int(model, {}, keep=[out], overrides={**given, mid: ref[mid].astype(as_type)}, strict=strict)
            assert got[out].dtype == np.int32 and np.array_equal(got[out], ref[out])
    with pytest.raises(ModelError, match=mid.replace(".", r"\.")):
        run_int(model, {}, keep=[out], overrides={**given, mid: ref[mid] + 0.5})


def test_a_max_pool_with_windows_outside_the_input_is_a_named_error():
    import mxnet as mx

    from mrt_core.errors import QuantizeError
    out = mx.sym.Pooling(mx.sym.var("data"), kernel=(1, 1), stride=(3, 3), pool_type="max",
                         pooling_convention="full", name="p")
    with pytest.raises(QuantizeError, match="'p'.*wholly outside"):
        _quantized(out, (2, 3, 5, 5))
