"""The GGUF header reader: round trips, the real Gemma file, hostile input.

``gemma_path`` comes from ``tests/fixtures/gemma.py`` via ``conftest.py``.
"""

from __future__ import annotations

import io
import pickle
import random
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import gguf
import pytest

from engines.gguf import (
    ArrayInfo,
    GGUFCorruptError,
    GGUFError,
    GGUFHeader,
    GGUFNeedMoreData,
    GGUFTruncatedError,
    GGUFUnsupportedError,
    NotARegularFileError,
    NotGGUFError,
    read_gguf_header,
    read_gguf_header_from_bytes,
)
from tests.fixtures.tiny_gguf import (
    ARRAY,
    BASE_VOCAB,
    FLOAT32,
    STRING,
    UINT32,
    raw_gguf,
    raw_kv,
    raw_string,
    raw_tensor_info,
    truncate_file,
    write_bad_magic,
    write_huge_string_length,
    write_huge_tensor_count,
    write_n_dims,
    write_raw,
    write_tiny_llama_gguf,
    write_unknown_value_type,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


def _raises(exc_type, source, **kwargs) -> GGUFError:
    """Parse ``source``, expecting ``exc_type`` with a message for a person."""
    with pytest.raises(exc_type) as info:
        if isinstance(source, bytes):
            read_gguf_header_from_bytes(source, kwargs.pop("file_size", len(source)), **kwargs)
        else:
            read_gguf_header(source, **kwargs)
    assert str(info.value) == info.value.message and info.value.message
    return info.value


def _u32(v: int) -> bytes:
    return struct.pack("<I", v)


# --------------------------------------------------------------------------- tiny model


def test_tiny_metadata_round_trips(tiny):
    h = read_gguf_header(tiny)
    assert h.version == 3
    assert h.architecture == "llama"
    assert h.name == "Tiny Test Llama"
    assert h.block_count == 2
    assert h.context_length == 512
    assert h.embedding_length == 64
    assert h.head_count == 4 and h.head_count_per_layer == [4, 4]
    assert h.head_count_kv == 2 and h.head_count_kv_per_layer == [2, 2]
    assert h.key_length == h.value_length == 16  # default: n_embd // n_head
    assert h.sliding_window is None and h.sliding_window_pattern is None
    assert h.chat_template is None
    assert h.tokens == BASE_VOCAB and h.vocab_size == len(BASE_VOCAB)
    assert h.bos_token == "<s>" and h.eos_token == "</s>"
    assert h.has_token("<0x0A>") and not h.has_token("<|im_start|>")
    assert h.duplicate_tokens == []
    assert h.file_type == 0 and h.quantization == "F32"
    assert h.file_size == tiny.stat().st_size
    assert h.alignment == 32 and h.data_offset % 32 == 0


def test_tiny_tensors_match_gguf_package(tiny):
    h = read_gguf_header(tiny)
    ref = gguf.GGUFReader(tiny)
    assert h.data_offset == ref.data_offset
    assert len(h.tensors) == len(ref.tensors) == 3 + 2 * 9
    for mine, theirs in zip(h.tensors, ref.tensors):
        assert mine.name == theirs.name
        assert mine.shape == tuple(int(d) for d in theirs.shape)
        assert mine.ggml_type == theirs.tensor_type.name
        assert mine.nbytes == int(theirs.n_bytes)
        assert h.data_offset + mine.offset == int(theirs.data_offset)
    assert h.parameter_count == sum(int(t.n_elements) for t in ref.tensors)
    assert h.tensor_data_bytes == sum(int(t.n_bytes) for t in ref.tensors)


def test_tiny_layer_bytes(tiny):
    h = read_gguf_header(tiny)
    per_layer = h.layer_tensor_bytes()
    assert list(per_layer) == [0, 1]
    assert per_layer[0] == per_layer[1]
    assert sum(per_layer.values()) + h.non_layer_bytes == h.tensor_data_bytes
    vocab = len(BASE_VOCAB)
    assert h.non_layer_bytes == 4 * (64 * vocab * 2 + 64)  # embeddings, output, output_norm


def test_tiny_options(tmp_path):
    path = write_tiny_llama_gguf(
        tmp_path / "chatml.gguf", architecture="quantum-llm", n_layers=3, f16=True,
        chat_template="{% for m in messages %}{{ m.content }}{% endfor %}",
        extra_tokens=["<|im_start|>", "<|im_end|>"], n_vocab=len(BASE_VOCAB) + 10,
    )
    h = read_gguf_header(path)
    assert h.architecture == "quantum-llm"
    assert h.block_count == 3 and h.head_count_kv == 2  # keys follow the architecture name
    assert h.chat_template.startswith("{% for m in messages")
    assert h.has_token("<|im_start|>") and h.vocab_size == len(BASE_VOCAB) + 10
    assert h.tokens[-1] == "<unused7>"
    assert h.quantization == "F16"
    assert {t.ggml_type for t in h.tensors} == {"F16", "F32"}


def test_file_object_and_bytes_sources(tiny):
    expected = read_gguf_header(tiny)
    with open(tiny, "rb") as f:
        assert read_gguf_header(f) == expected
    data = tiny.read_bytes()
    assert read_gguf_header(io.BytesIO(data)) == expected
    assert read_gguf_header(data) == expected
    assert read_gguf_header_from_bytes(bytearray(data), len(data)) == expected


def test_need_more_data_lets_a_remote_reader_fetch_and_retry(tiny):
    data = tiny.read_bytes()
    have, fetches = 16, 0
    while True:
        try:
            h = read_gguf_header_from_bytes(data[:have], len(data))
            break
        except GGUFNeedMoreData as e:
            assert have < e.needed_bytes <= len(data)
            have = min(len(data), max(e.needed_bytes, 2 * have))
            fetches += 1
    assert fetches >= 3 and have < len(data)  # the tensor data was never needed
    assert h == read_gguf_header(tiny)


def test_need_more_data_at_every_prefix(tiny):
    h = read_gguf_header(tiny)
    data = tiny.read_bytes()[: h.data_offset]
    for n in range(0, len(data), 37):
        with pytest.raises(GGUFNeedMoreData) as info:
            read_gguf_header_from_bytes(data[:n], None)
        assert info.value.needed_bytes > n


def test_large_arrays_become_placeholders_except_tokens(tmp_path):
    w = gguf.GGUFWriter(tmp_path / "arrays.gguf", "llama")
    w.add_token_list([f"t{i}" for i in range(5000)])
    w.add_token_scores([0.0] * 5000)
    w.add_token_merges([f"t{i} t{i + 1}" for i in range(5000)])
    w.add_head_count_kv([4, 0, 4])
    w.add_block_count(3)
    w.add_head_count(8)
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_array("test.flags", [True, False])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    h = read_gguf_header(tmp_path / "arrays.gguf")
    assert len(h.tokens) == 5000 and h.tokens[4999] == "t4999"
    assert h.metadata["tokenizer.ggml.scores"] == ArrayInfo("FLOAT32", 5000)
    assert h.metadata["tokenizer.ggml.merges"] == ArrayInfo("STRING", 5000)
    assert h.head_count_kv_per_layer == [4, 0, 4] and h.head_count_kv == 4
    assert h.head_count_per_layer == [8, 8, 8]
    assert h.metadata["test.nested"] == [[1, 2], [3]]
    assert h.metadata["test.flags"] == [True, False]
    assert h.tensors == () and h.tensor_data_bytes == 0 and h.quantization is None


def test_duplicate_tokens_are_reported():
    tokens = raw_kv("tokenizer.ggml.tokens", ARRAY, _u32(STRING) + struct.pack("<Q", 3)
                    + raw_string("a") + raw_string("b") + raw_string("a"))
    assert read_gguf_header(raw_gguf([tokens])).duplicate_tokens == ["a"]


_LLAMA_SCRIPT = textwrap.dedent(
    """
    import ctypes, pathlib, sys, sysconfig
    import llama_cpp
    # GGML_BACKEND_DL builds keep the CPU backends in separate libraries that
    # must be registered (in the libggml.so.0 that libllama uses) before loading.
    lib = pathlib.Path(llama_cpp.__file__).parent / "lib"
    ggml = ctypes.CDLL(str(lib / "libggml.so.0"))
    if hasattr(ggml, "ggml_backend_load_all_from_path"):
        ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        for d in (pathlib.Path(sysconfig.get_paths()["purelib"]) / "bin", lib):
            if any(d.glob("libggml-cpu*")):
                ggml.ggml_backend_load_all_from_path(str(d).encode())
    llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=128, verbose=False, seed=1)
    out = llm.create_completion("Hello world", max_tokens=5)
    print("TOKENS", llm.tokenize(b"Hello world", add_bos=False))
    print("COMPLETION", repr(out["choices"][0]["text"]), out["usage"]["completion_tokens"])
    """
)


def test_tiny_model_loads_and_generates_in_llama_cpp(tiny):
    """The fixture is a real model: llama.cpp loads it and generates. In a
    subprocess, because llama.cpp aborts the process on some bad files."""
    pytest.importorskip("llama_cpp")
    proc = subprocess.run([sys.executable, "-c", _LLAMA_SCRIPT, str(tiny)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "COMPLETION" in proc.stdout
    h = read_gguf_header(tiny)
    ids = [h.tokens.index("\u2581Hello"), h.tokens.index("\u2581world")]
    assert f"TOKENS {ids}" in proc.stdout  # the SPM vocabulary merges whole words


def test_header_and_errors_pickle(tiny):
    h = read_gguf_header(tiny)
    assert pickle.loads(pickle.dumps(h)) == h
    for err in (GGUFTruncatedError("cut", 10, 5), GGUFNeedMoreData(99), GGUFCorruptError("bad")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and back.message == err.message
    assert pickle.loads(pickle.dumps(GGUFNeedMoreData(99))).needed_bytes == 99
    assert pickle.loads(pickle.dumps(GGUFTruncatedError("cut", 10, 5))).actual_bytes == 5


# --------------------------------------------------------------------------- real Gemma


def test_gemma_header(gemma_path):
    h = read_gguf_header(gemma_path)
    assert h.architecture == "gemma3"
    assert h.block_count == 18
    assert h.chat_template is None
    assert h.tokens is not None and len(h.tokens) == 262144
    assert "<start_of_turn>" in h.tokens and h.has_token("<end_of_turn>")
    assert h.sliding_window == 512
    assert h.bos_token == "<bos>" and h.eos_token == "<eos>"
    assert h.quantization == "Q4_K_M"
    assert h.head_count == 4 and h.head_count_kv == 1
    assert h.key_length == h.value_length == 256
    assert h.context_length == 32768 and h.embedding_length == 640
    assert len(h.tensors) == 236
    assert isinstance(h.metadata["tokenizer.ggml.scores"], ArrayInfo)
    assert len(h.layer_tensor_bytes()) == 18
    last = max(h.tensors, key=lambda t: t.offset)
    assert h.data_offset + last.offset + last.nbytes == h.file_size  # fully accounted for
    assert 250_000_000 < h.parameter_count < 300_000_000


def test_gemma_truncated_tensor_data_and_header(gemma_path):
    err = _raises(GGUFTruncatedError, gemma_path, file_size=120_000_000)
    assert "declares 247 MB of tensor data but only 113 MB are present" in err.message
    assert "Download it again" in err.message
    err = _raises(GGUFTruncatedError, gemma_path, file_size=3_000_000)
    assert "inside its header" in err.message and err.actual_bytes == 3_000_000


def test_gemma_from_a_remote_prefix(gemma_path):
    size = gemma_path.stat().st_size
    with open(gemma_path, "rb") as f:
        prefix = f.read(1 << 20)
        with pytest.raises(GGUFNeedMoreData) as info:
            read_gguf_header_from_bytes(prefix, size)
        f.seek(0)
        prefix = f.read(2 * info.value.needed_bytes + (8 << 20))
    h = read_gguf_header_from_bytes(prefix, size)
    assert h.block_count == 18 and h.file_size == size


# --------------------------------------------------------------------------- hostile files


def test_bad_magic(tmp_path):
    err = _raises(NotGGUFError, write_bad_magic(tmp_path / "m.zip"))
    assert err.message == ("This is not a GGUF model file (it starts with b'PK\\x03\\x04'). It looks like a ZIP "
                           "archive, such as a PyTorch .bin/.pt checkpoint.")
    html = write_raw(tmp_path / "page.gguf", b"<!DOCTYPE html><html>" + b" " * 50)
    assert "web page" in _raises(NotGGUFError, html).message
    assert "empty" in _raises(NotGGUFError, write_raw(tmp_path / "empty", b"")).message
    _raises(NotGGUFError, write_raw(tmp_path / "short", b"PK"))
    _raises(GGUFTruncatedError, write_raw(tmp_path / "ggu", b"GGU"))
    _raises(GGUFTruncatedError, write_raw(tmp_path / "gguf", b"GGUF\x03\x00"))


def test_huge_counts(tmp_path):
    assert "tensors" in _raises(GGUFCorruptError, write_huge_tensor_count(tmp_path / "t")).message
    _raises(GGUFCorruptError, raw_gguf(kv_count=2**40))
    # a count within the limits that the file cannot hold is a truncation
    _raises(GGUFTruncatedError, write_huge_tensor_count(tmp_path / "t2", count=1000))
    _raises(GGUFTruncatedError, raw_gguf(kv_count=1000))
    arr = raw_kv("x", ARRAY, _u32(FLOAT32) + struct.pack("<Q", 2**61))
    assert "array elements" in _raises(GGUFCorruptError, raw_gguf([arr])).message


def test_huge_and_lying_string_lengths(tmp_path):
    _raises(GGUFCorruptError, write_huge_string_length(tmp_path / "s"))
    lying = raw_gguf([raw_kv("general.name", STRING, raw_string("abc", length=1000))])
    assert "general.name" in _raises(GGUFTruncatedError, lying).message
    err_like = raw_gguf([raw_kv("general.name", STRING, raw_string("abc", length=2**64 - 1))])
    _raises(GGUFCorruptError, err_like, file_size=None)


def test_too_many_dimensions(tmp_path):
    err = _raises(GGUFCorruptError, write_n_dims(tmp_path / "d"))
    assert "9 dimensions" in err.message and "bad.weight" in err.message


def test_unknown_value_type(tmp_path):
    err = _raises(GGUFCorruptError, write_unknown_value_type(tmp_path / "v"))
    assert err.message == ("The model file is corrupt: metadata key 'general.weird' has value type 99, which GGUF "
                           "does not define.")
    bad_elem = raw_kv("x", ARRAY, _u32(42) + struct.pack("<Q", 1))
    _raises(GGUFCorruptError, raw_gguf([bad_elem]))


def test_deeply_nested_arrays_do_not_recurse_forever():
    nested = _u32(ARRAY) + struct.pack("<Q", 1)
    payload = nested * 50_000 + _u32(UINT32) + struct.pack("<Q", 0)
    _raises(GGUFCorruptError, raw_gguf([raw_kv("x", ARRAY, payload)]))


@pytest.mark.parametrize("type_id", [4, 31, 200, 2**32 - 1])
def test_unknown_tensor_type(type_id):
    data = raw_gguf(tensors=[raw_tensor_info("w", [32], type_id)], data=b"\0" * 256)
    assert f"type {type_id}" in _raises(GGUFUnsupportedError, data).message


@pytest.mark.parametrize(
    "tensors, fragment",
    [
        ([raw_tensor_info("a", [8], 0, 16)], "not a multiple of the alignment"),
        ([raw_tensor_info("a", [64], 0, 0), raw_tensor_info("b", [8], 0, 128)], "overlaps"),
        ([raw_tensor_info("a", [8], 0, 64), raw_tensor_info("b", [8], 0, 0)], "overlaps"),
        ([raw_tensor_info("a", [8]), raw_tensor_info("a", [8], 0, 32)], "appears twice"),
        ([raw_tensor_info("a", [2**40, 2**40])], "impossible dimensions"),
        ([raw_tensor_info("a", [2**64 - 1])], "impossible dimensions"),
        ([raw_tensor_info("a", [33], int(gguf.GGMLQuantizationType.Q4_0))], "block size"),
    ],
)
def test_bad_tensor_records(tensors, fragment):
    assert fragment in _raises(GGUFCorruptError, raw_gguf(tensors=tensors, data=b"\0" * 1024)).message


def test_bad_metadata():
    dup = raw_kv("k", UINT32, _u32(1))
    assert "twice" in _raises(GGUFCorruptError, raw_gguf([dup, dup])).message
    align = raw_kv("general.alignment", UINT32, _u32(24))
    assert "power of two" in _raises(GGUFCorruptError, raw_gguf([align])).message
    ok = raw_kv("general.alignment", UINT32, _u32(64))
    h = read_gguf_header_from_bytes(raw_gguf([ok], [raw_tensor_info("w", [16])], alignment=64,
                                              data=b"\0" * 64), None)
    assert h.alignment == 64 and h.data_offset % 64 == 0


def test_unsupported_versions_and_big_endian(tmp_path):
    assert "version 1" in _raises(GGUFUnsupportedError, raw_gguf(version=1)).message
    assert "version 99" in _raises(GGUFUnsupportedError, raw_gguf(version=99)).message
    assert read_gguf_header_from_bytes(raw_gguf(version=2), None).version == 2
    w = gguf.GGUFWriter(tmp_path / "be.gguf", "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    assert "big-endian" in _raises(GGUFUnsupportedError, tmp_path / "be.gguf").message


def test_truncated_anywhere_in_the_header(tiny, tmp_path):
    h = read_gguf_header(tiny)
    data = tiny.read_bytes()
    for keep in list(range(1, h.data_offset, 53)) + [h.data_offset - 1]:
        cut = write_raw(tmp_path / "cut.gguf", data[:keep])
        err = _raises(GGUFTruncatedError, cut)
        # cut inside the header: sizes of the file; in the padding: of the tensor data
        assert (err.actual_bytes, err.expected_bytes > keep) in ((keep, True), (0, True))
        _raises(GGUFTruncatedError, data[:keep])  # bytes with the true (short) size


def test_truncated_in_the_tensor_data(tiny, tmp_path):
    h = read_gguf_header(tiny)
    cut = truncate_file(write_raw(tmp_path / "c.gguf", tiny.read_bytes()), h.data_offset + 1000)
    err = _raises(GGUFTruncatedError, cut)
    assert err.expected_bytes == h.tensors[-1].offset + h.tensors[-1].nbytes
    assert err.actual_bytes == 1000
    assert "of tensor data but only 1.0 KB are present" in err.message
    # the exact size is fine, one byte short is not
    exact = h.data_offset + h.tensors[-1].offset + h.tensors[-1].nbytes
    assert exact == tiny.stat().st_size
    read_gguf_header(tiny, file_size=exact)
    _raises(GGUFTruncatedError, tiny, file_size=exact - 1)


def test_header_size_limit(tiny):
    err = _raises(GGUFCorruptError, tiny, max_header_bytes=4096)
    assert err.message == ("The model file is corrupt: metadata key 'tokenizer.ggml.scores' declares 409 array "
                           "elements, more than fit in the 4.1 KB limit for a GGUF header.")
    data, have = tiny.read_bytes(), 8
    with pytest.raises(GGUFCorruptError):  # never asks a remote reader for more than the limit
        while True:
            try:
                read_gguf_header_from_bytes(data[:have], None, max_header_bytes=4096)
            except GGUFNeedMoreData as e:
                assert e.needed_bytes <= 4096
                have = e.needed_bytes


def test_random_corruption_only_raises_gguf_errors(tiny):
    """A cheap stand-in for property-based fuzzing: flip bytes in the header."""
    h = read_gguf_header(tiny)
    data = tiny.read_bytes()
    rng = random.Random(1234)
    outcomes: dict[str, int] = {}
    for _ in range(400):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(h.data_offset)
            buf[pos] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
        try:
            read_gguf_header_from_bytes(bytes(buf), len(buf))
            name = "ok"
        except GGUFError as e:
            assert not isinstance(e, GGUFNeedMoreData)  # the whole file was given
            name = type(e).__name__
        outcomes[name] = outcomes.get(name, 0) + 1
    assert len(outcomes) >= 3, outcomes


def test_header_is_frozen(tiny):
    h = read_gguf_header(tiny)
    with pytest.raises(AttributeError):
        h.version = 2  # type: ignore[misc]
    assert isinstance(h, GGUFHeader)


# --------------------------------------------------------------------------- not regular files (D7)


posix_only = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs, sockets and /dev/zero are POSIX")


@posix_only
def test_a_fifo_is_refused_without_blocking(tmp_path):
    """A plain open() of a FIFO waits for a writer for ever; the reader must not."""
    import os

    fifo = tmp_path / "x.gguf"
    os.mkfifo(fifo)
    with pytest.raises(NotARegularFileError) as info:
        read_gguf_header(fifo)
    assert info.value.message == str(info.value) == "x.gguf is not a regular file (it is a FIFO (named pipe))."
    assert info.value.filename == str(fifo)
    back = pickle.loads(pickle.dumps(info.value))
    assert type(back) is NotARegularFileError and back.message == info.value.message


@posix_only
def test_devices_sockets_and_folders_are_refused(tmp_path):
    import socket

    sock_path = tmp_path / "s.gguf"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        cases = {Path("/dev/zero"): "zero is not a regular file (it is a character device).",
                 tmp_path: f"{tmp_path.name} is not a regular file (it is a folder).",
                 sock_path: "s.gguf is not a regular file (it is a socket)."}
        for path, message in cases.items():
            with pytest.raises(NotARegularFileError) as info:
                read_gguf_header(path)
            assert info.value.message == message
    finally:
        server.close()


@posix_only
def test_check_model_file_says_a_fifo_is_not_a_model(tmp_path):
    import os

    from engines.errors import EngineError, ErrorKind
    from engines.gguf.model_file import check_model_file

    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    with pytest.raises(EngineError) as info:
        check_model_file(fifo)
    assert info.value.kind == ErrorKind.MODEL_FILE
    assert info.value.message == "fifo.gguf is not a regular file (it is a FIFO (named pipe))."


def test_a_file_swapped_for_a_fifo_after_a_check_is_still_refused(tmp_path, tiny):
    """The kind is checked on the descriptor that was opened, not on the path before."""
    import os

    if sys.platform == "win32":
        pytest.skip("no FIFOs on Windows")
    path = tmp_path / "m.gguf"
    path.write_bytes(tiny.read_bytes())
    assert read_gguf_header(path).architecture == "llama"
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(NotARegularFileError):
        read_gguf_header(path)
