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
