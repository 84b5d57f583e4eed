"""Target: what the code is generated for (triple, CPU name and features, cores,
vector width, cache sizes).

``Target.host()`` reads the running machine through LLVM and sysfs;
``Target.from_name`` knows a few common CPUs and GPUs; ``Target.from_file`` reads a
JSON description of new hardware (docs/targets.md). ``Target.get`` accepts any of these.
"""
from __future__ import annotations

import glob
import json
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass

KiB, MiB = 1024, 1024 * 1024
DEFAULT_CACHES = {"l1d": 32 * KiB, "l2": 512 * KiB, "l3": 8 * MiB}   # when the host does not tell
KINDS = ("cpu", "cuda")
# Conv layout thresholds, measured on a 2-core AVX2 host (passes/layout.py); a target file may set them.
LAYOUT_DEFAULTS = {"conv_direct_min_width": 16, "conv_strided_direct_min_width": 64}
CEILINGS = ("peak_gflops", "bandwidth_gbs")   # a target file may give them; else measured on the host


_LLVM_INIT_LOCK = threading.Lock()
_LLVM_INITIALIZED = False


def init_llvm() -> None:
    """Initialize LLVM once per process: the host's backend and every backend llvmlite
    carries (AArch64, RISC-V, NVPTX, ...), so objects can be cross-compiled."""
    global _LLVM_INITIALIZED
    import llvmlite.binding as llvm
    with _LLVM_INIT_LOCK:
        if not _LLVM_INITIALIZED:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            llvm.initialize_all_targets()
            llvm.initialize_all_asmprinters()
            _LLVM_INITIALIZED = True


def llvm_host_info() -> tuple[str, str, str]:
    """The running machine as LLVM names it: (triple, CPU, features)."""
    import llvmlite.binding as llvm
    init_llvm()
    return llvm.get_process_triple(), llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


@dataclass(frozen=True)
class Target:
    triple: str
    cpu: str
    features: str
    cores: int                 # CPU cores to run on (cuda: streaming multiprocessors)
    vector_bytes: int          # width of one SIMD register
    name: str = ""             # "host", a named target, or the name given in a JSON file; "" -> cpu
    kind: str = "cpu"          # "cpu" or "cuda"
    l1d_bytes: int = DEFAULT_CACHES["l1d"]   # per core (cuda: per SM)
    l2_bytes: int = DEFAULT_CACHES["l2"]     # per core (cuda: the whole device's)
    l3_bytes: int = DEFAULT_CACHES["l3"]     # shared; 0 when there is none
    arch: str = ""             # cuda only: "sm_90"
    # conv layout (passes/layout.py): a conv moves to the matrix form (im2col + matmul) when its
    # output rows are narrower than this, from which the direct kernel fills its vector tiles ...
    conv_direct_min_width: int = LAYOUT_DEFAULTS["conv_direct_min_width"]
    # ... or, when it is strided (its reads are not contiguous), narrower than this
    conv_strided_direct_min_width: int = LAYOUT_DEFAULTS["conv_strided_direct_min_width"]
    # the roofline's ceilings (exe.profile): all cores' float32 FMA throughput and the memory
    # bandwidth; 0: unknown, measured on the host when a profile needs them (driver.machine_ceilings)
    peak_gflops: float = 0.0
    bandwidth_gbs: float = 0.0

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", self.cpu)
        problem = _field_problem(self)
        if problem:
            raise ValueError(f"Target {self.name!r}: {problem}")

    # ------------------------------------------------------------------ constructors

    @staticmethod
    def host() -> Target:
        triple, cpu, features = llvm_host_info()
        feats = set(features.split(","))
        vb = 64 if "+avx512f" in feats else 32 if ("+avx2" in feats or "+avx" in feats) else 16
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        c = host_caches()
        return Target(triple, cpu, features, cores, vb, name="host",
                      l1d_bytes=c["l1d"], l2_bytes=c["l2"], l3_bytes=c["l3"])

    @staticmethod
    def from_name(name: str) -> Target:
        spec = NAMED.get(name)
        if spec is None:
            raise ValueError(f"unknown target {name!r}; known targets: host, {', '.join(NAMED)} "
                             f"(or a .json file describing the hardware)")
        return _build({**spec, "name": name}, f"named target {name!r}")

    @staticmethod
    def from_file(path: str) -> Target:
        """A target described by a JSON file (format: docs/targets.md)."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ValueError(f"cannot read target file {path}: {e.strerror or e}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
        return Target.from_json(data, source=path)

    @staticmethod
    def from_json(data: dict, source: str = "target description") -> Target:
        """A target from a parsed JSON object; ``source`` names it in error messages."""
        if not isinstance(data, dict):
            # bad file content: a ValueError like every other problem in the file
            raise ValueError(f"{source}: a target is a JSON object, got {type(data).__name__}")  # noqa: TRY004
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise ValueError(f"{source}: unknown key {unknown[0]!r}; a target has the keys {', '.join(_KEYS)}")
        spec: dict = {}
        if "base" in data:
            base = data["base"]
            if not isinstance(base, str) or base not in NAMED:
                raise ValueError(f"{source}: 'base' must name a known target ({', '.join(NAMED)}), got {base!r}")
            spec = {**NAMED[base], "caches": dict(NAMED[base]["caches"])}
        for key, value in data.items():
            if key == "caches":
                if not isinstance(value, dict):
                    raise ValueError(f"{source}: 'caches' must be an object with l1d, l2, l3, got {value!r}")
                bad = sorted(set(value) - set(_CACHE_KEYS))
                if bad:
                    raise ValueError(f"{source}: unknown key 'caches.{bad[0]}'; caches has l1d, l2 and l3")
                spec["caches"] = {**spec.get("caches", {}), **value}
            elif key != "base":
                spec[key] = value
        missing = [k for k in _REQUIRED if k not in spec]
        missing += [f"caches.{k}" for k in _CACHE_KEYS if "caches" in spec and k not in spec["caches"]]
        if spec.get("kind") == "cuda" and "arch" not in spec:
            missing.append("arch")
        if missing:
            raise ValueError(f"{source}: missing required key {missing[0]!r}" +
                             ("" if "base" in data else " (or name a known target in 'base' to inherit from)"))
        return _build(spec, source)

    @staticmethod
    def get(spec: Target | str | dict | None) -> Target:
        """A Target, None/"host"/"llvm" (this machine), "cuda" (the current CUDA device;
        under ``MLC_CUDA_EMULATE=1`` without a device, ``cuda-sm90``), a named target, a
        path to a .json target file, or a parsed JSON dict."""
        if isinstance(spec, Target):
            return spec
        if spec in (None, "host", "llvm"):
            return _host()
        if isinstance(spec, dict):
            return Target.from_json(spec)
        if isinstance(spec, (str, os.PathLike)):
            s = os.fspath(spec)
            if s == "cuda":
                return _current_cuda()
            if s in NAMED:
                return Target.from_name(s)
            if s.endswith(".json") or os.path.isfile(s):
                return Target.from_file(s)
            return Target.from_name(s)   # raises, listing the known names
        raise TypeError(f"target must be a Target, a name, a .json path or a dict, got {type(spec).__name__}")

    # ------------------------------------------------------------------ properties

    @property
    def key(self) -> str:
        """Identifies generated code: two targets with the same key run the same code."""
        key = (f"{self.kind}|{self.triple}|{self.cpu}|{self.features}|{self.vector_bytes}|"
               f"{self.l1d_bytes}/{self.l2_bytes}/{self.l3_bytes}")
        layout = self.layout_thresholds()
        # only thresholds that differ from the defaults extend the key (so existing keys stay valid)
        return key if layout == LAYOUT_DEFAULTS else key + "|" + "/".join(map(str, layout.values()))

    @property
    def is_host(self) -> bool:
        """Whether code for this target can be loaded into this process: a CPU target of
        the host's architecture. (A CPU feature the host lacks still faults at run time.)"""
        return self.kind == "cpu" and _arch(self.triple) == _arch(_host().triple)

    def layout_thresholds(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in LAYOUT_DEFAULTS}

    def lanes(self, itemsize: int) -> int:
        return max(1, self.vector_bytes // itemsize)

    def to_json(self) -> dict:
        """The JSON object ``from_json`` reads back into an equal Target."""
        d = {"name": self.name, "kind": self.kind, "triple": self.triple, "cpu": self.cpu,
             "features": self.features, "cores": self.cores, "vector_bytes": self.vector_bytes,
             "caches": {"l1d": self.l1d_bytes, "l2": self.l2_bytes, "l3": self.l3_bytes}}
        if self.arch:
            d["arch"] = self.arch
        d.update(self.layout_thresholds())
        d.update({k: getattr(self, k) for k in CEILINGS if getattr(self, k)})
        return d

    def __str__(self) -> str:
        units = "SMs" if self.kind == "cuda" else "cores"
        what = self.cpu if self.name in ("host", self.cpu) else f"{self.name}: {self.cpu}"
        return f"{what} ({self.triple}, {self.cores} {units}, {self.vector_bytes * 8}-bit vectors)"


# ----------------------------------------------------------------------------- named targets
# Core counts are a typical part's (noted); a JSON file with "base" overrides them.

NAMED: dict[str, dict] = {
    "znver3": {   # AMD Zen 3 (Ryzen 5000, EPYC 7003); 16 cores as a Ryzen 9 5950X
        "kind": "cpu", "triple": "x86_64-unknown-linux-gnu", "cpu": "znver3", "features": "+avx2,+fma",
        "cores": 16, "vector_bytes": 32, "caches": {"l1d": "32K", "l2": "512K", "l3": "32M"}},
    "skylake-avx512": {   # Intel Xeon Scalable (Skylake-SP); 20 cores as a Xeon Gold 6148
        "kind": "cpu", "triple": "x86_64-unknown-linux-gnu", "cpu": "skylake-avx512",
        "features": "+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx2,+fma",
        "cores": 20, "vector_bytes": 64, "caches": {"l1d": "32K", "l2": "1M", "l3": "28160K"}},
    "neoverse-n1": {   # Arm Neoverse N1 (AWS Graviton2: 64 cores, 32 MiB system cache)
        "kind": "cpu", "triple": "aarch64-unknown-linux-gnu", "cpu": "neoverse-n1", "features": "+neon",
        "cores": 64, "vector_bytes": 16, "caches": {"l1d": "64K", "l2": "1M", "l3": "32M"}},
    "cortex-a72": {   # Arm Cortex-A72 (Raspberry Pi 4: 4 cores, 1 MiB L2, no L3)
        "kind": "cpu", "triple": "aarch64-unknown-linux-gnu", "cpu": "cortex-a72", "features": "+neon",
        "cores": 4, "vector_bytes": 16, "caches": {"l1d": "32K", "l2": "1M", "l3": 0}},
    "sifive-u74": {   # SiFive U74 RV64GC (StarFive JH7110: 4 cores, 2 MiB L2); no vector unit,
        # so 8 bytes: one 64-bit FP register
        "kind": "cpu", "triple": "riscv64-unknown-linux-gnu", "cpu": "sifive-u74", "features": "+m,+a,+f,+d,+c",
        "cores": 4, "vector_bytes": 8, "caches": {"l1d": "32K", "l2": "2M", "l3": 0}},
    "rv64gcv": {   # any RV64GC core with the V extension; 16 bytes = the smallest VLEN V allows
        "kind": "cpu", "triple": "riscv64-unknown-linux-gnu", "cpu": "generic-rv64", "features": "+m,+a,+f,+d,+c,+v",
        "cores": 4, "vector_bytes": 16, "caches": {"l1d": "32K", "l2": "1M", "l3": 0}},
    "cuda-sm80": {   # NVIDIA Ampere (A100: 108 SMs, 192 KiB L1/shared per SM, 40 MiB L2)
        "kind": "cuda", "triple": "nvptx64-nvidia-cuda", "cpu": "sm_80", "features": "+ptx70", "arch": "sm_80",
        "cores": 108, "vector_bytes": 16, "caches": {"l1d": "192K", "l2": "40M", "l3": 0}},
    "cuda-sm90": {   # NVIDIA Hopper (H100 SXM: 132 SMs, 256 KiB L1/shared per SM, 50 MiB L2)
        "kind": "cuda", "triple": "nvptx64-nvidia-cuda", "cpu": "sm_90", "features": "+ptx78", "arch": "sm_90",
        "cores": 132, "vector_bytes": 16, "caches": {"l1d": "256K", "l2": "50M", "l3": 0}},
}


def _current_cuda() -> Target:
    """The target ``cuda`` names: the current device, read through CuPy (architecture,
    SMs, shared memory per SM, L2). Without a device, ``cuda-sm90`` when GPU code is
    emulated on the CPU (``MLC_CUDA_EMULATE=1``); else a ValueError naming the choices."""
    device = _cuda_device()
    if device is not None:
        major, minor = device["major"], device["minor"]
        ptx = "+ptx78" if major >= 9 else "+ptx70" if major >= 8 else "+ptx64"
        return Target("nvptx64-nvidia-cuda", f"sm_{major}{minor}", ptx, device["sms"], 16, name="cuda",
                      kind="cuda", l1d_bytes=device["shared_per_sm"] or DEFAULT_CACHES["l1d"],
                      l2_bytes=device["l2"], l3_bytes=0, arch=f"sm_{major}{minor}")
    if os.environ.get("MLC_CUDA_EMULATE", "").strip().lower() not in ("", "0", "false", "no", "off"):
        return Target.from_name("cuda-sm90")
    raise ValueError("target 'cuda' means the current CUDA device, and none was found (it is read through CuPy: "
                     "pip install 'mlc[gpu]'): name a CUDA target (cuda-sm80, cuda-sm90), or set MLC_CUDA_EMULATE=1 "
                     "to run GPU schedules on the CPU")


def _cuda_device() -> dict | None:
    """The current CUDA device's properties, or None when CuPy or a device is missing."""
    try:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    except Exception:   # no CuPy, no driver, no device
        return None
    return {"major": int(props["major"]), "minor": int(props["minor"]), "sms": int(props["multiProcessorCount"]),
            "shared_per_sm": int(props.get("sharedMemPerMultiprocessor", 0)), "l2": int(props["l2CacheSize"])}


_KEYS = ("name", "base", "kind", "triple", "cpu", "features", "arch", "cores", "vector_bytes", "caches",
         *LAYOUT_DEFAULTS, *CEILINGS)
_REQUIRED = ("name", "triple", "cpu", "cores", "vector_bytes", "caches")
_CACHE_KEYS = ("l1d", "l2", "l3")


def _build(spec: dict, source: str) -> Target:
    """Check every value of a target description (naming the key), then ask LLVM."""
    def need(key, ok, what):
        value = spec[key]
        if not ok(value):
            raise ValueError(f"{source}: {key!r} must be {what}, got {value!r}")
        return value

    name = need("name", lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")
    kind = spec.get("kind", "cpu")
    if kind not in KINDS:
        raise ValueError(f"{source}: 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    triple = need("triple", lambda v: isinstance(v, str) and re.fullmatch(r"[\w.]+(-[\w.]+)+", v or ""),
                  "an LLVM target triple such as 'aarch64-unknown-linux-gnu'")
    cpu = need("cpu", lambda v: isinstance(v, str) and v.strip() != "", "an LLVM CPU name such as 'neoverse-n1'")
    features = spec.get("features", "")
    if isinstance(features, list):
        features = ",".join(features) if all(isinstance(f, str) for f in features) else None
    if not isinstance(features, str) or any(f and f[0] not in "+-" for f in features.split(",")):
        raise ValueError(f"{source}: 'features' must be LLVM features like '+neon,+fp16' (a string or a list "
                         f"of strings, each starting with + or -), got {spec.get('features')!r}")
    cores = need("cores", lambda v: _is_int(v) and v >= 1, "a whole number >= 1")
    vb = need("vector_bytes", lambda v: _is_int(v) and 1 <= v <= 256 and v & (v - 1) == 0,
              "the SIMD register width in bytes, a power of two from 1 to 256 (16 for NEON/SSE, 32 for AVX2)")
    caches = {}
    for k in _CACHE_KEYS:
        v = spec["caches"][k]
        try:
            caches[k] = parse_size(v)
        except ValueError as e:
            raise ValueError(f"{source}: 'caches.{k}': {e}") from None
    if caches["l1d"] == 0:
        raise ValueError(f"{source}: 'caches.l1d' must be more than 0")
    arch = spec.get("arch", "")
    if kind == "cuda":
        if not isinstance(arch, str) or not re.fullmatch(r"sm_\d+a?", arch):
            raise ValueError(f"{source}: 'arch' must be a CUDA architecture such as 'sm_90', got {arch!r}")
        if not triple.startswith("nvptx"):
            raise ValueError(f"{source}: 'triple' of a cuda target must be nvptx64-nvidia-cuda, got {triple!r}")
    elif arch:
        raise ValueError(f"{source}: 'arch' is for cuda targets only (this one has kind {kind!r})")
    layout = {k: spec.get(k, default) for k, default in LAYOUT_DEFAULTS.items()}
    for k, v in layout.items():
        if not (_is_int(v) and v >= 1):
            raise ValueError(f"{source}: {k!r} must be a whole number >= 1 (output columns), got {v!r}")
    ceilings = {k: spec.get(k, 0.0) for k in CEILINGS}
    for k, v in ceilings.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"{source}: {k!r} must be a number >= 0 (0: measure it on the host), got {v!r}")
    check_llvm(triple, cpu, features, source)
    return Target(triple, cpu, features, cores, vb, name=name, kind=kind, l1d_bytes=caches["l1d"],
                  l2_bytes=caches["l2"], l3_bytes=caches["l3"], arch=arch, **layout,
                  **{k: float(v) for k, v in ceilings.items()})


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _field_problem(t: Target) -> str | None:
    """What is wrong with a directly constructed Target, if anything."""
    if t.kind not in KINDS:
        return f"kind must be one of {', '.join(KINDS)}, got {t.kind!r}"
    if not (_is_int(t.cores) and t.cores >= 1):
        return f"cores must be a whole number >= 1, got {t.cores!r}"
    if not (_is_int(t.vector_bytes) and t.vector_bytes >= 1):
        return f"vector_bytes must be a whole number >= 1, got {t.vector_bytes!r}"
    for f in ("l1d_bytes", "l2_bytes", "l3_bytes"):
        v = getattr(t, f)
        if not (_is_int(v) and v >= 0):
            return f"{f} must be a whole number of bytes >= 0, got {v!r}"
    for f in LAYOUT_DEFAULTS:
        v = getattr(t, f)
        if not (_is_int(v) and v >= 1):
            return f"{f} must be a whole number >= 1, got {v!r}"
    if (t.kind == "cuda") != bool(t.arch):
        return "a cuda target needs arch (such as 'sm_90'); a cpu target has none"
    return None


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?\s*", re.IGNORECASE)


def parse_size(v) -> int:
    """Bytes from an int or a string such as "32K", "32768K", "1M", "1.5MiB" (K = 1024,
    as sysfs and cache specifications use it)."""
    if _is_int(v):
        if v < 0:
            raise ValueError(f"a cache size cannot be negative, got {v}")
        return v
    m = _SIZE.fullmatch(v) if isinstance(v, str) else None
    if m is None:
        raise ValueError(f"cannot read {v!r} as a size: give bytes (32768) or a string such as '32K', '1M', '1.5M'")
    n = float(m.group(1)) * {"": 1, "K": KiB, "M": MiB, "G": 1024 * MiB}[m.group(2).upper()]
    if n != int(n):
        raise ValueError(f"{v!r} is not a whole number of bytes")
    return int(n)


def host_caches(root: str = "/sys/devices/system/cpu/cpu0/cache") -> dict[str, int]:
    """{"l1d", "l2", "l3"} in bytes from Linux sysfs (index*/level, type, size); a level
    sysfs does not report keeps its default from DEFAULT_CACHES."""
    found: dict[str, int] = {}
    for d in sorted(glob.glob(os.path.join(root, "index*"))):
        try:
            level = int(_read(d, "level"))
            typ = _read(d, "type")
            size = parse_size(_read(d, "size"))
        except (OSError, ValueError):
            continue
        key = {1: "l1d", 2: "l2", 3: "l3"}.get(level)
        if key and typ != "Instruction" and size > 0:
            found[key] = size
    return {**DEFAULT_CACHES, **found}


def _read(d: str, name: str) -> str:
    with open(os.path.join(d, name)) as f:
        return f.read().strip()


def _arch(triple: str) -> str:
    a = triple.split("-", 1)[0]
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(a, a)


_CHECKED: set = set()
_STDERR_LOCK = threading.Lock()


def check_llvm(triple: str, cpu: str, features: str, source: str = "target") -> None:
    """ValueError naming the key when LLVM does not know the triple, the CPU or a feature."""
    if (triple, cpu, features) in _CHECKED:
        return
    import llvmlite.binding as llvm
    init_llvm()
    try:
        t = llvm.Target.from_triple(triple)
    except RuntimeError as e:
        raise ValueError(f"{source}: 'triple': LLVM does not know {triple!r} ({e})") from None
    # LLVM only prints (to stderr) that it ignores an unknown CPU or feature: read what it prints
    messages = _stderr_of(lambda: t.create_target_machine(cpu=cpu, features=features, opt=0, reloc="pic",
                                                          codemodel="default"))
    for line in messages.splitlines():
        if "not a recognized processor" in line:
            raise ValueError(f"{source}: 'cpu': LLVM does not know the CPU {cpu!r} for {triple}")
        if "not a recognized feature" in line:
            bad = line.split("'")[1] if line.count("'") >= 2 else line
            raise ValueError(f"{source}: 'features': LLVM does not know the feature {bad!r} for {triple}")
    _CHECKED.add((triple, cpu, features))


def _stderr_of(fn) -> str:
    """What ``fn`` writes to file descriptor 2 (LLVM writes there, not to sys.stderr)."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            fn()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        return tmp.read().decode(errors="replace")


_HOST: Target | None = None


def _host() -> Target:
    global _HOST
    if _HOST is None:
        _HOST = Target.host()
    return _HOST
