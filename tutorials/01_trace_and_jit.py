"""Tutorial 1: trace a Python function, look at every IR level, run it compiled.

    python tutorials/01_trace_and_jit.py
"""
import numpy as np

import mlc

rng = np.random.default_rng(0)
x = rng.standard_normal((8, 64)).astype(np.float32)
w1 = (rng.standard_normal((64, 32)) * 0.1).astype(np.float32)
b1 = np.zeros(32, dtype=np.float32)
w2 = (rng.standard_normal((32, 10)) * 0.1).astype(np.float32)


# 1. Write the model with numpy-style operators and mlc functions.
@mlc.jit
def mlp(x, w1, b1, w2):
    h = mlc.relu(x @ w1 + b1)
    return mlc.softmax(h @ w2, axis=-1)


# 2. The graph level: SSA, one line per op, every value typed.
print(mlc.trace(mlp, x, w1, b1, w2))

# 3. Run it: the first call traces and compiles, later calls reuse the code.
y = mlp(x, w1, b1, w2)
h = np.maximum(x @ w1 + b1, 0) @ w2
ref = np.exp(h - h.max(-1, keepdims=True))
ref /= ref.sum(-1, keepdims=True)
print("matches numpy:", np.allclose(y, ref, rtol=1e-5, atol=1e-7))

# 4. The lower levels of the same program: the tensor level (what each kernel
#    computes), the loop level (how: vector, parallel and unrolled loops) and LLVM IR.
exe = mlp.lower(x, w1, b1, w2)
print(exe.ir("tensor"))
print(exe.ir("loop").split("\n\n")[-1])     # the softmax kernel's loops
print(exe.ir("llvm").count("\n"), "lines of LLVM IR;", exe.memory_report())

# 5. Mistakes are reported at trace time, at your line.
try:
    mlc.trace(lambda x, w: x @ w, x, w2)
except mlc.TraceError as e:
    print("error:", e)
