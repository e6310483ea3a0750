"""The block, tile, chunk and panel sizes of the kernels and learners, read from where they are defined.

Boundary tests (sizes just below, at and just above each boundary, and sizes spanning several blocks)
take their sizes from here, so a changed constant moves the tests with it. Each value is parsed from
the C++ source (``constexpr`` lines, and a few bare literals inside expressions, matched with a regex
that quotes the whole expression) or read from the Python module that defines it. A constant that
cannot be found is an error at import time, never a skip: a test that silently stopped following its
kernel would pass for the wrong reason.
"""

from __future__ import annotations

import ast
import inspect
import operator
import re
from pathlib import Path

from neurocore import ops
from neurocore.methods import _linear_learn
from neurocore.probe import record

CSRC = Path(__file__).resolve().parents[1] / "csrc"


class ConstantNotFound(AssertionError):
    """A kernel constant could not be parsed from its source: update the pattern in _constants.py."""


def _source(rel: str) -> str:
    path = CSRC / rel
    if not path.is_file():
        raise ConstantNotFound(f"{path} does not exist: the kernel sources moved; update python_tests/_constants.py")
    return path.read_text()


_OPS = {ast.LShift: operator.lshift, ast.Mult: operator.mul, ast.Add: operator.add, ast.Sub: operator.sub}


def _int_expr(text: str) -> int:
    """An integer constant expression of C++ literals: ``512``, ``32 << 20``, ``int64_t{1} << 25``."""
    text = re.sub(r"\bint64_t\{(\d+)\}", r"\1", text.strip())

    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ConstantNotFound(f"not an integer constant expression: {text!r}")

    return ev(ast.parse(text, mode="eval").body)


def constexpr(rel: str, name: str) -> int:
    """``constexpr <type> name = <expr>;`` in csrc/<rel>."""
    found = re.findall(rf"constexpr\s+[\w:]+\s+{name}\s*=\s*([^;]+);", _source(rel))
    if len(found) != 1:
        raise ConstantNotFound(f"expected one `constexpr ... {name} = ...;` in csrc/{rel}, found {len(found)}")
    return _int_expr(found[0])


def literals(rel: str, pattern: str, what: str) -> tuple[int, ...]:
    """The integer groups of the one match of ``pattern`` (a regex quoting the whole expression)."""
    found = re.findall(pattern, _source(rel))
    if len(found) != 1:
        raise ConstantNotFound(f"{what}: expected one match of {pattern!r} in csrc/{rel}, found {len(found)}")
    groups = found[0] if isinstance(found[0], tuple) else (found[0],)
    return tuple(int(float(g)) for g in groups)


def _default(fn, param: str) -> int:
    value = inspect.signature(fn).parameters[param].default
    if not isinstance(value, int):
        raise ConstantNotFound(f"{fn.__qualname__}({param}=...) has no integer default")
    return value


# ----------------------------------------------------------------------------------------------
# top-k (csrc/cpu/topk.cpp, csrc/kernels/topk_cuda.cuh)

#: Columns per CPU task; each task keeps the heaps of one block of columns.
TOPK_BLOCK_COLS = constexpr("cpu/topk.cpp", "kBlockCols")
#: Columns whose thresholds the CPU pre-filter compares at once (a block's tail is shorter).
TOPK_SUB_COLS = constexpr("cpu/topk.cpp", "kSubCols")
# The CPU splits rows into segments (merged afterwards) when
# `blocks < 2 * threads && R >= 16 * k * threads`: bare literals in topk_rows_cpu, parsed here
# rather than moved into constexprs (editing csrc would force a rebuild on every checkout).
TOPK_SEGMENT_BLOCK_FACTOR, TOPK_SEGMENT_ROWS_PER_K = literals(
    "cpu/topk.cpp",
    r"if \(blocks < (\d+) \* threads && R >= (\d+) \* k \* threads\) segments =",
    "the CPU top-k row-split rule",
)
# CUDA: segments = clamp(min(ceil(65536 / K), R / (4 k)), 1, 1024) per pass (topk_cuda_segments).
(TOPK_CUDA_THREADS,) = literals("kernels/topk_cuda.cuh", r"by_threads = \((\d+) \+ K - 1\)", "CUDA top-k threads")
(TOPK_CUDA_ROWS_PER_K,) = literals("kernels/topk_cuda.cuh", r"by_rows = R / \((\d+) \* \(k > 0", "CUDA top-k rows")
(TOPK_CUDA_MAX_SEGMENTS,) = literals("kernels/topk_cuda.cuh", r"\(s > (\d+) \? \d+ : s\)", "CUDA top-k segments")


def topk_cpu_segments(R: int, K: int, k: int, threads: int) -> int:
    """How many row segments the CPU top-k uses (mirrors topk_rows_cpu, from the parsed literals)."""
    blocks = -(-K // TOPK_BLOCK_COLS)
    if blocks < TOPK_SEGMENT_BLOCK_FACTOR * threads and R >= TOPK_SEGMENT_ROWS_PER_K * min(k, R) * threads:
        return -(-TOPK_SEGMENT_BLOCK_FACTOR * threads // blocks)
    return 1


# ----------------------------------------------------------------------------------------------
# SoftWPMI (csrc/cpu/soft_wpmi.cpp, csrc/kernels/soft_wpmi.h, csrc/kernels/soft_wpmi_cuda.cuh)

#: Concepts per CPU tile (products and marginal).
WPMI_TILE = constexpr("cpu/soft_wpmi.cpp", "kTile")
#: Tiles whose probabilities one pass over sims fills: a CPU group is WPMI_TILE * this many concepts.
WPMI_TILES_PER_GROUP = constexpr("cpu/soft_wpmi.cpp", "kTilesPerGroup")
#: Bytes of probability panels per thread; larger N shrinks the tiles per group, then the tile.
WPMI_PANEL_BYTES = constexpr("cpu/soft_wpmi.cpp", "kPanelBytes")
#: Concepts per group for moderate N: past it, the CPU kernel starts a new group (a new pass).
WPMI_GROUP = WPMI_TILE * WPMI_TILES_PER_GROUP
#: Most factors multiplied before one log (wpmi_group_size's cap).
(WPMI_MAX_FACTORS,) = literals("kernels/soft_wpmi.h", r"if \(min_factor >= 1\.0\) return (\d+);", "factor cap")
#: The floor (a power of 10, negative) of a product of factors: float and double CPU products.
WPMI_FLOOR_LOG10_FLOAT, WPMI_FLOOR_LOG10_DOUBLE = (-v for v in literals(
    "cpu/soft_wpmi.cpp",
    r"std::is_same<scalar_t, float>::value \? -(\d+)\.0 : -(\d+)\.0",
    "product floors",
))
#: CUDA: concepts per thread block, and threads per row in the log-sum-exp reduction.
WPMI_CUDA_BLOCK = constexpr("kernels/soft_wpmi_cuda.cuh", "kWpmiBlock")
#: CUDA: most neuron blocks in the grid's y dimension (neurons beyond it loop).
(WPMI_CUDA_MAX_NEURON_BLOCKS,) = literals(
    "kernels/soft_wpmi_cuda.cuh", r"neuron_blocks = static_cast<unsigned>\(K < (\d+) \? K : \d+\)", "neuron blocks"
)


def wpmi_cpu_group_width(N: int, itemsize: int) -> int:
    """Concepts per CPU group for N images (mirrors tile_width and per_group in soft_wpmi_cpu)."""
    tw = max(1, min(WPMI_TILE, WPMI_PANEL_BYTES // max(1, N * itemsize)))
    per_group = max(1, min(WPMI_TILES_PER_GROUP, WPMI_PANEL_BYTES // max(1, N * tw * itemsize)))
    return tw * per_group


def wpmi_factors_per_log(min_factor: float, floor_log10: float) -> int:
    """Factors multiplied before one log (mirrors kernels::wpmi_group_size with the parsed constants)."""
    import math

    if not min_factor > 0.0:
        return 1
    if min_factor >= 1.0:
        return WPMI_MAX_FACTORS
    g = math.floor(floor_log10 * math.log(10.0) / math.log(min_factor))
    return max(1, min(WPMI_MAX_FACTORS, g))


# ----------------------------------------------------------------------------------------------
# Batched least squares (csrc/kernels/lstsq_gram.h, csrc/cpu/lstsq_gram.cpp, csrc/kernels/lstsq_gram_cuda.cuh)

#: Largest candidate set.
LSTSQ_MAX_SET = constexpr("kernels/lstsq_gram.h", "kMaxSetSize")
#: Systems per CPU parallel_for grain (bare literal in lstsq_gram_cpu).
(LSTSQ_CPU_GRAIN,) = literals("cpu/lstsq_gram.cpp", r"at::parallel_for\(0, K \* R, (\d+),", "lstsq grain")
#: Threads per CUDA block, one system each (bare literal in launch_lstsq_gram).
(LSTSQ_CUDA_BLOCK,) = literals(
    "kernels/lstsq_gram_cuda.cuh", r"const int64_t systems = K \* R;\s+if \(systems == 0\) return cudaSuccess;\s+const int block = (\d+);",
    "lstsq CUDA block",
)
#: Rows per chunk of ops.gram_stats (its default argument).
GRAM_STATS_CHUNK = _default(ops.gram_stats, "chunk_size")

# ----------------------------------------------------------------------------------------------
# Shapley (csrc/cpu/shapley.cpp, csrc/cuda/shapley.cu)

#: Samples per CPU block (SIMD lanes): float32, float64. Bare literals in lanes<acc_t>().
SHAPLEY_LANES_FLOAT, SHAPLEY_LANES_DOUBLE = literals(
    "cpu/shapley.cpp", r"return sizeof\(acc_t\) == 4 \? (\d+) : (\d+);", "Shapley lanes"
)
#: CUDA: walker scratch elements per launch; rows per launch = this // (P * 3 * C).
SHAPLEY_CUDA_SCRATCH = constexpr("cuda/shapley.cu", "kScratchElements")


def shapley_lanes(itemsize: int) -> int:
    return SHAPLEY_LANES_FLOAT if itemsize == 4 else SHAPLEY_LANES_DOUBLE


# ----------------------------------------------------------------------------------------------
# Linear Explanations (neurocore/methods/_linear_learn.py) and the recorder's cache

#: Rows per block when LE streams a split through its Gram products and standardisation.
LE_ROW_CHUNK = _linear_learn._ROW_CHUNK
#: Blocks summed in the inputs' precision before each float64 accumulation (bare literal in _gram).
_flush = re.findall(r"if i % (\d+) == (\d+) or i == len\(starts\) - 1:", Path(_linear_learn.__file__).read_text())
if len(_flush) != 1 or int(_flush[0][1]) != int(_flush[0][0]) - 1:
    raise ConstantNotFound("_linear_learn._gram: expected one `if i % B == B-1 or i == len(starts) - 1:`")
LE_BLOCKS_PER_FLUSH = int(_flush[0][0])
#: Neurons per elastic-net chunk (elastic_net's default argument).
LE_NEURON_CHUNK = _default(_linear_learn.elastic_net, "chunk_size")
#: Concepts a neuron's working set gains at least per round.
LE_WS_GROW = _linear_learn._WS_GROW
#: Dataset indices per cache chunk of record() (its default argument).
RECORD_CHUNK = _default(record, "chunk_size")


def around(boundary: int, low: int = 1) -> list[int]:
    """``[boundary - 1, boundary, boundary + 1]`` (those >= low)."""
    return [b for b in (boundary - 1, boundary, boundary + 1) if b >= low]
