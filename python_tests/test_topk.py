"""ops.topk and ops.topk_merge against their twins in neurocore.reference.

Selection does no arithmetic, so every dtype must match the reference exactly, values and indices:
equal values are ordered by the lower row index on every device.
"""

from __future__ import annotations

import pytest
import torch

import neurocore
from neurocore import ops, reference

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]

# (N rows, K columns, k): k < N, k > N, k == N, one column, one row, a tall matrix (the CPU kernel
# splits rows over threads and merges), more columns than one CPU column block (512).
SHAPES = [
    pytest.param(50, 7, 5, id="N50-K7-k5"),
    pytest.param(13, 3, 20, id="k>N"),
    pytest.param(7, 4, 7, id="k==N"),
    pytest.param(40, 1, 1, id="K1-k1"),
    pytest.param(1, 5, 3, id="N1"),
    pytest.param(2000, 3, 5, id="tall-row-split"),
    pytest.param(30, 600, 4, id="wide-K600"),
]


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def activations(n: int, k: int, dtype: torch.dtype, seed: int, kind: str = "normal") -> torch.Tensor:
    """Seeded [n, k] data; ``kind="ties"`` draws integers in [-3, 3], so nearly every value repeats."""
    g = generator(seed)
    if kind == "ties":
        x = torch.randint(-3, 4, (n, k), generator=g).double()
    else:
        x = torch.randn(n, k, generator=g, dtype=torch.float64)
    return x.to(dtype)


def assert_same_topk(actual, expected):
    values, indices = actual
    exp_values, exp_indices = expected
    assert values.dtype == exp_values.dtype
    assert indices.dtype == torch.int64
    assert values.shape == exp_values.shape and indices.shape == exp_indices.shape
    assert torch.equal(values.cpu(), exp_values.cpu()), "values differ from the reference"
    assert torch.equal(indices.cpu(), exp_indices.cpu()), "indices differ from the reference (tie-break?)"


# ----------------------------------------------------------------------------------------------
# topk against the reference


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("n, K, k", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_topk_matches_reference(device, dtype, n, K, k, kind):
    x = activations(n, K, dtype, seed=n * 1000 + K + k, kind=kind)
    out = ops.topk(x.to(device), k)
    assert out[0].device.type == device and out[1].device.type == device
    assert out[0].shape == (min(k, n), K)
    assert_same_topk(out, reference.topk(x, k))


def test_topk_docstring_example(device):
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0], [2.0, 0.0]], device=device)
    values, indices = ops.topk(x, 2)
    assert values.tolist() == [[3.0, 5.0], [2.0, 5.0]]
    assert indices.tolist() == [[1, 0], [2, 1]]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_topk_ties_broken_by_lower_row(device, dtype):
    # column 0: all equal; column 1: the value 2 at rows 1, 4, 6; column 2: ties below the top value
    x = torch.tensor(
        [[1, 0, 9], [1, 2, 5], [1, 1, 5], [1, 0, 5], [1, 2, 0], [1, 0, 5], [1, 2, 9]], dtype=dtype, device=device
    )
    values, indices = ops.topk(x, 4)
    assert indices[:, 0].tolist() == [0, 1, 2, 3]
    assert indices[:, 1].tolist() == [1, 4, 6, 2]
    assert indices[:, 2].tolist() == [0, 6, 1, 2]
    assert values[:, 2].tolist() == [9, 9, 5, 5]


@pytest.mark.parametrize(
    "n, K, k",
    [
        pytest.param(0, 3, 2, id="N0"),
        pytest.param(5, 0, 2, id="K0"),
        pytest.param(5, 3, 0, id="k0"),
        pytest.param(0, 0, 0, id="all0"),
    ],
)
def test_topk_empty(device, n, K, k):
    x = torch.zeros(n, K, device=device)
    values, indices = ops.topk(x, k)
    assert values.shape == (min(k, n), K) and indices.shape == (min(k, n), K)
    assert values.dtype == torch.float32 and indices.dtype == torch.int64
    assert values.device.type == device
    assert_same_topk((values, indices), reference.topk(x.cpu(), k))


def test_topk_huge_k_keeps_all_rows(device):
    x = activations(9, 4, torch.float32, seed=15, kind="ties")
    assert_same_topk(ops.topk(x.to(device), 2**40), reference.topk(x, 9))


@pytest.mark.parametrize("layout", ["transposed", "strided-rows", "strided-cols"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_topk_non_contiguous(device, dtype, layout):
    base = activations(40, 30, dtype, seed=7, kind="ties").to(device)
    x = {"transposed": base.T, "strided-rows": base[::3], "strided-cols": base[:, 1::2]}[layout]
    assert not x.is_contiguous()
    k = 6
    assert_same_topk(ops.topk(x, k), reference.topk(x.cpu().contiguous(), k))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_topk_infinities(device, dtype):
    inf = float("inf")
    x = activations(20, 4, dtype, seed=3, kind="ties")
    x[:, 0] = -inf  # a column of -inf only: rows in order
    x[::2, 1] = -inf  # fewer finite values than k
    x[1::2, 1] = -inf
    x[3, 1] = 1.0
    x[[2, 9, 15], 2] = inf
    x[[4, 5], 3] = -inf
    k = 8
    values, indices = ops.topk(x.to(device), k)
    assert_same_topk((values, indices), reference.topk(x, k))
    assert indices[:, 0].tolist() == list(range(k))
    assert indices[:3, 2].tolist() == [2, 9, 15]
    assert indices[0, 1].item() == 3 and indices[1:, 1].tolist() == [0, 1, 2, 4, 5, 6, 7]


@pytest.mark.parametrize("n", [60, 3000], ids=["small", "tall"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_topk_mostly_minus_inf(device, dtype, n):
    # fewer finite values than k in most row ranges: -inf rows still rank by index, and before
    # nothing (the kernel's empty heap slots never reach the output)
    x = torch.full((n, 3), float("-inf"), dtype=dtype)
    g = generator(12)
    rows = torch.randperm(n, generator=g)[:4]
    x[rows, 0] = torch.randn(4, generator=g).to(dtype)
    x[rows[:2], 2] = float("inf")
    for k in (1, 7, 40):
        assert_same_topk(ops.topk(x.to(device), k), reference.topk(x, k))


@pytest.mark.parametrize("k", [1, 3, 50])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("n, K, col", [(40, 3, 1), (3000, 2, 1), (30, 600, 550)], ids=["small", "tall", "wide"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_topk_nan_raises(device, dtype, n, K, col, where, k):
    x = activations(n, K, dtype, seed=11)
    row = {"first": 0, "middle": n // 2 - 3, "last": n - 1}[where]
    x[row, col] = float("nan")
    with pytest.raises(RuntimeError, match="NaN"):
        ops.topk(x.to(device), k)


def test_topk_nan_raises_even_for_k0(device):
    # The contract ("NaN is an error") has no exception for k = 0, where the output is empty.
    x = torch.tensor([[1.0, float("nan")], [0.0, 1.0]], device=device)
    with pytest.raises(RuntimeError, match="NaN"):
        ops.topk(x, 0)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), ()], ids=["1-D", "3-D", "0-D"])
def test_topk_wrong_dim_names_x(device, shape):
    with pytest.raises(RuntimeError, match=r"x must be a 2-D tensor"):
        ops.topk(torch.zeros(shape, device=device), 1)


def test_topk_integer_input_rejected(device):
    with pytest.raises(RuntimeError, match=r"x must be floating point"):
        ops.topk(torch.zeros(4, 2, dtype=torch.int64, device=device), 1)


def test_topk_negative_k_rejected(device):
    with pytest.raises(RuntimeError, match=r"k must be >= 0"):
        ops.topk(torch.zeros(4, 2, device=device), -1)


def test_topk_not_a_tensor():
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        ops.topk([[1.0, 2.0]], 1)


def test_topk_does_not_mutate_input(device):
    x = activations(30, 5, torch.float32, seed=5).to(device)
    before = x.clone()
    ops.topk(x, 4)
    assert torch.equal(x, before)


# ----------------------------------------------------------------------------------------------
# topk_merge


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("k", [1, 3, 8, 30], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_topk_merge_matches_reference(device, dtype, k, kind):
    x = activations(25, 6, dtype, seed=100 + k, kind=kind)
    split = 11
    va, ia = ops.topk(x[:split].to(device), 5)
    vb, ib = ops.topk(x[split:].to(device), 7)
    ib = ib + split
    out = ops.topk_merge(va, ia, vb, ib, k=k)
    expected = reference.topk_merge(va.cpu(), ia.cpu(), vb.cpu(), ib.cpu(), k=k)
    assert out[0].shape == (min(k, 12), 6)
    assert_same_topk(out, expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
def test_topk_merge_long_parts(device, dtype):
    # parts much longer than k (the CPU kernel then splits the rows over threads and merges)
    x = activations(4000, 3, dtype, seed=13, kind="ties")
    va, ia = ops.topk(x[:2500].to(device), 2500)
    vb, ib = ops.topk(x[2500:].to(device), 1500)
    for k in (1, 5, 64):
        out = ops.topk_merge(va, ia, vb, ib + 2500, k=k)
        assert_same_topk(out, reference.topk(x, k))


def test_topk_merge_default_k(device):
    x = activations(25, 4, torch.float64, seed=1)
    va, ia = ops.topk(x[:10].to(device), 3)
    vb, ib = ops.topk(x[10:].to(device), 5)
    values, indices = ops.topk_merge(va, ia, vb, ib + 10)
    assert values.shape == (5, 4)  # max(k_a, k_b)
    assert_same_topk((values, indices), reference.topk_merge(va.cpu(), ia.cpu(), vb.cpu(), ib.cpu() + 10))
    assert_same_topk((values, indices), reference.topk(x, 5))


def test_topk_merge_ties_across_parts(device):
    # equal values are ordered by index whichever part they come from
    va = torch.tensor([[5.0], [1.0]], device=device)
    ia = torch.tensor([[4], [0]], device=device)
    vb = torch.tensor([[5.0], [5.0]], device=device)
    ib = torch.tensor([[2], [9]], device=device)
    values, indices = ops.topk_merge(va, ia, vb, ib, k=3)
    assert values[:, 0].tolist() == [5.0, 5.0, 5.0]
    assert indices[:, 0].tolist() == [2, 4, 9]


@pytest.mark.parametrize("ka, kb, k", [(0, 3, 2), (0, 0, 4), (2, 3, 0)], ids=["a-empty", "both-empty", "k0"])
def test_topk_merge_empty(device, ka, kb, k):
    x = activations(10, 3, torch.float32, seed=4).to(device)
    va, ia = ops.topk(x[:5], ka)
    vb, ib = ops.topk(x[5:], kb)
    out = ops.topk_merge(va, ia, vb, ib + 5, k=k)
    assert out[0].shape == (min(k, ka + kb), 3)
    assert_same_topk(out, reference.topk_merge(va.cpu(), ia.cpu(), vb.cpu(), ib.cpu() + 5, k=k))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_streaming_equals_one_shot(device, dtype, kind, seed):
    """Top-k per random chunk (sizes from 0 to 2k, many smaller than k) merged with topk_merge."""
    g = generator(seed)
    k = int(torch.randint(1, 9, (1,), generator=g))
    n = int(torch.randint(k, 120, (1,), generator=g))
    x = activations(n, 5, dtype, seed=seed, kind=kind).to(device)
    values = indices = None
    start = 0
    while start < n:
        size = int(torch.randint(0, 2 * k + 1, (1,), generator=g))
        chunk_values, chunk_indices = ops.topk(x[start : start + size], k)
        chunk_indices = chunk_indices + start
        if values is None:
            values, indices = chunk_values, chunk_indices
        else:
            values, indices = ops.topk_merge(values, indices, chunk_values, chunk_indices, k=k)
        start += size
    assert_same_topk((values, indices), ops.topk(x, k))
    assert_same_topk((values, indices), reference.topk(x.cpu(), k))


def test_topk_merge_nan_raises(device):
    va = torch.tensor([[1.0, float("nan")]], device=device)
    ia = torch.zeros(1, 2, dtype=torch.long, device=device)
    vb = torch.tensor([[2.0, 3.0]], device=device)
    ib = torch.ones(1, 2, dtype=torch.long, device=device)
    with pytest.raises(RuntimeError, match="NaN"):
        ops.topk_merge(va, ia, vb, ib, k=2)


def _merge_parts(device, K_b=3, dtype_b=torch.float32, index_dtype=torch.long, rows_ib=2):
    va = torch.zeros(2, 3, device=device)
    ia = torch.zeros(2, 3, dtype=torch.long, device=device)
    vb = torch.zeros(2, K_b, dtype=dtype_b, device=device)
    ib = torch.zeros(rows_ib, K_b, dtype=index_dtype, device=device)
    return va, ia, vb, ib


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param({"K_b": 4}, r"same K neurons", id="K-mismatch"),
        pytest.param({"dtype_b": torch.float64}, r"values_a and values_b must share a dtype", id="dtype-mismatch"),
        pytest.param({"index_dtype": torch.int32}, r"indices_b must be int64", id="int32-indices"),
        pytest.param({"rows_ib": 3}, r"indices tensor must have its values' shape", id="indices-shape"),
    ],
)
def test_topk_merge_argument_errors(device, kwargs, match):
    with pytest.raises(RuntimeError, match=match):
        ops.topk_merge(*_merge_parts(device, **kwargs), k=2)


def test_topk_merge_negative_k_rejected(device):
    with pytest.raises(RuntimeError, match=r"k must be >= 0"):
        ops.topk_merge(*_merge_parts(device), k=-1)


# ----------------------------------------------------------------------------------------------
# devices, registration, builds


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize(
    "n, K, k", SHAPES + [pytest.param(20000, 2, 3, id="very-tall"), pytest.param(300, 100, 64, id="k64")]
)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_topk_cpu_cuda_parity(dtype, n, K, k, kind):
    x = activations(n, K, dtype, seed=n + K + k, kind=kind)
    assert_same_topk(ops.topk(x.cuda(), k), ops.topk(x, k))


@pytest.mark.cuda
def test_topk_merge_cpu_cuda_parity():
    x = activations(60, 9, torch.float32, seed=2, kind="ties")
    va, ia = ops.topk(x[:30], 10)
    vb, ib = ops.topk(x[30:], 10)
    cpu = ops.topk_merge(va, ia, vb, ib + 30, k=12)
    cuda = ops.topk_merge(va.cuda(), ia.cuda(), vb.cuda(), ib.cuda() + 30, k=12)
    assert_same_topk(cuda, cpu)


@pytest.mark.cuda
def test_topk_merge_mixed_devices_rejected():
    va, ia, vb, ib = _merge_parts("cuda")
    with pytest.raises(RuntimeError, match=r"one device"):
        ops.topk_merge(va, ia, vb.cpu(), ib, k=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_topk_opcheck(device, dtype):
    x = activations(20, 5, dtype, seed=9).to(device)
    torch.library.opcheck(torch.ops.neurocore.topk.default, (x, 3))
    torch.library.opcheck(torch.ops.neurocore.topk.default, (x, 30))


def test_topk_merge_opcheck(device):
    x = activations(20, 5, torch.float32, seed=10).to(device)
    va, ia = ops.topk(x[:8], 3)
    vb, ib = ops.topk(x[8:], 4)
    torch.library.opcheck(torch.ops.neurocore.topk_merge.default, (va, ia, vb, ib + 8, 5))


# ----------------------------------------------------------------------------------------------
# block boundaries (sizes from python_tests/_constants.py, parsed from csrc/cpu/topk.cpp and
# csrc/kernels/topk_cuda.cuh): just below, at and just above each boundary, and several blocks

from _constants import (  # noqa: E402
    TOPK_BLOCK_COLS,
    TOPK_CUDA_MAX_SEGMENTS,
    TOPK_CUDA_ROWS_PER_K,
    TOPK_CUDA_THREADS,
    TOPK_SEGMENT_BLOCK_FACTOR,
    TOPK_SEGMENT_ROWS_PER_K,
    TOPK_SUB_COLS,
    around,
    topk_cpu_segments,
)

# Column counts at the CPU's column-block and pre-filter boundaries: a block's tail shorter than
# TOPK_SUB_COLS, one column past a block, and several blocks plus a short tail.
BOUNDARY_COLS = sorted(
    set(around(TOPK_SUB_COLS) + around(TOPK_BLOCK_COLS) + [2 * TOPK_BLOCK_COLS + TOPK_SUB_COLS + 1])
)


@pytest.fixture
def threads():
    """Sets torch's (= ATen's) intra-op thread count for one test, restoring it afterwards: the CPU
    top-k's row split depends on it."""
    before = torch.get_num_threads()

    def set_to(n):
        torch.set_num_threads(n)
        return n

    yield set_to
    torch.set_num_threads(before)


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("K", BOUNDARY_COLS, ids=lambda K: f"K{K}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_topk_column_block_boundaries(device, dtype, K, kind):
    x = activations(37, K, dtype, seed=K, kind=kind)
    assert_same_topk(ops.topk(x.to(device), 6), reference.topk(x, 6))


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("K", BOUNDARY_COLS, ids=lambda K: f"K{K}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_topk_merge_column_block_boundaries(device, dtype, K, kind):
    # the merge runs the kernel with explicit indices (its own pre-filter: equal values may enter)
    x = activations(30, K, dtype, seed=K + 1, kind=kind)
    va, ia = ops.topk(x[:13].to(device), 7)
    vb, ib = ops.topk(x[13:].to(device), 7)
    out = ops.topk_merge(va, ia, vb, ib + 13, k=7)
    assert_same_topk(out, reference.topk(x, 7))


def _split_cases():
    """(threads, R, K, k) around the CPU's row-split rule: R at the row threshold with one column
    block, and the largest and smallest block counts on either side of the block threshold."""
    cases, k = [], 3
    for t in (1, 2, 4):
        rows = TOPK_SEGMENT_ROWS_PER_K * k * t
        for R in around(rows):
            cases.append(pytest.param(t, R, 5, k, id=f"t{t}-R{R}-K5"))
        # blocks = factor * t - 1 splits the rows; one more column makes blocks = factor * t: no split
        K_split = TOPK_BLOCK_COLS * (TOPK_SEGMENT_BLOCK_FACTOR * t - 1)
        for K in (K_split, K_split + 1):
            cases.append(pytest.param(t, rows + 7, K, k, id=f"t{t}-R{rows + 7}-K{K}"))
    return cases


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("t, R, K, k", _split_cases())
def test_topk_cpu_row_split_boundaries(threads, t, R, K, k, kind):
    threads(t)
    x = activations(R, K, torch.float32, seed=R + K, kind=kind)
    assert_same_topk(ops.topk(x, k), reference.topk(x, k))


@pytest.mark.parametrize("t", [1, 2, 4])
def test_topk_cpu_row_split_over_several_blocks(threads, t):
    """Rows split into segments and columns into several blocks with a short tail, at once; the
    last segment holds fewer rows than k (empty heap slots meet the merge)."""
    threads(t)
    k = 4
    K = TOPK_BLOCK_COLS * (TOPK_SEGMENT_BLOCK_FACTOR * t - 1) - TOPK_SUB_COLS + 3
    segments = topk_cpu_segments(TOPK_SEGMENT_ROWS_PER_K * k * t, K, k, t)
    R = TOPK_SEGMENT_ROWS_PER_K * k * t + 1
    R += (R % segments == 0)  # an uneven split
    assert topk_cpu_segments(R, K, k, t) > 1
    x = activations(R, K, torch.float32, seed=t, kind="ties")
    assert_same_topk(ops.topk(x, k), reference.topk(x, k))


def _cuda_segments(R, K, k):
    by_threads = -(-TOPK_CUDA_THREADS // K)
    by_rows = R // (TOPK_CUDA_ROWS_PER_K * k)
    return max(1, min(by_threads, by_rows, TOPK_CUDA_MAX_SEGMENTS))


def _cuda_passes(R, K, k):
    passes = 1
    while (s := _cuda_segments(R, K, k)) > 1:
        R, passes = s * k, passes + 1
    return passes


def _cuda_cases():
    k, cases = 3, []
    for R in around(2 * TOPK_CUDA_ROWS_PER_K * k):  # one pass below, two passes from here
        cases.append(pytest.param(R, 2, k, id=f"R{R}-K2"))
    K = TOPK_CUDA_THREADS // 4  # by_threads = 4 segments at most: around it
    for Kc in around(K):
        cases.append(pytest.param(64 * k, Kc, k, id=f"R{64 * k}-K{Kc}"))
    # many passes: the cap of TOPK_CUDA_MAX_SEGMENTS segments, then fewer each pass
    R = TOPK_CUDA_ROWS_PER_K * k * TOPK_CUDA_MAX_SEGMENTS * 4 + 5
    assert _cuda_passes(R, 2, k) > 3
    cases.append(pytest.param(R, 2, k, id=f"R{R}-K2-passes{_cuda_passes(R, 2, k)}"))
    return cases


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("R, K, k", _cuda_cases())
def test_topk_cuda_segment_pass_boundaries(R, K, k, kind):
    x = activations(R, K, torch.float32, seed=R + K, kind=kind)
    assert_same_topk(ops.topk(x.cuda(), k), reference.topk(x, k))


@pytest.mark.parametrize("chunk_delta", [-1, 0, 1], ids=["chunk=k-1", "chunk=k", "chunk=k+1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_streaming_across_column_blocks(device, dtype, chunk_delta):
    """Chunks of k-1, k and k+1 rows merged one by one, over more columns than one CPU block."""
    k, K = 5, TOPK_BLOCK_COLS + 1
    x = activations(4 * k + 3, K, dtype, seed=k + chunk_delta, kind="ties").to(device)
    size, values, indices = k + chunk_delta, None, None
    for start in range(0, x.shape[0], size):
        v, i = ops.topk(x[start : start + size], k)
        values, indices = (v, i + start) if values is None else ops.topk_merge(values, indices, v, i + start, k=k)
    assert_same_topk((values, indices), reference.topk(x.cpu(), k))
