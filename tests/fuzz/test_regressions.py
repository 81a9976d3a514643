"""One test per finding of the fuzz campaign (tools/fuzz/README.md lists them), each holding the
minimized input: the parser now refuses it with its documented error, within a time and memory
bound. Before the fixes each of these raised another exception type, hung, or allocated far
beyond the input's size."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from fuzz_helpers import peak_bytes, seeds_of, targets

from csm_app.api_schema import SpeechRequest
from csm_app.corpus import read_rows
from csm_app.inputs import InputError, read_codes, read_context
from csm_core import GenerationOptions
from pydantic import ValidationError
from csm_audio.io import AudioFileError, load_audio, read_audio
from csm_core.config import CSMConfig, ConfigError
from csm_core.weights import CheckpointError, mimi_config_beside, read_safetensors, read_torch_checkpoint
from csm_tokenizers import TokenizerFileError, load_hf_tokenizer_json, load_tokenizer


def _safetensors(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


# ---- safetensors ----
@pytest.mark.parametrize("shape", [[0, 2**62], [0] * 70])
def test_safetensors_zero_element_tensor_with_an_impossible_shape(tmp_path, shape):
    # was numpy's ValueError ("array is too big" / "maximum supported dimension is 64")
    path = tmp_path / "x.safetensors"
    path.write_bytes(_safetensors({"a": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}))
    with pytest.raises(CheckpointError, match="'a': shape must be a list of at most 32 ints"):
        read_safetensors(path)


def test_safetensors_header_nested_too_deeply(tmp_path):
    # was RecursionError out of json.loads
    path = tmp_path / "x.safetensors"
    path.write_bytes((100_000).to_bytes(8, "little") + b"[" * 100_000)
    with pytest.raises(CheckpointError, match="not UTF-8 JSON: RecursionError"):
        read_safetensors(path)


# ---- torch .pt ----
def _pt(pickle_bytes: bytes, storages=()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a/data.pkl", pickle_bytes)
        for key, data in storages:
            z.writestr(f"a/data/{key}", data)
    return buf.getvalue()


def test_torch_pickle_memo_index_is_bounded_by_the_pickle(tmp_path):
    # `}` EMPTY_DICT, `r` LONG_BINPUT 2^28: the C unpickler grew its memo to 2^29 slots (4.2 GB RSS, 20 s)
    path = tmp_path / "x.pt"
    path.write_bytes(_pt(b"\x80\x02}r\x00\x00\x00\x10."))
    with peak_bytes() as m, pytest.raises(CheckpointError, match="LONG_BINPUT names memo slot 268435456"):
        read_torch_checkpoint(path)
    assert m.peak < 50 << 20


def test_torch_stride0_view_larger_than_its_storage(tmp_path):
    # a 1-element storage viewed as [100000, 100000] with strides (0, 0): was a 37 GiB copy attempt
    p = (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
         b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00J\xa0\x86\x01\x00J\xa0\x86\x01\x00\x86K\x00K\x00\x86\x89tRs.")  # fmt: skip
    path = tmp_path / "x.pt"
    path.write_bytes(_pt(p, [("0", b"\x00\x00\x80?")]))
    with peak_bytes() as m, pytest.raises(CheckpointError, match="more elements than its storage"):
        read_torch_checkpoint(path)
    assert m.peak < 50 << 20


def test_torch_record_with_unsupported_compression(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_BZIP2) as z:
        z.writestr("a/data.pkl", b"\x80\x02}.")
    path = tmp_path / "x.pt"
    path.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="uses zip compression 12"):
        read_torch_checkpoint(path)


# ---- GGUF ----
def _gguf(tmp_path, config, quant):
    import gguf

    path = tmp_path / "x.gguf"
    w = gguf.GGUFWriter(str(path), "csm")
    w.add_string("csm.config", config)
    if isinstance(quant, str):
        w.add_string("csm.quant", quant)
    else:
        w.add_uint32("csm.quant", quant)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize(("config", "quant", "message"), [
    ("{}", "q8_0", "bad csm.config .KeyError"),  # was KeyError
    ("x", "q8_0", "bad csm.config .JSONDecodeError"),  # was JSONDecodeError
    ("{}", 5, "csm.quant must be a string"),
])  # fmt: skip
def test_gguf_config_and_quant_fields(tmp_path, config, quant, message):
    from csm_cpu.gguf_io import read_gguf
    from csm_cpu.weights import WeightError

    with pytest.raises(WeightError, match=message):
        read_gguf(_gguf(tmp_path, config, quant))


# ---- config.json ----
HF_LAYER = {"num_attention_heads": 1, "hidden_size": 2, "intermediate_size": 1, "num_hidden_layers": 1}


@pytest.mark.parametrize(("doc", "message"), [
    (b"[" * 5000, "not valid JSON .RecursionError"),  # was RecursionError
    (b'{"backbone_flavor": [1], "decoder_flavor": "x"}', "unknown model flavor"),  # was TypeError (unhashable)
    (b'{"backbone_flavor": "llama-1B", "decoder_flavor": "llama-100M", "text_vocab_size": null}', "bad config value"),
    (json.dumps({"model_type": "csm", **HF_LAYER, "num_hidden_layers": 10**9,
                 "depth_decoder_config": HF_LAYER}).encode(), "num_layers must be an integer in .1, 1024."),  # was a hang
    (json.dumps({"model_type": "csm", **HF_LAYER, "depth_decoder_config": HF_LAYER,
                 "rope_parameters": {"rope_type": "llama3"}}).encode(), "llama3 rope_parameters lack"),  # was KeyError
])  # fmt: skip
@pytest.mark.timeout(30)
def test_csm_config_refusals(tmp_path, doc, message):
    path = tmp_path / "config.json"
    path.write_bytes(doc)
    with pytest.raises(ConfigError, match=message):
        CSMConfig.from_json(path)


@pytest.mark.parametrize(("doc", "message"), [
    ({"num_attention_heads": 0}, "must be >= 1"),  # was ZeroDivisionError
    ({"frame_rate": 1e-320}, "no frame size"),  # was OverflowError
    ({"rope_parameters": 5}, "rope_parameters must be an object"),  # was AttributeError
    ({"upsampling_ratios": [0]}, "ratios must be 1 to 16 integers"),
])  # fmt: skip
def test_mimi_config_refusals(tmp_path, doc, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "mimi", **doc}))
    with pytest.raises(CheckpointError, match=message):
        mimi_config_beside(path)


# ---- tokenizers ----
def test_tokenizer_json_normalizer_of_another_type(tmp_path):
    spec = json.loads(seeds_of("tokenizer_json")["micro"])
    spec["normalizer"] = 5  # was AttributeError ('int' object has no attribute 'get')
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerFileError, match="a normalizer .'int'. is not supported"):
        load_hf_tokenizer_json(tmp_path / "tokenizer.json")


@pytest.mark.timeout(30)
def test_tokenizer_json_sparse_ids_are_refused_before_allocating(tmp_path):
    # an added token at id 2e9: frozenset(range(2e9)) of unused ids (a hang, then tens of GB)
    spec = json.loads(seeds_of("tokenizer_json")["micro"])
    spec["added_tokens"][1]["id"] = 2_000_000_000
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerFileError, match="malformed added token"):
        load_hf_tokenizer_json(tmp_path / "tokenizer.json")
    spec["added_tokens"][1]["id"] = 10**6  # within the id bound, but a sparse id space
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerFileError, match="ids must be dense"):
        load_hf_tokenizer_json(tmp_path / "tokenizer.json")


def test_sentencepiece_byte_piece_with_invalid_utf8(tmp_path):
    # found by atheris: a BYTE piece whose text is not UTF-8 made the library raise UnicodeDecodeError
    pytest.importorskip("sentencepiece")
    path = tmp_path / "tokenizer.model"
    path.write_bytes(b"\n\x0e\n\x05<unk>\x15\x00\x00\x00\x00\x18\x02\n\n\n\x01\xc2\x15\x00\x00\x00\x00\x18\x06")
    with pytest.raises(TokenizerFileError, match="not a readable SentencePiece model"):
        load_tokenizer(path)


# ---- audio ----
def _flac_claiming(frames: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(2400, np.float32), 24000, format="FLAC")
    b = bytearray(buf.getvalue())
    v = int.from_bytes(b[18:26], "big")  # STREAMINFO: rate 20 bits, channels 3, bits 5, total samples 36
    b[18:26] = ((v & ~((1 << 36) - 1)) | frames).to_bytes(8, "big")
    return bytes(b)


def test_audio_header_claiming_2_to_the_36_frames_is_not_allocated():
    # was MemoryError: soundfile allocated the claimed 256 GiB up front
    with peak_bytes() as m:
        try:
            audio, _ = read_audio(_flac_claiming(2**36 - 1))
        except AudioFileError:
            pass
        else:
            assert audio.shape[0] <= 2400
    assert m.peak < 64 << 20


def test_audio_at_1_hz_is_not_resampled_24000_fold():
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(2000, np.float32), 1, format="WAV", subtype="PCM_16")
    with peak_bytes() as m, pytest.raises(AudioFileError, match="sample rate 1 Hz is below 4000 Hz"):
        load_audio(buf.getvalue())
    assert m.peak < 16 << 20


# ---- request files, contexts, codes ----
def test_batch_context_naming_a_device_is_not_read(tmp_path):
    # a context of "/dev/zero" was read without end (the process was killed for memory)
    path = tmp_path / "requests.jsonl"
    path.write_text('{"text": "x", "context": "/dev/zero"}\n')
    with pytest.raises(InputError, match="'/dev/zero' is not a regular file"):
        read_rows(path, "wav", ("wav",), GenerationOptions())


@pytest.mark.parametrize("line", ['{"text": "x", "context": "a\\u0000b"}', '{"text": "x", "output": "a\\u0000.wav"}'])
def test_batch_names_with_a_nul_byte(tmp_path, line):
    # was ValueError: embedded null byte, out of pathlib
    path = tmp_path / "requests.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InputError, match="must be a file name|not found"):
        read_rows(path, "wav", ("wav",), GenerationOptions())


def test_context_line_nested_too_deeply(tmp_path):
    path = tmp_path / "context.jsonl"
    path.write_text("[" * 100_000 + "\n")
    with pytest.raises(InputError, match=":1: not a JSON object: RecursionError"):
        read_context(path)


def _npy_header(shape) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<i2", "fortran_order": False, "shape": shape})
    return buf.getvalue()


@pytest.mark.parametrize(("data", "message"), [
    # found by hypothesis: numpy's header parser raised tokenize.TokenError, which the CLI did not catch
    (b"\x93NUMPY\x01\x00v\x00z2147483647\x00\x00\x00\x00\x00\x00\x00\x00'descr': '<i2', 'fortran_order': False, "
     b"'shape': (32, 3), }" + b" " * 40, "not a numpy .npy array of codes"),
    # a header claiming 10^12 codes: np.load tried to allocate 1.8 TiB (MemoryError, not caught)
    (_npy_header((1, 10**12)), "header says int16 .1, 1000000000000. .2000000000000 bytes., the file holds 0"),
    # found by atheris: a 2.0 header whose 4-byte length claims 540 MB; numpy's reader allocated it
    (b"\x93NUMPY\x02\x00ue, 'shape': (4, 3), }" + b" " * 30 + b"\n" + bytes(24), ".npy header of 539780469 bytes in an? 85-byte file"),
])  # fmt: skip
def test_codes_npy_refusals(tmp_path, data, message):
    path = tmp_path / "codes.npy"
    path.write_bytes(data)
    with peak_bytes() as m, pytest.raises(InputError, match=message):
        read_codes(path)
    assert m.peak < 1 << 20


def test_codes_npy_round_trip(tmp_path):
    codes = np.arange(12, dtype=np.int16).reshape(3, 4)
    for order, name in ((codes, "c.npy"), (np.asfortranarray(codes), "f.npy")):
        np.save(tmp_path / name, order)
        got = read_codes(tmp_path / name)
        assert got.dtype == np.int64 and (got == codes).all()


# ---- HTTP body ----
@pytest.mark.parametrize(("body", "param"), [
    (b'{"input": "hi", "response_format": [1]}', "response_format"),  # was TypeError (unhashable)
    (b'{"input": "hi", "temperature": 1' + b"0" * 400 + b"}", "temperature"),  # was OverflowError
    (b'{"input": "hi", "seed": -1}', "seed"),
    (b"[" * 100_000, None),  # was RecursionError
])  # fmt: skip
def test_http_body_refusals(body, param):
    try:
        req = SpeechRequest.model_validate_json(body)
    except ValidationError as e:
        locs = [err["loc"][0] if err["loc"] else None for err in e.errors()]
        assert param in locs or (param is None and locs)
        return
    with pytest.raises(ValueError, match=param):  # accepted by the schema, refused by the options check
        GenerationOptions.from_mapping(req.options(), where="body")


def test_every_finding_input_meets_its_target_contract(scratch):
    """The fuzz targets agree: the same inputs are refusals, not violations."""
    assert targets.check(targets.TARGETS["http_body"], b'{"input": "hi", "response_format": [1]}', scratch) == "refused"
    assert targets.check(targets.TARGETS["batch"], b'{"text": "x", "context": "/dev/zero"}', scratch) == "refused"


@pytest.mark.parametrize("parser", ["safetensors", "config", "tokenizer_json", "context", "http_body"])
def test_a_5000_digit_json_number_is_each_parsers_error(tmp_path, parser):
    # json.loads raises ValueError (not JSONDecodeError) past Python's 4300-digit int limit
    number = b"1" * 5000
    if parser == "safetensors":
        (tmp_path / "x").write_bytes(_safetensors({"a": 0}).replace(b"0}", number + b"}").replace(
            (len(json.dumps({"a": 0}))).to_bytes(8, "little"), (len(json.dumps({"a": 0})) + 4999).to_bytes(8, "little")))
        with pytest.raises(CheckpointError, match="Exceeds the limit"):
            read_safetensors(tmp_path / "x")
    elif parser == "config":
        (tmp_path / "config.json").write_bytes(b'{"text_vocab_size": ' + number + b"}")
        with pytest.raises(ConfigError, match="Exceeds the limit"):
            CSMConfig.from_json(tmp_path / "config.json")
    elif parser == "tokenizer_json":
        (tmp_path / "tokenizer.json").write_bytes(b'{"model": ' + number + b"}")
        with pytest.raises(TokenizerFileError, match="Exceeds the limit"):
            load_hf_tokenizer_json(tmp_path / "tokenizer.json")
    elif parser == "context":
        (tmp_path / "c.jsonl").write_bytes(b'{"speaker": ' + number + b"}\n")
        with pytest.raises(InputError, match="Exceeds the limit"):
            read_context(tmp_path / "c.jsonl")
    else:
        with pytest.raises(ValidationError):
            SpeechRequest.model_validate_json(b'{"input": ' + number + b"}")


def test_tokenizer_json_with_a_regex_that_matches_empty(tmp_path):
    # found by atheris: `\p{N}{1,3}` edited to `\p{N}{0,3}` was accepted, then tiktoken's Rust core
    # panicked on the empty match while encoding (PanicException, a BaseException)
    spec = json.loads(seeds_of("tokenizer_json")["micro"])
    split = spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]
    split["Regex"] = split["Regex"].replace(r"\p{N}{1,3}", r"\p{N}{0,3}")
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerFileError, match="is not the Llama-3 pre-tokenizer pattern"):
        load_hf_tokenizer_json(tmp_path / "tokenizer.json")
