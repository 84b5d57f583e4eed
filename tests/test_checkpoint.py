"""mlc.checkpoint and the tensor container under it (mlc.runtime.params): exact round trips,
the documented byte layout, every refusal, and atomic writes."""
import hashlib
import json
import os
import struct

import numpy as np
import pytest

from mlc import checkpoint
from mlc.runtime import params
from mlc.runtime.params import (
    ParamsFormatError,
    decode,
    encode,
    read_tensors,
    write_tensors,
)


def example_tree():
    r = np.random.default_rng(0)
    g = np.random.Generator(np.random.PCG64(42))
    g.random(5)
    return {
        "params": {"w": r.standard_normal((3, 4)).astype(np.float32), "b": r.standard_normal(4)},
        "layers": [{"k": np.arange(-5, 7, dtype=np.int64).reshape(3, 4)},
                   (r.random((2, 3)) > 0.5, np.float32(1.5), np.int64(-3), np.bool_(True))],
        "zero_d": np.array(7, np.int64),
        "empty": np.zeros((0, 5), np.float32),
        "others": [np.arange(4, dtype=np.int8), np.arange(4, dtype=np.uint8), np.ones(3, np.float16),
                   np.array([1, 2], np.int16), np.array([3, 4], np.int32)],
        "none": None,
        "step": 10 ** 30,
        "neg": -12,
        "lr": 0.1 + 0.2,
        "signed_zero": -0.0,
        "specials": [float("nan"), float("inf"), -float("inf"), 5e-324],
        "flag": False,
        "name": "run-α/β",
        "tup": (1, 2.5, "x", None, ()),
        "rng": g.bit_generator.state,
    }


def assert_identical(a, b, path="root"):
    """Same structure, same container and scalar types, bit-identical values."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} vs {list(b)}"
        for k in a:
            assert_identical(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}/{i}")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.tobytes() == b.tobytes(), path
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), f"{path}: {a!r} vs {b!r}"
    else:
        assert a == b, path


def test_round_trip_is_exact(tmp_path):
    tree = example_tree()
    path = tmp_path / "ckpt.mlct"
    checkpoint.save(path, tree, epoch=3, note="hello", lrs=[0.1, 0.01])
    back, meta = checkpoint.load_with_meta(path)
    assert_identical(back, tree)
    assert meta == {"epoch": 3, "note": "hello", "lrs": [0.1, 0.01]}
    assert_identical(checkpoint.load(str(path)), tree)
    # loaded arrays are independent and writable
    w = back["params"]["w"]
    assert w.flags.writeable and w.flags.owndata
    w[:] = 0
    assert_identical(checkpoint.load(path), tree)


def test_generator_state_round_trips(tmp_path):
    g = np.random.Generator(np.random.PCG64(7))
    g.standard_normal(3)
    checkpoint.save(tmp_path / "rng.mlct", {"rng": g.bit_generator.state})
    restored = np.random.Generator(np.random.PCG64())
    restored.bit_generator.state = checkpoint.load(tmp_path / "rng.mlct")["rng"]
    np.testing.assert_array_equal(restored.random(10), g.random(10))


def test_data_loader_state_is_a_checkpointable_tree(tmp_path):
    from mlc.data import DataLoader
    loader = DataLoader(np.arange(20.0), batch_size=3, seed=5)
    next(iter(loader))
    state = loader.state_dict()
    checkpoint.save(tmp_path / "s.mlct", {"loader": state})
    assert_identical(checkpoint.load(tmp_path / "s.mlct")["loader"], state)


def test_leaf_at_root_and_big_endian(tmp_path):
    a = np.arange(6, dtype=">f8").reshape(2, 3)
    checkpoint.save(tmp_path / "a.mlct", a)
    b = checkpoint.load(tmp_path / "a.mlct")
    assert b.dtype == np.dtype("=f8")
    np.testing.assert_array_equal(a, b)
    checkpoint.save(tmp_path / "s.mlct", 3.25)
    assert checkpoint.load(tmp_path / "s.mlct") == 3.25


def test_save_refuses_what_it_cannot_store(tmp_path):
    path = tmp_path / "x.mlct"
    with pytest.raises(TypeError, match=r"dict keys must be strings, got 1 at params"):
        checkpoint.save(path, {"params": {1: np.zeros(2)}})
    with pytest.raises(TypeError, match="leaf 'a/0' has unsupported type object"):
        checkpoint.save(path, {"a": [object()]})
    with pytest.raises(ValueError, match="unsupported dtype complex128"):
        checkpoint.save(path, {"c": np.zeros(2, complex)})
    with pytest.raises(ValueError, match="two array leaves share the path 'a/b'"):
        checkpoint.save(path, {"a/b": np.zeros(1), "a": {"b": np.ones(1)}})
    with pytest.raises(ValueError, match="strict-JSON"):
        checkpoint.save(path, {"a": np.zeros(1)}, loss=float("nan"))
    assert os.listdir(tmp_path) == []   # nothing written, no temporary left behind


# -- the byte layout ---------------------------------------------------------------------------

def parse(buf):
    magic, version, flags, hlen = struct.unpack_from("<8sIIQ", buf)
    header = json.loads(buf[24:24 + hlen].decode("utf-8"))
    data_start = -(-(24 + hlen) // 64) * 64
    return magic, version, flags, hlen, header, data_start


def test_layout_is_as_documented(tmp_path):
    tensors = {"a": np.arange(3, dtype=np.float32), "b": np.ones((5, 7), np.float64),
               "c": np.array(True), "d": np.zeros(0, np.int16), "e": np.arange(100, dtype=np.uint8)}
    write_tensors(tmp_path / "t.mlct", tensors, {"k": "v"})
    buf = (tmp_path / "t.mlct").read_bytes()
    magic, version, flags, hlen, header, data_start = parse(buf)
    assert (magic, version, flags) == (b"MLCTENS\0", 1, 0)
    assert header["meta"] == {"k": "v"}
    assert data_start % 64 == 0 and buf[24 + hlen:data_start] == bytes(data_start - 24 - hlen)
    assert [e["name"] for e in header["tensors"]] == list(tensors)
    for e in header["tensors"]:
        a = tensors[e["name"]]
        assert e["offset"] % 64 == 0 and (data_start + e["offset"]) % 64 == 0
        assert e["dtype"] == a.dtype.newbyteorder("<").str and e["shape"] == list(a.shape)
        assert e["nbytes"] == a.nbytes
        assert buf[data_start + e["offset"]:data_start + e["offset"] + e["nbytes"]] == a.tobytes()
    assert len(buf) == data_start + header["data_nbytes"] + 32
    assert buf[-32:] == hashlib.sha256(buf[:-32]).digest()
    assert encode(tensors, {"k": "v"}) == buf   # the file is exactly the encoded bytes


def test_every_mlc_dtype_round_trips_bit_exactly(tmp_path):
    # extremes of each integer type (uint64 beyond int64's range), big-endian input stored little-endian
    t = {"i16": np.array([-32768, -1, 0, 32767], np.int16), "u16": np.array([0, 1, 65535], ">u2"),
         "u32": np.array([0, 2 ** 31, 2 ** 32 - 1], np.uint32),
         "u64": np.array([[0, 2 ** 63], [2 ** 64 - 1, 12345678901234567890]], np.uint64)}
    write_tensors(tmp_path / "u.mlct", t, None)
    back, _ = read_tensors(tmp_path / "u.mlct")
    for k, v in t.items():
        assert back[k].dtype == v.dtype.newbyteorder("<") and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)
    header = parse((tmp_path / "u.mlct").read_bytes())[4]
    assert [e["dtype"] for e in header["tensors"]] == ["<i2", "<u2", "<u4", "<u8"]


def test_encode_decode_bytes():
    t = {"x": np.arange(12, dtype=np.int32).reshape(3, 4), "y": np.array(2.5)}
    back, meta = decode(encode(t, {"m": [1, 2]}))
    assert meta == {"m": [1, 2]} and list(back) == ["x", "y"]
    for k, v in t.items():
        assert_identical(back[k], v)
    assert decode(encode({})) == ({}, {})
    with pytest.raises(ParamsFormatError, match=r"^<bytes>: not an mlc tensor file"):
        decode(b"GIF89a" + bytes(100))


# -- refusals ---------------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "ckpt.mlct"
    checkpoint.save(path, example_tree(), epoch=1)
    return path, path.read_bytes()


def load_bytes(path, buf):
    path.write_bytes(bytes(buf))
    return checkpoint.load(path)


def test_truncated_files_say_expected_and_actual_size(saved):
    path, buf = saved
    _, _, _, hlen, _, data_start = parse(buf)
    cuts = [4, 12, 23, 24 + hlen // 2, data_start - 1, data_start + 3, len(buf) - 33, len(buf) - 32,
            len(buf) - 1]
    for cut in cuts:
        with pytest.raises(ParamsFormatError) as e:
            load_bytes(path, buf[:cut])
        msg = str(e.value)
        assert msg.startswith(str(path)) and "truncated" in msg and f"got {cut}" in msg, (cut, msg)
        if cut >= 24 + hlen + 32:   # header readable: the exact size is known
            assert f"expected {len(buf)} bytes" in msg, msg
    with pytest.raises(ParamsFormatError, match="empty"):
        load_bytes(path, b"")
    with pytest.raises(ParamsFormatError, match=f"has trailing bytes: expected {len(buf)} bytes"):
        load_bytes(path, buf + b"\0")


def flip(buf, i):
    b = bytearray(buf)
    b[i] ^= 0x01
    return b


def test_flipped_bytes_are_reported_as_corruption(saved):
    path, buf = saved
    _, _, _, hlen, _, data_start = parse(buf)
    name_at = buf.index(b'"params/w"') + 2
    places = {"header structure": 24, "header name": name_at, "header padding": 24 + hlen,
              "data start": data_start, "data end": len(buf) - 33, "trailer": len(buf) - 32,
              "trailer end": len(buf) - 1, "header length low byte": 16}
    for where, i in places.items():
        with pytest.raises(ParamsFormatError, match=r"corrupted: SHA-256 checksum mismatch") as e:
            load_bytes(path, flip(buf, i))
        assert str(e.value).startswith(str(path)), where


def test_wrong_magic_future_version_and_flags(saved):
    path, buf = saved
    with pytest.raises(ParamsFormatError, match=r"not an mlc tensor file \(bad magic\)"):
        load_bytes(path, b"PK\x03\x04" + buf[4:])
    with pytest.raises(ParamsFormatError, match="not an mlc tensor file"):
        load_bytes(path, b"hello")
    future = bytearray(buf)
    struct.pack_into("<I", future, 8, 2)
    with pytest.raises(ParamsFormatError, match=r"unsupported format version 2 \(this reader supports 1\)"):
        load_bytes(path, future)
    flagged = bytearray(buf)
    struct.pack_into("<I", flagged, 12, 4)
    with pytest.raises(ParamsFormatError, match="unsupported flags 0x4"):
        load_bytes(path, flagged)


def forge(header, data=b"", version=1):
    """A container with a valid checksum around any header: what a faulty writer could make."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    head = struct.pack("<8sIIQ", b"MLCTENS\0", version, 0, len(h)) + h
    head += bytes(-len(head) % 64)
    body = head + data
    return body + hashlib.sha256(body).digest()


def tensor(name="t", dtype="<f4", shape=(2,), offset=0, nbytes=8):
    return {"name": name, "dtype": dtype, "shape": list(shape), "offset": offset, "nbytes": nbytes}


@pytest.mark.parametrize("header, data, message", [
    (b"{not json", b"", "malformed header: not a UTF-8 JSON object"),
    (b"[1, 2]", b"", "malformed header: not a UTF-8 JSON object"),
    (b"\xff\xfe", b"", "malformed header: not a UTF-8 JSON object"),
    ({"tensors": [], "meta": {}}, b"", 'needs "tensors" \\(list\\), "data_nbytes"'),
    ({"tensors": [], "data_nbytes": 4, "meta": {}}, b"", "data_nbytes=4 does not match the file size"),
    ({"tensors": [tensor(offset=64)], "data_nbytes": 8, "meta": {}}, bytes(8),
     r"tensor 't' extends outside the data section \(bytes 64..72 of 8\)"),
    ({"tensors": [tensor(nbytes=16)], "data_nbytes": 8, "meta": {}}, bytes(8),
     "needs 8 bytes, header says 16"),
    ({"tensors": [tensor(dtype="<c8")], "data_nbytes": 8, "meta": {}}, bytes(8),
     "tensor 't': unsupported dtype '<c8'"),
    ({"tensors": [tensor(dtype="|O")], "data_nbytes": 8, "meta": {}}, bytes(8), "unsupported dtype '|O'"),
    ({"tensors": [tensor(shape=(-2,))], "data_nbytes": 8, "meta": {}}, bytes(8), "shape of non-negative ints"),
    ({"tensors": [tensor(offset=8, nbytes=0, shape=(0,))], "data_nbytes": 8, "meta": {}}, bytes(8),
     "offset 8 is not 64-byte aligned"),
    ({"tensors": [tensor(), tensor()], "data_nbytes": 8, "meta": {}}, bytes(8), "duplicate tensor name 't'"),
    ({"tensors": [{"dtype": "<f4"}], "data_nbytes": 0, "meta": {}}, b"", "entry 0 has no string name"),
    # nesting deeper than Python's JSON parser goes used to raise RecursionError
    (b'{"tensors": [], "data_nbytes": 0, "meta": ' + b"[" * 100000 + b"]" * 100000 + b"}", b"",
     "malformed header: JSON nested deeper than 256 levels"),
    (b'{"tensors": [], "data_nbytes": 0, "meta": ' + b"[" * 300 + b"]" * 300 + b"}", b"",
     "malformed header: JSON nested deeper than 256 levels"),
    ({"tensors": [tensor(shape=(0, 2 ** 70), nbytes=0)], "data_nbytes": 0, "meta": {}}, b"",
     r"tensor 't' has shape \[0, 1180591620717411303424\], which numpy cannot hold"),
])
def test_malformed_headers_with_valid_checksums(tmp_path, header, data, message):
    path = tmp_path / "bad.mlct"
    path.write_bytes(forge(header, data))
    with pytest.raises(ParamsFormatError, match=f"^{path}: .*{message}"):
        read_tensors(path)


def test_forge_matches_the_writer():
    # the forging helper lays bytes out exactly like the writer, so the cases above differ
    # from real files only in what they break
    ones = np.ones(2, "<f4")
    assert forge({"tensors": [tensor()], "data_nbytes": 8, "meta": {"a": 1}}, ones.tobytes()) == \
        encode({"t": ones}, {"a": 1})


def test_tensor_file_that_is_not_a_checkpoint(tmp_path):
    write_tensors(tmp_path / "plain.mlct", {"w": np.zeros(2)})
    with pytest.raises(ParamsFormatError, match="an mlc tensor file but not a checkpoint"):
        checkpoint.load(tmp_path / "plain.mlct")


# -- atomic writes ----------------------------------------------------------------------------

def test_failed_fsync_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.mlct"
    old = {"w": np.arange(3.0)}
    checkpoint.save(path, old)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(params.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        checkpoint.save(path, {"w": np.zeros(1000)})
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["ckpt.mlct"]
    assert_identical(checkpoint.load(path), old)


def test_disk_full_mid_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.mlct"
    old = {"w": np.arange(3.0), "step": 1}
    checkpoint.save(path, old)
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class FillsUp:
        """A file that accepts 100 bytes, then fails like a full disk."""

        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, b):
            self.written += memoryview(b).nbytes
            if self.written > 100:
                raise OSError(28, "No space left on device")
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(params.os, "fdopen", lambda fd, mode: FillsUp(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(path, {"w": np.zeros(1000), "step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["ckpt.mlct"]
    assert_identical(checkpoint.load(path), old)


def test_save_replaces_and_honours_umask(tmp_path):
    path = tmp_path / "ckpt.mlct"
    checkpoint.save(path, {"a": 1})
    checkpoint.save(path, {"a": 2})
    assert checkpoint.load(path) == {"a": 2} and os.listdir(tmp_path) == ["ckpt.mlct"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


# -- what JSON cannot say exactly is refused at save, and refused at load --------------------------

def test_save_refuses_deep_trees_and_non_string_meta_keys(tmp_path):
    path = tmp_path / "x.mlct"
    deep = np.zeros(1)
    for _ in range(5000):   # used to fail with RecursionError
        deep = [deep]
    with pytest.raises(ValueError, match=r"checkpoint: the tree nests deeper than 64 levels \(at 0/0/0/"):
        checkpoint.save(path, deep)
    ok = np.zeros(1)
    for _ in range(64):
        ok = {"a": ok}
    checkpoint.save(path, ok)
    assert_identical(checkpoint.load(path), ok)
    # meta used to come back with the key "1"
    with pytest.raises(TypeError, match=r"meta dict keys must be strings, got 1 at meta/user/cfg"):
        checkpoint.save(path, {"w": np.zeros(1)}, cfg={1: "one"})
    with pytest.raises(ValueError, match=r"nests deeper than 255 levels"):
        checkpoint.save(path, {"w": np.zeros(1)}, cfg=deep_list(300))
    assert os.listdir(tmp_path) == ["x.mlct"]


def deep_list(n):
    v = []
    for _ in range(n):
        v = [v]
    return v


def forged_checkpoint(tree, leaves, tensors=(), meta=None):
    """A checkpoint file with a valid checksum around any structure (a faulty writer's)."""
    entries, data = [], b""
    for name, a in tensors:
        data += bytes(-len(data) % 64)
        entries.append(tensor(name, a.dtype.str, a.shape, len(data), a.nbytes))
        data += a.tobytes()
    ckpt = {"format": "mlc.checkpoint", "version": 1, "tree": tree, "leaves": leaves}
    return forge({"tensors": entries, "data_nbytes": len(data), "meta": {"checkpoint": ckpt, "user": meta or {}}},
                 data)


@pytest.mark.parametrize("tree, leaves, tensors, message", [
    ({"dict": [[1, "*"]]}, [{"int": "5"}], (), r"\[string key, child\] pairs"),   # used to load as key "1"
    ({"dict": [["k", "*"], ["k", "*"]]}, [{"int": "5"}, {"int": "6"}], (), r"keys must differ"),   # one was dropped
    ({"list": "*"}, [{"int": "5"}], (), r"not a pytree structure"),   # the string was iterated: a list of one
    ("*", [{"int": " 7"}], (), r"unknown leaf record"),                 # int() takes these, save never writes them
    ("*", [{"int": "1_000"}], (), r"unknown leaf record"),
    ("*", [{"int": 1.5}], (), r"unknown leaf record"),
    ("*", [{"float": "1e999"}], (), r"unknown leaf record"),
    ("*", [{"float": 2.5}], (), r"unknown leaf record"),
    (json.loads('{"list": [' * 65 + '"*"' + ']}' * 65), [{"int": "1"}], (),
     r"nests deeper than 64 levels"),                                  # save refuses it, so load does
    ("*", [{"tensor": "t", "scalar": True}], [("t", np.ones(3, "<f4"))], r"unexpected leaf record"),
    ({"list": ["*", "*"]}, [{"tensor": "t"}, {"tensor": "t"}], [("t", np.ones(3, "<f4"))], r"KeyError\('t'\)"),
    ("*", [{"int": "1"}], [("t", np.ones(3, "<f4"))], r"tensor\(s\) 't' belong to no leaf"),
])
def test_malformed_checkpoint_structures(tmp_path, tree, leaves, tensors, message):
    path = tmp_path / "bad.mlct"
    path.write_bytes(forged_checkpoint(tree, leaves, tensors))
    with pytest.raises(ParamsFormatError, match=f"^{path}: malformed checkpoint structure: .*{message}"):
        checkpoint.load(path)


def test_forged_checkpoint_matches_the_writer(tmp_path):
    checkpoint.save(tmp_path / "a.mlct", {"w": np.ones(3, "<f4"), "n": 5})
    assert (tmp_path / "a.mlct").read_bytes() == forged_checkpoint(
        {"dict": [["w", "*"], ["n", "*"]]}, [{"tensor": "w"}, {"int": "5"}], [("w", np.ones(3, "<f4"))])


# ----------------------------------------------------------------------------- safetensors

def test_safetensors_round_trip_with_dotted_names(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    r = np.random.default_rng(3)
    tree = {"embed": {"table": r.standard_normal((5, 4)).astype(np.float32)},
            "layers": [{"w": r.standard_normal((4, 4)), "b": np.arange(4, dtype=np.int32)},
                       (np.arange(6, dtype=np.float16).reshape(2, 3)[:, ::2], np.array([True, False]))],
            "none": None, "step": np.int64(7)}
    path = tmp_path / "m.safetensors"
    checkpoint.save_safetensors(path, tree, metadata={"format": "pt"})
    flat = checkpoint.load_safetensors(path)
    want = {"embed.table": tree["embed"]["table"], "layers.0.w": tree["layers"][0]["w"],
            "layers.0.b": tree["layers"][0]["b"], "layers.1.0": tree["layers"][1][0],
            "layers.1.1": tree["layers"][1][1], "step": np.array(7, np.int64)}
    assert sorted(flat) == sorted(want)
    for k, v in want.items():
        assert flat[k].dtype == v.dtype and flat[k].shape == v.shape, k
        np.testing.assert_array_equal(flat[k], v)
        assert flat[k].flags.writeable and flat[k].flags.c_contiguous
    # the file is plain safetensors: the library reads it, and its files load here
    assert st.load_file(str(path))["layers.1.0"].tolist() == [[0.0, 2.0], [3.0, 5.0]]   # strided leaf
    st.save_file({"conv1.weight": np.full((2, 1), 3.0, np.float32)}, str(tmp_path / "pt.safetensors"))
    assert checkpoint.load_safetensors(tmp_path / "pt.safetensors")["conv1.weight"].tolist() == [[3.0], [3.0]]
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_safetensors_refusals(tmp_path):
    pytest.importorskip("safetensors")
    with pytest.raises(TypeError, match=r"leaf 'opt.lr' is a float, not a numpy array"):
        checkpoint.save_safetensors(tmp_path / "a.safetensors", {"w": np.ones(2), "opt": {"lr": 0.1}})
    with pytest.raises(TypeError, match=r"leaf 'names' has dtype <U1"):
        checkpoint.save_safetensors(tmp_path / "a.safetensors", {"names": np.array(["a", "b"])})
    with pytest.raises(ValueError, match=r"two leaves share the name 'a.b'"):
        checkpoint.save_safetensors(tmp_path / "a.safetensors", {"a.b": np.ones(1), "a": {"b": np.ones(1)}})
    assert not os.listdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such safetensors file: .*missing.safetensors"):
        checkpoint.load_safetensors(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(ParamsFormatError, match=r"bad.safetensors: not a valid safetensors file: "):
        checkpoint.load_safetensors(bad)
    good = tmp_path / "good.safetensors"
    checkpoint.save_safetensors(good, {"w": np.ones((64, 64), np.float32)})
    good.write_bytes(good.read_bytes()[:-100])   # truncated
    with pytest.raises(ParamsFormatError, match=r"good.safetensors: not a valid safetensors file: "):
        checkpoint.load_safetensors(good)
