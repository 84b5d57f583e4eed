"""One broken kernel or function per verifier rule: VerifyError names the kernel or
function and what is wrong."""
import pytest

from mlc.ir import loop as L, tensor as T
from mlc.ir.expr import Const, Load, Var
from mlc.ir.graph import VerificationError
from mlc.ir.text import VerifyError
from mlc.ir.types import float32, int32
from mlc.target import Target

GOOD_KERNEL = """contraction kernel @mm(A: f32[4,8], B: f32[8,3]) -> f32[4,3] {
  T0[i, j] = sum[k < 8] A[i, k] * B[k, j] : f32[4,3]
  out[i, j] = max(T0[i, j], 0.0)
}"""


def kernel():
    return T.parse(GOOD_KERNEL)


def test_verify_error_is_a_verification_error_and_good_ir_passes():
    assert issubclass(VerifyError, VerificationError)
    T.verify(kernel())
    L.verify(func())


def broken_kernels():
    def undefined_var(k):
        k.stages[1].body = k.stages[0][Var("z"), Var("j")]

    def reads_later_stage(k):
        k.stages[0].body.body = Load(k.stages[1], [k.stages[0].axes[0], Const(0)])

    def foreign_tensor(k):
        k.stages[1].body = Load(T.Placeholder("Z", (4, 3), float32), k.stages[1].axes)

    def arity(k):
        k.stages[1].body.a.indices.append(Const(0))

    def rank(k):
        k.stages[1].axes.append(Var("x"))

    def dtype(k):
        k.stages[1].dtype = int32

    def extent(k):
        k.stages[0].body.extents[0] = -1

    def combiner(k):
        k.stages[0].body.combiner = "avg"

    def output(k):
        k.outputs = [T.compute((4, 3), lambda i, j: Const(0.0, float32), "out9")]

    def reduce_axis_reused(k):
        k.stages[0].body.axes[0] = k.stages[0].axes[0]

    return [
        (undefined_var, "stage out uses variable z, which is not one of its index variables"),
        (reads_later_stage, "stage T0 reads out, which is not an input or an earlier stage"),
        (foreign_tensor, "stage out reads Z, which is not an input or an earlier stage"),
        (arity, r"stage out reads T0 \(rank 2\) with 3 indices"),
        (rank, "stage out has 3 index variables for its 2 dimensions"),
        (dtype, "stage out has dtype i32 but its body computes f32"),
        (extent, "stage T0 reduces over k < -1: extents must be >= 0"),
        (combiner, "stage T0 reduces with 'avg'"),
        (output, "output out9 is not computed by any stage"),
        (reduce_axis_reused, "stage T0 binds a variable twice"),
    ]


@pytest.mark.parametrize("breaks,message", broken_kernels(), ids=lambda x: getattr(x, "__name__", ""))
def test_tensor_rule(breaks, message):
    k = kernel()
    breaks(k)
    with pytest.raises(VerifyError, match=f"kernel @mm: {message}"):
        T.verify(k)


GOOD_FUNC = """func @f(a: f32[4,8], out: f32[4]) {
  // outputs: out
  parallel i in [0, 4) {
    alloc acc: f32[1] local
    acc[0] = 0.0
    for j in [0, 8) {
      acc[0] += a[i, j] over [j < 8]
    }
    out[i] = acc[0]
  }
}"""


def func():
    return L.parse(GOOD_FUNC)


def inner(f):
    return f.body.body.body.stmts[1]   # the j loop


def broken_funcs():
    def var_out_of_scope(f):
        st = f.body.body.body.stmts[2]
        st.indices = [inner(f).var]

    def load_from_alloc_outside(f):
        acc = f.body.body.buffer
        f.body.body = L.Seq([f.body.body, L.Store(f.outputs[0], [f.body.var], Load(acc, [Const(0)]))])

    def store_to_unknown(f):
        f.body.body.body.stmts[0].buffer = L.Buffer("zz", (1,), float32)

    def arity(f):
        f.body.body.body.stmts[2].indices.append(Const(0))

    def store_dtype(f):
        f.body.body.body.stmts[0].value = Const(0, int32)

    def extent(f):
        inner(f).extent = Const(-1)

    def vector_extent(f):
        inner(f).kind = "vector"
        inner(f).extent = f.body.var + 1

    def gpu_kind(f):
        f.body.kind = "blockIdx.x"

    def combiner(f):
        inner(f).body.combiner = "avg"

    def output_never_written(f):
        f.body.body.body.stmts.pop()

    return [
        (var_out_of_scope, "store to out uses j outside the loops that define it"),
        (load_from_alloc_outside, "store to out loads from acc, which is not a param or an enclosing alloc"),
        (store_to_unknown, "store to zz writes zz, which is not a param or an enclosing alloc"),
        (arity, r"store to out writes out \(rank 1\) with 2 indices"),
        (store_dtype, "store to acc writes a i32 value into acc: f32"),
        (extent, "loop j has extent -1: extents must be >= 0"),
        (vector_extent, "vector loop j needs a constant extent, has i \\+ 1"),
        (gpu_kind, "loop i is bound to blockIdx.x, but target .* is not a GPU"),
        (combiner, "accumulation into acc combines with 'avg'"),
        (output_never_written, "output out is never written"),
    ]


@pytest.mark.parametrize("breaks,message", broken_funcs(), ids=lambda x: getattr(x, "__name__", ""))
def test_loop_rule(breaks, message):
    f = func()
    breaks(f)
    with pytest.raises(VerifyError, match=f"func @f: {message}"):
        L.verify(f, Target.get("host"))


def test_gpu_kinds_are_legal_for_a_gpu_target_and_without_one():
    f = func()
    f.body.kind = "blockIdx.x"
    L.verify(f)
    L.verify(f, Target.get("cuda-sm80"))
