"""The integer contract's arithmetic, against values worked out by hand."""
import numpy as np
import pytest

from mrt_core import quant_math as qm


def test_precision_of_numbers():
    assert qm.precision_of(127) == 8
    assert qm.precision_of(128) == 9
    assert qm.precision_of(0) == 1
    assert qm.precision_of(1) == 2
    assert qm.bit_length(800) == 10


def test_symmetric_scale_round_and_clip():
    assert qm.symmetric_scale(2.0, 8) == pytest.approx(63.5)
    # 0.5 * 63.5 = 31.75 -> 32; -1.99 * 63.5 = -126.365 -> -126; 3.0 would be 190.5 -> clipped to 127
    assert qm.quantize_symmetric([0.5, -1.99, 3.0, -3.0], 63.5, 8).tolist() == [32, -126, 127, -127]
    # halves round away from zero, not to even
    assert qm.round_half_away([0.5, 1.5, 2.5, -0.5, -2.5]).tolist() == [1, 2, 3, -1, -3]


def test_zero_range_tensor_gets_scale_one_and_no_nan():
    assert qm.symmetric_scale(0.0, 8) == 1.0
    assert qm.affine_scale(3.0, 3.0, 8) == 1.0
    q = qm.quantize_symmetric(np.zeros(4), qm.symmetric_scale(0.0, 8), 8)
    assert np.all(q == 0) and not np.isnan(q).any()


def test_cvm_float_by_hand():
    # 0.75 = 3 * 2^-2 whatever the budget (trailing zero bits are stripped)
    assert qm.cvm_float(0.75, 8) == (3, -2)
    # 1/3 with 4 bits: 1/3 * 2^5 = 10.67 -> 11, so 11 * 2^-5 = 0.34375
    assert qm.cvm_float(1 / 3, 4) == (11, -5)
    # a ratio above one: 5 = 5 * 2^0
    assert qm.cvm_float(5.0, 10) == (5, 0)
    # rounding that carries: 0.9999 with 4 bits: 15.998 -> 16 does not fit, becomes 1 * 2^0
    assert qm.cvm_float(0.9999, 4) == (1, 0)
    for ratio in [1e-6, 0.013, 0.77, 3.3, 1234.5]:
        for budget in [4, 12, 24]:
            frac, exp = qm.cvm_float(ratio, budget)
            assert 1 <= frac < 2 ** budget
            assert abs(frac * 2.0 ** exp / ratio - 1) <= 2.0 ** -(budget - 1)


def test_right_shift_rounds_half_up():
    x = np.array([5, 6, 7, -5, -6, -7, 4, -4, 2, -2, 1000, -1000])
    # shift 2: 5/4=1.25->1, 6/4=1.5->2 (half up), 7/4=1.75->2, -5/4=-1.25->-1, -6/4=-1.5->-1 (half up),
    # -7/4=-1.75->-2, 4->1, -4->-1, 2/4=0.5->1, -2/4=-0.5->0, 250 and -250 clip to +-127
    assert qm.right_shift_round(x, 2, 8).tolist() == [1, 2, 2, -1, -1, -2, 1, -1, 1, 0, 127, -127]
    assert qm.right_shift_round(np.array([3, -3, 300]), 0, 8).tolist() == [3, -3, 127]
    assert qm.left_shift(np.array([3, -3, 100]), 2, 8).tolist() == [12, -12, 127]


def test_right_shift_matches_exhaustive_definition():
    x = np.arange(-600, 601)
    for s in range(1, 6):
        want = [np.clip((xi // 2 ** (s - 1) + 1) // 2, -127, 127) for xi in x]
        assert qm.right_shift_round(x, s, 8).tolist() == want


def test_int_executor_shift_equals_contract():
    from mrt_core.graph import Node
    from mrt_core.int_exec import UNARY
    x = np.arange(-3000, 3001, dtype=np.int32)
    for s in (1, 3, 7):
        node = Node("n", "cvm_right_shift", [], {"shift_bit": s, "precision": 8})
        assert UNARY["cvm_right_shift"](node, x).tolist() == qm.right_shift_round(x, s, 8).tolist()
