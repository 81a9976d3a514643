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


ISA_PATHS = ["portable", "avx2", "avx512"]


@pytest.fixture(params=ISA_PATHS)
def isa(request):
    """Run the test on each x86 kernel path (csm_cpu.features.isa_override), skipping the paths
    this CPU/build cannot run (avx512 needs AVX-512 F/BW/VL + VNNI and OS support for ZMM state)."""
    from csm_cpu.features import cpu_features, isa_override, supported_isas

    if request.param not in supported_isas():
        f = cpu_features()
        pytest.skip(f"kernel path {request.param} not runnable here (detected {f['detected']}, "
                    f"compiled {f['compiled']}); run on a CPU that has it")
    with isa_override(request.param):
        yield request.param
