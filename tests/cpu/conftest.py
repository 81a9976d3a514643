"""Shared test configs for csm-cpu."""

import pytest

from csm_core.config import CSMConfig, LlamaConfig


@pytest.fixture(scope="session")
def k_quant_config() -> CSMConfig:
    """A small CSM whose every matrix has rows of a multiple of 256 values, so q4_k stores all of
    them as Q4_K (as for CSM-1B); tiny configs fall back to Q8_0."""
    flavor = LlamaConfig(num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=256, intermediate_dim=512)
    return CSMConfig(backbone_flavor="k-b", decoder_flavor="k-d", text_vocab_size=1024, audio_num_codebooks=8,
                     custom_flavors={"k-b": flavor, "k-d": flavor})
