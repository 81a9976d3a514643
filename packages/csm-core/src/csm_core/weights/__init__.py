"""Checkpoint reading, writing and layout mapping for CSM and Mimi (numpy + safetensors + ml_dtypes; no torch).

Canonical names: CSM = original Sesame names (`CSMConfig.weight_shapes()`, interleaved RoPE);
Mimi = Kyutai checkpoint names (`mimi_weight_shapes()`). A weight dict is `dict[str, np.ndarray]`;
bf16 arrays are `ml_dtypes.bfloat16`. Every failure raises `CheckpointError` (a ValueError)
naming the file and tensor.

Loading (what backends and the app call):
    load_csm_checkpoint(path, config=None, *, dtype=None, check_finite=True) -> (CSMConfig, weights)
        path: directory (original, HF save_pretrained, sesame/csm-1b snapshot) or .safetensors /
        *.index.json / zip .pt file. dtype="float32" casts; None keeps stored dtype (memory-mapped).
    load_mimi_checkpoint(path, config=None, *, dtype=None, check_finite=True) -> weights
        Kyutai file, HF kyutai/mimi dir or file, HF CSM checkpoint's codec_model.*, csm-1b snapshot.
    find_csm_weights(dir) / find_mimi_weights(dir) -> Path      which file a directory resolves to
    mimi_config_beside(path) -> MimiConfig | None      from the config.json beside weights (HF Mimi / codec_config)
    canonical_mimi_weights(weights, config, source) -> weights   an in-memory Mimi dict, any layout → canonical
    validate_weights(shapes, weights, source, *, check_finite=True)   strict: missing/extra/shape/NaN
    nonfinite_tensors(weights) -> {name: count}
    convert_weights(weights, dtype, *, keep=()) -> weights      cast floating tensors (bf16 <-> fp32 ...)
    to_float32(array) -> array

Files:
    read_tensors(path) -> weights                 any supported file, stored names
    tensor_names(path) -> set[str]                names only (headers / index)
    read_safetensors(path, *, names=None, mmap=True) -> (weights, metadata)
    read_safetensors_header(path) -> (entries, metadata, data_start)
    read_safetensors_index(index_json) -> (weights, index_metadata)        sharded sets
    save_safetensors(path, weights, metadata=None)                          bf16 supported
    read_torch_checkpoint(path) -> weights        torch-free, no pickle code runs
    load_torch_pickle(path) -> object             the whole pickled tree (tensors as arrays)

Layouts:
    detect_csm_layout(names) -> "original" | "hf"
    csm_hf_to_canonical(weights, config) / csm_canonical_to_hf(weights, config, *, tied_copies="both")
    split_codec(weights) -> (csm, codec)          codec_model.* of HF CSM checkpoints
    strip_wrapper_prefix(weights)                 drops a `module.` / `_orig_mod.` prefix on every key
    detect_mimi_layout(names) -> "kyutai" | "hf" | "hf-nested"
    mimi_hf_to_canonical(weights, mimi_config) / mimi_canonical_to_hf(weights, mimi_config, *, nested=False)
    mimi_config_from_hf(hf_mimi_config_dict) -> MimiConfig
    interleaved_to_half(w, heads, head_dim) / half_to_interleaved(w, heads, head_dim)   RoPE row order

Mimi shapes:
    mimi_weight_shapes(MimiConfig) -> {name: shape}  (318 tensors for the released model)
    is_codebook_buffer(name), mimi_num_parameters(cfg) (79,308,609), mimi_num_codebook_values(cfg) (16,842,784)
"""

from .csm_layout import csm_canonical_to_hf, csm_hf_to_canonical, detect_csm_layout, split_codec, strip_wrapper_prefix
from .dtypes import convert_weights, to_float32
from .errors import CheckpointError
from .loader import (
    find_csm_weights,
    find_mimi_weights,
    load_csm_checkpoint,
    canonical_mimi_weights,
    load_mimi_checkpoint,
    mimi_config_beside,
    read_tensors,
    tensor_names,
)
from .mimi_layout import detect_mimi_layout, mimi_canonical_to_hf, mimi_config_from_hf, mimi_hf_to_canonical
from .mimi_shapes import is_codebook_buffer, mimi_num_codebook_values, mimi_num_parameters, mimi_weight_shapes
from .rope_permute import half_to_interleaved, interleaved_to_half
from .safetensors_io import read_safetensors, read_safetensors_header, read_safetensors_index, save_safetensors
from .torch_pt import load_torch_pickle, read_torch_checkpoint
from .validate import nonfinite_tensors, validate_weights

__all__ = [
    "CheckpointError",
    "load_csm_checkpoint",
    "load_mimi_checkpoint",
    "find_csm_weights",
    "find_mimi_weights",
    "mimi_config_beside",
    "canonical_mimi_weights",
    "validate_weights",
    "nonfinite_tensors",
    "convert_weights",
    "to_float32",
    "read_tensors",
    "tensor_names",
    "read_safetensors",
    "read_safetensors_header",
    "read_safetensors_index",
    "save_safetensors",
    "read_torch_checkpoint",
    "load_torch_pickle",
    "detect_csm_layout",
    "csm_hf_to_canonical",
    "csm_canonical_to_hf",
    "split_codec",
    "strip_wrapper_prefix",
    "detect_mimi_layout",
    "mimi_hf_to_canonical",
    "mimi_canonical_to_hf",
    "mimi_config_from_hf",
    "interleaved_to_half",
    "half_to_interleaved",
    "mimi_weight_shapes",
    "is_codebook_buffer",
    "mimi_num_parameters",
    "mimi_num_codebook_values",
]
