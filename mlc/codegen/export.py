"""Ahead-of-time export: a compiled model as a shared library with a C API.

``export_library(compiled, "model.so")`` writes three files:

- ``model.so``: the model's code (the LLVM object of the compilation), the C API of
  ``mlc/runtime/c/mlc_model.h`` (``runtime.c``), generated tables (signature, weight
  offsets, metadata) and, by default, the weights themselves in ``.rodata``. Linked by
  the target's C compiler with only the API exported, then a trailer is appended: the
  metadata and a SHA-256 of the whole file (``runtime.library``, ``docs/formats.md``).
- ``model.h``: the API header plus the model's constants (names, shapes, dtypes).
- ``model.params`` with ``params="external"``: the weights as a tensor container
  (``runtime.params``), verified by the library when a handle is created.

Every file is written to a temporary name and renamed over the destination, so an
existing export is replaced whole or not at all.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

from ..target import Target
from ..version import __version__
from ..runtime import params as container
from ..runtime.library import ABI_VERSION, DTYPE_CODES, MAGIC, trailer
from ..runtime.elf import ElfHeader, elf_header
from .cross import ToolchainNotFound, find_c_compiler, write_object

C_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runtime", "c")
API_FUNCTIONS = ("mlc_abi_version", "mlc_version", "mlc_metadata", "mlc_status_name", "mlc_last_error",
                 "mlc_model_create", "mlc_model_destroy", "mlc_model_num_inputs", "mlc_model_num_outputs",
                 "mlc_model_input_info", "mlc_model_output_info", "mlc_model_workspace_size", "mlc_model_run",
                 "mlc_model_run_unchecked", "mlc_model_profile")
_DTYPE_ENUM = {name: f"MLC_{name.upper()}" for name in DTYPE_CODES}


class ExportError(RuntimeError):
    """A model that cannot be exported, or a toolchain that failed."""


@dataclass
class Exported:
    library: str
    header: str
    params: str | None      # the external weights file, or None when embedded
    compiler: str
    elf: ElfHeader
    device: str | None = None   # a cuda library's device code, e.g. "cubin for sm_90 + PTX"

    def __str__(self) -> str:
        extra = f", weights in {self.params}" if self.params else ", weights embedded"
        device = f", driving a CUDA device: {self.device}" if self.device else ""
        return (f"wrote {self.library}: {self.elf}, {os.path.getsize(self.library)} bytes (compiled with "
                f"{self.compiler}{extra}{device}); header {self.header}")


def export_library(compiled, path, *, params: str = "embedded", signature=None,
                   single_output: bool | None = None, prefix: str = "mlc") -> Exported:
    """Export ``compiled`` (a ``driver.Compiled``) as ``path`` (.so), ``path``'s .h and,
    with ``params="external"``, ``path``'s .params. ``signature``: the pytree structure
    ``mlc.load`` restores (``runtime.executable.Signature``), None for flat arrays.
    ``prefix`` names the API functions (``<prefix>_model_create``, ...), so several
    models can be linked into one program. A cuda target's compilation becomes a cuda
    model library (``export_gpu_library``)."""
    if compiled.target.kind == "cuda":
        return export_gpu_library(compiled, path, compiled.gpu_module, params=params, signature=signature,
                                  single_output=single_output, prefix=prefix)
    return _export(compiled, path, None, params, signature, single_output, prefix)


def export_gpu_library(compiled, path, gpu_module, *, params: str = "embedded", signature=None,
                       single_output: bool | None = None, prefix: str = "mlc") -> Exported:
    """Export a cuda target's compilation as a model library with the same C API: the
    library is host code (built by this machine's C compiler, no CUDA toolkit needed)
    that opens the NVIDIA driver when a handle is created (``runtime/c/runtime_cuda.c``),
    loads ``gpu_module`` (a ``codegen.nvptx.GpuModule``: its PTX, and a cubin for the
    target's architecture when ptxas is installed), holds the weights and the workspace
    in device memory, and runs the launch table on the caller's device pointers."""
    if compiled.target.kind != "cuda":
        raise ExportError(f"a cuda model library is built for a cuda target; {compiled.target.name} is a "
                          f"{compiled.target.kind} target (export_library)")
    if compiled.profile:
        raise ExportError("--profile builds a CPU library that times its kernels; a cuda library's kernels are "
                          "timed with CUDA events (mlc run MODEL --target cuda --profile)")
    return _export(compiled, path, gpu_module, params, signature, single_output, prefix)


def _export(compiled, path, gpu_module, params, signature, single_output, prefix) -> Exported:
    path = os.fspath(path)
    if params not in ("embedded", "external"):
        raise ValueError(f"params must be 'embedded' or 'external', got {params!r}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix or ""):
        raise ValueError(f"prefix must be a C identifier, got {prefix!r}")
    if not path.endswith(".so"):
        raise ValueError(f"a model library is written to a .so file, got {path!r}")
    if compiled.aliases:
        raise ExportError("a function that updates arguments in place (compile(..., in_place=...)) cannot be "
                          "exported: the C API has no in-place arguments")
    if any(c.kernel.kind == "collective" for c in compiled.lowered.calls):
        raise ExportError("a model with collectives (allreduce, send, ...) runs under mlc's runtime with its "
                          "communicator (mpirun python ...); a model library is single-process")
    target = compiled.target
    # a cuda library's C code runs on this machine's CPU and drives the GPU through libcuda
    cc = find_c_compiler(target if gpu_module is None else Target.get("host"))
    stem = path[:-3]
    header_path, params_path = stem + ".h", (stem + ".params" if params == "external" else None)
    for p in (path, header_path, params_path):
        _check_replaceable(p)
    source = compiled.source
    inputs = [_io(v.name or f"input{i}", v.type) for i, v in enumerate(source.inputs)]
    outputs = [_io(v.name or f"output{i}", lowered.type)
               for i, (v, lowered) in enumerate(zip(source.outputs, compiled.lowered.outputs))]
    tensors = _weights(compiled)
    stats = compiled.stats()
    single = len(outputs) == 1 if single_output is None else single_output
    meta = {"format": "mlc-model-library", "abi_version": ABI_VERSION, "mlc_version": __version__,
            "prefix": prefix, "name": source.name, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "target": target.to_json(), "inputs": inputs, "outputs": outputs, "single_output": single,
            "signature": _signature_json(signature), "workspace_bytes": compiled.plan.workspace_bytes,
            "params": {"storage": params, "file": os.path.basename(params_path) if params_path else None,
                       "count": len(tensors), "nbytes": stats["param_bytes"],
                       "table": [[k, a.dtype.newbyteorder("<").str, list(a.shape)] for k, a in tensors.items()]},
            "stats": stats}
    if compiled.profile:   # what the profiler reports of each kernel call (runtime/profile.py)
        meta["profile"] = [dataclasses.asdict(k) for k in compiled.kernel_calls()]
    cubin = None
    if gpu_module is not None:
        cubin = _cubin(gpu_module, target.arch)
        meta["host"] = {"triple": Target.get("host").triple}   # where the library's own code runs
        meta["device"] = _device_json(gpu_module, target.arch, cubin)
    with tempfile.TemporaryDirectory(prefix="mlc-export-") as build:
        if gpu_module is None:
            write_object(compiled, os.path.join(build, "model.o"))
        else:
            with open(os.path.join(build, "module.ptx"), "w") as f:
                f.write(gpu_module.ptx)
            if cubin is not None:
                with open(os.path.join(build, "module.cubin"), "wb") as f:
                    f.write(cubin)
        blob = None
        if params == "embedded":
            blob = container.encode(tensors, {"model": source.name, "mlc_version": __version__})
            with open(os.path.join(build, "weights.mlct"), "wb") as f:
                f.write(blob)
        with open(os.path.join(build, "tables.c"), "w") as f:
            f.write(_tables_c(inputs, outputs, tensors, blob, meta, compiled.plan.workspace_bytes))
            if gpu_module is not None:
                f.write(_cuda_tables_c(gpu_module, target.arch, len(cubin) if cubin else 0))
        with open(os.path.join(build, "exports.map"), "w") as f:
            f.write("{\n  global:\n" + "".join(f"    {api_name(n, prefix)};\n" for n in API_FUNCTIONS)
                    + "  local: *;\n};\n")
        linked = os.path.join(build, "model.so")
        _build(cc, build, linked, os.path.basename(path), prefix, gpu=gpu_module is not None)
        if params_path:
            container.write_tensors(params_path, tensors, {"model": source.name, "mlc_version": __version__})
        container.write_atomic(path, _with_trailer(linked, meta))
    container.write_atomic(header_path, [model_header(meta).encode()])
    device = None
    if gpu_module is not None:
        n = len(meta["device"]["kernels"])
        device = (f"cubin for {target.arch} + PTX" if cubin else f"PTX for {target.arch} (no ptxas here: the driver "
                  "compiles it when loaded)") + f", {n} kernels, {len(gpu_module.launches)} launches"
    return Exported(path, header_path, params_path, cc[0], elf_header(path), device)


HEADER_MARK = "/* Generated by mlc"
_MARKS = {".so": MAGIC, ".h": HEADER_MARK.encode(), ".params": container.MAGIC}


def _check_replaceable(path: str | None) -> None:
    """An existing file is only replaced if an earlier export wrote it: a header or a
    library of the user's own with the same name is never overwritten."""
    if path is None or not os.path.exists(path):
        return
    ext = os.path.splitext(path)[1]
    mark = _MARKS[ext]
    with open(path, "rb") as f:
        if ext == ".so":
            f.seek(max(0, os.path.getsize(path) - len(mark)))
        ok = f.read(len(mark)) == mark
    if not ok:
        raise ExportError(f"{path} exists and was not written by mlc: not replacing it (move it, or export "
                          "under another name)")


def _io(name: str, t) -> dict:
    return {"name": name, "dtype": t.dtype.name, "shape": list(t.shape), "nbytes": t.nbytes}


def _weights(compiled) -> dict:
    """The weights by name, in the order of the code's parameter table."""
    out = {}
    for v, a in zip(compiled.lowered.params, compiled.lowered.param_data):
        name, k = v.name or "param", 1
        while name in out:
            k += 1
            name = f"{v.name}#{k}"
        out[name] = a
    return out


def _signature_json(signature) -> dict | None:
    if signature is None:
        return None
    try:
        sig = {"in_tree": signature.in_tree.to_json(), "static": list(signature.static),
               "out_tree": signature.out_tree.to_json()}
        json.dumps(sig, allow_nan=False)
        return sig
    except (TypeError, ValueError):
        return None   # keys or scalars JSON cannot hold: mlc.load takes the flat arrays


def _c_string(s: str) -> str:
    """A C string literal (octal escapes: they never swallow the next character)."""
    out, line = [], []
    for b in s.encode("utf-8"):
        c = chr(b)
        line.append(c if 32 <= b < 127 and c not in '"\\?' else f"\\{b:03o}")
        if len(line) >= 100:
            out.append('"' + "".join(line) + '"')
            line = []
    out.append('"' + "".join(line) + '"')
    return "\n    ".join(out)


def _shape(shape) -> str:
    return "{" + ", ".join(str(d) for d in shape) + "}" if shape else "{0}"


def _tables_c(inputs, outputs, tensors, blob, meta, workspace_bytes) -> str:
    lines = ['/* Generated by mlc: the tables of one exported model (see mlc_internal.h). */',
             '#include "mlc_internal.h"', ""]

    def infos(kind, entries):
        for i, e in enumerate(entries):
            lines.append(f"static const int64_t {kind}{i}_shape[] = {_shape(e['shape'])};")
        rows = [f"    {{{_c_string(e['name'])}, {_DTYPE_ENUM[e['dtype']]}, {len(e['shape'])}, {kind}{i}_shape, "
                f"{e['nbytes']}u}}," for i, e in enumerate(entries)] or ["    {0},"]
        lines.extend([f"static const mlc_tensor_info {kind}s[] = {{", *rows, "};", ""])

    infos("input", inputs)
    infos("output", outputs)
    prefix = container.table_prefix(tensors)
    _, entries, data_nbytes = container.layout(tensors)
    offsets = ", ".join(f"{e['offset']}u" for e in entries) or "0"
    lines += [f"static const uint64_t param_offsets[] = {{{offsets}}};", ""]
    if blob is not None:   # the container's bytes, 64-byte aligned in .rodata, read in place
        lines += ['__asm__(".pushsection .rodata\\n.balign 64\\n.globl mlc__params_blob\\n.hidden mlc__params_blob\\n"',
                  '        "mlc__params_blob:\\n.incbin \\"weights.mlct\\"\\n.popsection\\n");',
                  'extern const unsigned char mlc__params_blob[] __attribute__((visibility("hidden")));', ""]
    lines += ["const mlc_model_tables mlc__tables = {",
              f"    {len(inputs)}u, {len(outputs)}u, inputs, outputs,",
              f"    {len(entries)}u, param_offsets,",
              f"    {_c_string(prefix.decode('utf-8'))},",
              f"    {len(prefix)}u, {data_nbytes}u,",
              f"    {'mlc__params_blob' if blob is not None else 'NULL'}, {len(blob) if blob is not None else 0}u,",
              f"    {_c_string(meta['params']['file'] or '')},",
              f"    {_c_string(_json(meta))},",
              f"    {_c_string(__version__)},",
              f"    {workspace_bytes}u,",
              f"    {len(meta.get('profile', []))}u,",
              "};", ""]
    return "\n".join(lines)


SLOT_SPACES = {"input": 0, "output": 1, "param": 2, "workspace": 3}   # MLC_SLOT_* of mlc_internal.h


def _cubin(gpu_module, arch: str) -> bytes | None:
    """The module assembled for ``arch`` by ptxas, or None without ptxas (the library
    then carries the PTX alone, compiled by the driver when loaded)."""
    from .nvptx import assemble
    try:
        return assemble(gpu_module.ptx, arch)
    except ToolchainNotFound:
        return None
    except RuntimeError as e:
        raise ExportError(f"the model's PTX does not assemble for {arch}: {e}") from None


def _launch_json(launch) -> dict:
    return {"kernel": launch.kernel, "grid": list(launch.grid), "block": list(launch.block),
            "dynamic_shared_bytes": launch.dynamic_shared_bytes, "args": [[a.space, a.index] for a in launch.args]}


def _device_json(gpu_module, arch: str, cubin: bytes | None) -> dict:
    """What a cuda library's metadata says of its device code."""
    return {"api": "cuda", "arch": arch, "pointers": "device", "code": ["cubin", "ptx"] if cubin else ["ptx"],
            "ptx_bytes": len(gpu_module.ptx.encode()), "cubin_bytes": len(cubin) if cubin else 0,
            "kernels": _kernel_names(gpu_module), "launches": [_launch_json(x) for x in gpu_module.launches]}


def _kernel_names(gpu_module) -> list[str]:
    return list(dict.fromkeys(x.kernel for x in gpu_module.launches))


def _cuda_tables_c(gpu_module, arch: str, cubin_size: int) -> str:
    """The module and its launch table (mlc_cuda_tables of mlc_internal.h); the module's
    files (module.ptx, module.cubin when ``cubin_size``) are in the build folder."""
    names = _kernel_names(gpu_module)
    index = {k: i for i, k in enumerate(names)}
    shared = {k: 0 for k in names}
    slots, rows = [], []
    for x in gpu_module.launches:
        shared[x.kernel] = max(shared[x.kernel], x.dynamic_shared_bytes)
        if any(a.space not in SLOT_SPACES for a in x.args):
            raise ExportError(f"launch of {x.kernel}: an argument in an unknown place {x.args}")
        rows.append(f"    {{{index[x.kernel]}u, {{{', '.join(f'{d}u' for d in x.grid)}}}, "
                    f"{{{', '.join(f'{d}u' for d in x.block)}}}, {x.dynamic_shared_bytes}u, {len(x.args)}u, "
                    f"cuda_slots + {len(slots)}}},")
        slots += [f"{{{SLOT_SPACES[a.space]}u, {a.index}u}}" for a in x.args]
    # the PTX NUL-terminated (cuModuleLoadData reads it as a C string), both 64-byte aligned
    asm = ['".pushsection .rodata\\n"',
           '".balign 64\\n.globl mlc__ptx\\n.hidden mlc__ptx\\nmlc__ptx:\\n.incbin \\"module.ptx\\"\\n.byte 0\\n"']
    if cubin_size:
        asm.append('".balign 64\\n.globl mlc__cubin\\n.hidden mlc__cubin\\nmlc__cubin:\\n.incbin \\"module.cubin\\"\\n"')
    asm.append('".popsection\\n"')
    lines = ["/* The device code and its launch table (runtime_cuda.c). */",
             "__asm__(" + "\n        ".join(asm) + ");",
             'extern const char mlc__ptx[] __attribute__((visibility("hidden")));',
             'extern const unsigned char mlc__cubin[] __attribute__((visibility("hidden")));' if cubin_size else "",
             f"static const char *const cuda_kernels[] = {{{', '.join(_c_string(k) for k in names) or '0'}}};",
             f"static const uint32_t cuda_shared[] = {{{', '.join(f'{shared[k]}u' for k in names) or '0'}}};",
             f"static const mlc_cuda_slot cuda_slots[] = {{{', '.join(slots) or '{0}'}}};",
             "static const mlc_cuda_launch cuda_launches[] = {", *(rows or ["    {0},"]), "};",
             "const mlc_cuda_tables mlc__cuda_tables = {",
             f"    {_c_string(arch)},",
             f"    {'mlc__cubin' if cubin_size else 'NULL'}, {cubin_size}u,",
             "    mlc__ptx,",
             f"    {len(names)}u, cuda_kernels, cuda_shared,",
             f"    {len(gpu_module.launches)}u, cuda_launches,",
             "};", ""]
    return "\n".join(lines)


def _json(meta: dict) -> str:
    return json.dumps(meta, allow_nan=False, ensure_ascii=False)


def api_name(function: str, prefix: str) -> str:
    """An API function's name in a library exported with ``prefix``: mlc_model_run ->
    resnet_model_run."""
    return prefix + function[len("mlc"):]


def _build(cc: list[str], build: str, out: str, soname: str, prefix: str, gpu: bool = False) -> None:
    if gpu:   # the runtime that drives the GPU; the module is embedded by tables.c
        sources, libs = [os.path.join(C_DIR, "runtime_cuda.c"), "tables.c"], []
    else:
        with open(os.path.join(build, "model.o"), "rb") as f:
            parallel = b"GOMP_parallel" in f.read()   # declared only when the code has parallel loops
        sources, libs = [os.path.join(C_DIR, "runtime.c"), "tables.c", "model.o"], \
            ["-lm", *(["-lgomp"] if parallel else [])]
    renames = [f"-D{n}={api_name(n, prefix)}" for n in API_FUNCTIONS] if prefix != "mlc" else []
    args = [*cc, "-O2", "-std=gnu11", "-fPIC", "-shared", "-fvisibility=hidden", f"-I{C_DIR}", *renames, "-o", out,
            os.path.join(C_DIR, "runtime_common.c"), *sources, "-Wl,--version-script=exports.map",
            f"-Wl,-soname,{soname}", "-Wl,-Bsymbolic", "-Wl,-z,noexecstack", "-Wl,--no-undefined", *libs,
            "-lpthread", "-ldl"]
    r = subprocess.run(args, cwd=build, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise ExportError(f"building the model library failed ({' '.join(args)}):\n{r.stderr.strip()}")


def _with_trailer(linked: str, meta: dict):
    """The linked library's bytes followed by its trailer, as chunks."""
    h = hashlib.sha256()
    with open(linked, "rb") as f:
        data = f.read()
    h.update(data)
    return [data, trailer(meta, h)]


def model_header(meta: dict) -> str:
    """model.h: the C API header followed by the model's own constants."""
    with open(os.path.join(C_DIR, "mlc_model.h")) as f:
        api = f.read()
    prefix = meta.get("prefix", "mlc")
    P = prefix.upper() + "_MODEL" if prefix != "mlc" else "MLC_MODEL"
    if prefix != "mlc":   # the functions under their prefixed names, behind their own include guard
        types, functions = api.split("#ifndef MLC_MODEL_API_H", 1)
        functions = functions.replace("MLC_MODEL_API_H", f"{P}_API_H")
        for n in API_FUNCTIONS:
            functions = re.sub(rf"\b{n}\b", api_name(n, prefix), functions)
        api = types + f"#ifndef {P}_API_H" + functions
    def safe(text) -> str:   # names go into a C comment
        return str(text).replace("*/", "* /")

    t = meta["target"]
    doc = [f" * Model '{safe(meta['name'])}', exported by mlc {meta['mlc_version']} for {t['name']} ({t['triple']}, "
           f"cpu {t['cpu']})."]
    if "device" in meta:
        doc.append(" * A cuda model library: inputs and outputs are CUDA DEVICE pointers; mlc_model_create opens "
                   "the NVIDIA driver (libcuda.so.1, or $MLC_LIBCUDA).")
    defs = [f"#define {P}_NAME {_c_string(meta['name'])}",
            f"#define {P}_NUM_INPUTS {len(meta['inputs'])}",
            f"#define {P}_NUM_OUTPUTS {len(meta['outputs'])}",
            f"#define {P}_WORKSPACE_BYTES {meta['workspace_bytes']}u"]
    for kind, entries in (("INPUT", meta["inputs"]), ("OUTPUT", meta["outputs"])):
        for i, e in enumerate(entries):
            doc.append(f" *   {kind.lower()} {i}: {safe(e['name'])}: {e['dtype']}{e['shape']}")
            p = f"{P}_{kind}_{i}"
            defs += [f"#define {p}_NAME {_c_string(e['name'])}", f"#define {p}_DTYPE {_DTYPE_ENUM[e['dtype']]}",
                     f"#define {p}_NDIM {len(e['shape'])}", f"#define {p}_SHAPE {_shape(e['shape'])}",
                     f"#define {p}_NBYTES {e['nbytes']}u"]
    if meta["params"]["storage"] == "external":
        doc.append(f" * Weights: {meta['params']['file']} (pass its path to mlc_model_create, or NULL to find "
                   "it next to the library).")
    model = ["", "/* ------------------------------------------------------------------ the model", *doc,
             f" * The shape macros are initializers: int64_t shape[] = {P}_INPUT_0_SHAPE;", " */",
             f"#ifndef {P}_H", f"#define {P}_H", *defs, "#endif", ""]
    first = f"{HEADER_MARK} {meta['mlc_version']} for the model '{safe(meta['name'])}': do not edit. */\n"
    return first + api + "\n".join(model)
