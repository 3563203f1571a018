from __future__ import annotations

import pytest

from synthgen.testing import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny llama model with a chat template, saved as an HF directory."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-chat"), chat_template=True)


@pytest.fixture(scope="session")
def tiny_plain_model_dir(tmp_path_factory):
    """A tiny llama model whose tokenizer has no chat template (plain completion)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-plain"), chat_template=False)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch, request):
    """Unit tests never touch the user's model cache; integration tests share the real one."""
    if request.node.get_closest_marker("integration") is None:
        monkeypatch.setenv("SYNTHGEN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    """The tiny chat model loaded as a transformers engine, without an adapter."""
    from synthgen.engines.transformers import TransformersEngine

    return TransformersEngine.load(str(tiny_model_dir), adapter="none", device="cpu")
