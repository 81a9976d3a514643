"""Every parser of outside data, fed mutated valid inputs: a valid object or the documented error.

Inputs are the target's seeds (tools/fuzz/targets.py) with bytes flipped, cut, spliced, or a
size field overwritten with a hostile integer; JSON formats also get their documents edited
structurally (a value anywhere replaced by another JSON value). Examples are bounded and
derandomized, so a run is repeatable; tools/fuzz/fuzz.py runs the same targets coverage-guided.
Each input is also held to the allocation bound (targets.MAX_ALLOC, traced by tracemalloc).
"""

from __future__ import annotations

import json

import pytest
from fuzz_helpers import seeds_of, targets, tracing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = 40
fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

# sizes a header might claim: around the int32/int64 limits, 10^12, and small edge values
HOSTILE_INTS = [0, 1, 2**31 - 1, 2**31, 2**32, 2**48, 10**12, 2**63 - 1, 2**64 - 1, -1]


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "byte", "insert", "delete", "truncate", "int", "digits"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[i:]
        elif op == "int":
            v = draw(st.sampled_from(HOSTILE_INTS)) % 2**64
            data[i : i + 8] = v.to_bytes(8, "little")
        else:  # a number where a JSON header may hold one
            data[i:i] = str(draw(st.sampled_from(HOSTILE_INTS))).encode()
    return bytes(data)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_mutated_seeds_meet_the_contract(name, scratch):
    target, seeds = targets.TARGETS[name], list(seeds_of(name).values())
    assert seeds, f"{name}: no seeds"
    for seed in seeds:  # the seeds themselves are valid
        assert targets.check(target, seed, scratch) == "ok", name

    @fuzz_settings
    @given(mutated(seeds))
    def prop(data):
        targets.bounded_check(target, data, scratch)  # ContractViolation: an undocumented error, or > 512 MiB

    with tracing():
        prop()


# ---- JSON formats: structural edits ----
json_values = st.recursive(
    st.none() | st.booleans() | st.sampled_from(HOSTILE_INTS) | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


@st.composite
def edited(draw, doc):
    """doc with one value anywhere replaced (or a key deleted, or an unknown key added)."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        node = doc
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            child = node[draw(st.sampled_from(keys))]
            if not isinstance(child, (dict, list)) or not child:
                break
            node = child
        if isinstance(node, dict):
            key = draw(st.sampled_from(list(node) + ["unknown_key"]))
            if key in node and draw(st.booleans()):
                del node[key]
            else:
                node[key] = draw(json_values)
        elif isinstance(node, list) and node:
            node[draw(st.integers(0, len(node) - 1))] = draw(json_values)
    return doc


def _json_docs(name: str) -> list:
    out = []
    for data in seeds_of(name).values():
        text = data.decode()
        if name in ("batch", "context"):
            out.append([json.loads(line) for line in text.splitlines() if line.strip()])
        else:
            out.append(json.loads(text))
    return out


def _encode(name: str, doc) -> bytes:
    if name in ("batch", "context") and isinstance(doc, list):
        return "\n".join(json.dumps(row) for row in doc).encode()
    return json.dumps(doc).encode()


@pytest.mark.parametrize("name", ["config", "tokenizer_json", "batch", "context", "http_body"])
def test_edited_json_documents_meet_the_contract(name, scratch):
    target = targets.TARGETS[name]

    @fuzz_settings
    @given(st.sampled_from(_json_docs(name)).flatmap(edited))
    def prop(doc):
        targets.bounded_check(target, _encode(name, doc), scratch)

    with tracing():
        prop()


def test_edited_safetensors_headers_meet_the_contract(scratch):
    """The header JSON edited in place, the data buffer kept (offsets, shapes, dtypes all hostile)."""
    target = targets.TARGETS["safetensors"]
    data = seeds_of("safetensors")["mixed"]
    n = int.from_bytes(data[:8], "little")
    header, body = json.loads(data[8 : 8 + n]), data[8 + n :]

    @fuzz_settings
    @given(edited(header))
    def prop(doc):
        raw = json.dumps(doc).encode()
        targets.bounded_check(target, len(raw).to_bytes(8, "little") + raw + body, scratch)

    with tracing():
        prop()
