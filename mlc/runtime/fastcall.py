"""The native half of the Executable's fast call: one small, fixed function (LLVM IR
below, compiled once per process) that checks a tuple of numpy
arrays against an Executable's input table and calls its entry with their data pointers.

Reading an array's data pointer from Python costs about half a microsecond a
argument (a ctypes object per read), more than a small kernel runs. This function
reads it from the array object itself, with every other check the Python path makes:
the exact type ``numpy.ndarray``, the dtype object, the number of dimensions, each
extent, C-contiguous and aligned. On any difference it returns the argument's position
(1-based) without calling anything, and the caller takes the Python path, which copies
or raises the usual error: the fast path never runs code on an array it did not check.

The object layouts it reads (CPython's tuple and object header, NumPy's
``PyArrayObject_fields``) are verified on probe objects first; where they do not match,
``helper()`` is None and every call takes the Python path.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

MAX_DIMS = 8        # inputs of more dimensions take the Python path
HEADER = 16         # i64 slots before the per-input records
RECORD = 2 + MAX_DIMS   # per input: dtype object, ndim, extents

# the table (i64): [0] the function to call, [1] its first argument (parameters, or a
# library's handle), [2] 0: entry(ins, outs, params, workspace); 1: int run(handle, ins,
# outs), nonzero on error; [3] inputs, [4] outputs, [5..13] layout offsets and the ndarray
# type; from [16] one RECORD per input
_IR = r"""
define i64 @mlc_fast_call(ptr %args, ptr %outs, ptr %t, ptr %ws) {
entry:
  %p3 = getelementptr i64, ptr %t, i64 3
  %n_in = load i64, ptr %p3
  %p4 = getelementptr i64, ptr %t, i64 4
  %n_out = load i64, ptr %p4
  %p5 = getelementptr i64, ptr %t, i64 5
  %items = load i64, ptr %p5
  %p6 = getelementptr i64, ptr %t, i64 6
  %type_off = load i64, ptr %p6
  %p7 = getelementptr i64, ptr %t, i64 7
  %nd_type = load i64, ptr %p7
  %p8 = getelementptr i64, ptr %t, i64 8
  %data_off = load i64, ptr %p8
  %p9 = getelementptr i64, ptr %t, i64 9
  %nd_off = load i64, ptr %p9
  %p10 = getelementptr i64, ptr %t, i64 10
  %dims_off = load i64, ptr %p10
  %p11 = getelementptr i64, ptr %t, i64 11
  %descr_off = load i64, ptr %p11
  %p12 = getelementptr i64, ptr %t, i64 12
  %flags_off = load i64, ptr %p12
  %p13 = getelementptr i64, ptr %t, i64 13
  %size_off = load i64, ptr %p13
  %sizep = getelementptr i8, ptr %args, i64 %size_off
  %size = load i64, ptr %sizep
  %count_ok = icmp eq i64 %size, %n_in
  %n_in1 = add i64 %n_in, 1
  %n_out1 = add i64 %n_out, 1
  %ins = alloca ptr, i64 %n_in1
  %outp = alloca ptr, i64 %n_out1
  br i1 %count_ok, label %in_head, label %bad_count
bad_count:
  ret i64 %n_in1
in_head:
  %i = phi i64 [0, %entry], [%i_next, %in_ok]
  %more = icmp ult i64 %i, %n_in
  br i1 %more, label %in_body, label %out_head
in_body:
  %fail = add i64 %i, 1
  %i8 = mul i64 %i, 8
  %islot_off = add i64 %items, %i8
  %islot = getelementptr i8, ptr %args, i64 %islot_off
  %obj = load ptr, ptr %islot
  %typep = getelementptr i8, ptr %obj, i64 %type_off
  %ty = load i64, ptr %typep
  %ok_t = icmp eq i64 %ty, %nd_type
  br i1 %ok_t, label %c_descr, label %bad
c_descr:
  %r10 = mul i64 %i, 10
  %rec_at = add i64 %r10, 16
  %rec = getelementptr i64, ptr %t, i64 %rec_at
  %descrp = getelementptr i8, ptr %obj, i64 %descr_off
  %descr = load i64, ptr %descrp
  %want_descr = load i64, ptr %rec
  %ok_d = icmp eq i64 %descr, %want_descr
  br i1 %ok_d, label %c_nd, label %bad
c_nd:
  %ndp = getelementptr i8, ptr %obj, i64 %nd_off
  %nd32 = load i32, ptr %ndp
  %nd = sext i32 %nd32 to i64
  %want_ndp = getelementptr i64, ptr %rec, i64 1
  %want_nd = load i64, ptr %want_ndp
  %ok_n = icmp eq i64 %nd, %want_nd
  br i1 %ok_n, label %c_flags, label %bad
c_flags:
  %flp = getelementptr i8, ptr %obj, i64 %flags_off
  %fl = load i32, ptr %flp
  %fl_m = and i32 %fl, 257
  %ok_f = icmp eq i32 %fl_m, 257
  br i1 %ok_f, label %c_dims, label %bad
c_dims:
  %dimsp = getelementptr i8, ptr %obj, i64 %dims_off
  %dims = load ptr, ptr %dimsp
  br label %d_head
d_head:
  %d = phi i64 [0, %c_dims], [%d_next, %d_body]
  %dmore = icmp ult i64 %d, %nd
  br i1 %dmore, label %d_check, label %in_ok
d_check:
  %havep = getelementptr i64, ptr %dims, i64 %d
  %have = load i64, ptr %havep
  %want_at = add i64 %d, 2
  %wantp = getelementptr i64, ptr %rec, i64 %want_at
  %want = load i64, ptr %wantp
  %ok_e = icmp eq i64 %have, %want
  br i1 %ok_e, label %d_body, label %bad
d_body:
  %d_next = add i64 %d, 1
  br label %d_head
in_ok:
  %datap = getelementptr i8, ptr %obj, i64 %data_off
  %data = load ptr, ptr %datap
  %inslot = getelementptr ptr, ptr %ins, i64 %i
  store ptr %data, ptr %inslot
  %i_next = add i64 %i, 1
  br label %in_head
bad:
  ret i64 %fail
out_head:
  %j = phi i64 [0, %in_head], [%j_next, %out_body]
  %omore = icmp ult i64 %j, %n_out
  br i1 %omore, label %out_body, label %call
out_body:
  %j8 = mul i64 %j, 8
  %oslot_off = add i64 %items, %j8
  %oslot = getelementptr i8, ptr %outs, i64 %oslot_off
  %o = load ptr, ptr %oslot
  %odatap = getelementptr i8, ptr %o, i64 %data_off
  %odata = load ptr, ptr %odatap
  %outslot = getelementptr ptr, ptr %outp, i64 %j
  store ptr %odata, ptr %outslot
  %j_next = add i64 %j, 1
  br label %out_head
call:
  %fnp = load ptr, ptr %t
  %p1 = getelementptr i64, ptr %t, i64 1
  %first = load ptr, ptr %p1
  %p2 = getelementptr i64, ptr %t, i64 2
  %kind = load i64, ptr %p2
  %is_lib = icmp ne i64 %kind, 0
  br i1 %is_lib, label %lib, label %plain
plain:
  call void %fnp(ptr %ins, ptr %outp, ptr %first, ptr %ws)
  ret i64 0
lib:
  %rc = call i32 %fnp(ptr %first, ptr %ins, ptr %outp)
  %failed = icmp ne i32 %rc, 0
  %r = select i1 %failed, i64 -1, i64 0
  ret i64 %r
}
"""

_FN = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.py_object, ctypes.py_object, ctypes.c_void_p, ctypes.c_void_p)
_LOCK = threading.Lock()
_STATE: list = []   # [(function, engine, layout)] once built; [None] where the layouts differ


def _layout() -> list[int] | None:
    """Offsets [tuple items, ob_type, ndarray type, data, nd, dimensions, descr, flags, tuple
    size] of this interpreter and NumPy, each checked on probe objects; None on any doubt."""
    read = lambda addr, kind=ctypes.c_int64: kind.from_address(addr).value
    head = object.__basicsize__   # PyObject_HEAD: refcount and type
    items, type_off, size_off = tuple.__basicsize__, head - 8, tuple.__basicsize__ - 8
    data, nd, dims, descr, flags = head, head + 8, head + 16, head + 40, head + 48
    try:
        probes = [np.zeros((2, 3), np.float32), np.zeros((3, 4), np.float64)[:, ::2], np.arange(5, dtype=np.int8),
                  np.zeros((2, 1, 4), np.int64).transpose(2, 0, 1)]
        t = tuple(probes)
        if read(id(t) + size_off) != len(t) or any(read(id(t) + items + 8 * k) != id(p) for k, p in enumerate(t)):
            return None
        for p in probes:
            f = read(id(p) + flags, ctypes.c_int32)
            if (read(id(p) + type_off) != id(np.ndarray) or read(id(p) + data) != p.ctypes.data
                    or read(id(p) + nd, ctypes.c_int32) != p.ndim or read(id(p) + descr) != id(p.dtype)
                    or bool(f & 1) != p.flags.c_contiguous or bool(f & 0x100) != p.flags.aligned
                    or [read(read(id(p) + dims) + 8 * k) for k in range(p.ndim)] != list(p.shape)):
                return None
    except (ValueError, OSError, OverflowError):
        return None
    return [items, type_off, id(np.ndarray), data, nd, dims, descr, flags, size_off]


def helper():
    """(the compiled function, the layout offsets), or None where the layouts are not the
    ones the function reads."""
    if not _STATE:
        with _LOCK:
            if not _STATE:
                layout = _layout()
                if layout is None:
                    _STATE.append(None)
                else:
                    import llvmlite.binding as llvm
                    from ..target import init_llvm
                    init_llvm()
                    tm = llvm.Target.from_default_triple().create_target_machine(opt=0, reloc="pic")
                    mod = llvm.parse_assembly(_IR)
                    mod.verify()
                    engine = llvm.create_mcjit_compiler(mod, tm)   # unoptimized: a few loads and compares
                    engine.finalize_object()
                    fn = _FN(engine.get_function_address("mlc_fast_call"))
                    _STATE.append((fn, engine, layout))
    state = _STATE[0]
    return None if state is None else (state[0], state[2])


def table(function: int, first: int, kind: int, inputs, n_out: int, layout) -> np.ndarray | None:
    """The i64 table ``mlc_fast_call`` reads for an Executable: ``inputs`` its (numpy dtype,
    shape) per input. None when an input has more than MAX_DIMS dimensions. The dtype
    objects must stay alive as long as the table (the caller keeps them)."""
    if any(len(shape) > MAX_DIMS for _, shape in inputs):
        return None
    t = np.zeros(HEADER + RECORD * len(inputs), np.int64)
    items, type_off, nd_type, data, nd, dims, descr, flags, size_off = layout
    t[:14] = [function, first, kind, len(inputs), n_out, items, type_off, nd_type, data, nd, dims, descr, flags,
              size_off]
    for k, (dt, shape) in enumerate(inputs):
        rec = HEADER + RECORD * k
        t[rec], t[rec + 1] = id(dt), len(shape)
        t[rec + 2:rec + 2 + len(shape)] = shape
    return t
