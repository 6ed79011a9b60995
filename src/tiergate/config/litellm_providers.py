"""LiteLLM's provider prefixes (``mistral/``, ``ollama/`` ...) as tiergate providers: wire protocol, base URL, key.

One row per prefix, from each vendor's API reference and LiteLLM's provider
pages: where its OpenAI-compatible (or Anthropic) endpoint lives and which
environment variable LiteLLM reads its key from when ``api_key`` is not
written. Pure data and string rules; docs/providers.md is the user's copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class PrefixProvider:
    api: str  # tiergate wire protocol (schema.ApiType)
    base_url: str  # used when the entry has no api_base
    key_env: str | None  # the variable LiteLLM reads the key from
    local: bool = False  # a server on this machine by default
    v1: bool = False  # the server's OpenAI endpoints are always under /v1: an api_base without it gets it
    key_required: bool = True


_OPENAI = "openai-chat"
PREFIXES: dict[str, PrefixProvider] = {
    "openai": PrefixProvider(_OPENAI, "https://api.openai.com/v1", "OPENAI_API_KEY"),
    "custom_openai": PrefixProvider(_OPENAI, "https://api.openai.com/v1", "OPENAI_API_KEY"),
    "anthropic": PrefixProvider("anthropic-messages", "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
    # Azure OpenAI: the resource endpoint comes from api_base (or AZURE_API_BASE); its own adapter
    "azure": PrefixProvider("azure-openai", "", "AZURE_API_KEY"),
    # AWS Bedrock's Converse API: region and credentials from the entry or AWS's usual variables; its own adapter
    "bedrock": PrefixProvider("bedrock-converse", "", "AWS_ACCESS_KEY_ID"),
    "mistral": PrefixProvider(_OPENAI, "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "together_ai": PrefixProvider(_OPENAI, "https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
    "fireworks_ai": PrefixProvider(_OPENAI, "https://api.fireworks.ai/inference/v1", "FIREWORKS_AI_API_KEY"),
    "xai": PrefixProvider(_OPENAI, "https://api.x.ai/v1", "XAI_API_KEY"),
    "cerebras": PrefixProvider(_OPENAI, "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
    "perplexity": PrefixProvider(_OPENAI, "https://api.perplexity.ai", "PERPLEXITYAI_API_KEY"),
    "deepinfra": PrefixProvider(_OPENAI, "https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
    "nvidia_nim": PrefixProvider(_OPENAI, "https://integrate.api.nvidia.com/v1", "NVIDIA_NIM_API_KEY"),
    "sambanova": PrefixProvider(_OPENAI, "https://api.sambanova.ai/v1", "SAMBANOVA_API_KEY"),
    "openrouter": PrefixProvider(_OPENAI, "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "groq": PrefixProvider(_OPENAI, "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "deepseek": PrefixProvider(_OPENAI, "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "moonshot": PrefixProvider(_OPENAI, "https://api.moonshot.ai/v1", "MOONSHOT_API_KEY"),
    # Gemini's OpenAI-compatible endpoint (the native generateContent API is another protocol)
    "gemini": PrefixProvider(_OPENAI, "https://generativelanguage.googleapis.com/v1beta/openai", "GEMINI_API_KEY"),
    "hosted_vllm": PrefixProvider(
        _OPENAI, "http://127.0.0.1:8000/v1", "HOSTED_VLLM_API_KEY", local=True, v1=True, key_required=False
    ),
    "vllm": PrefixProvider(
        _OPENAI, "http://127.0.0.1:8000/v1", "HOSTED_VLLM_API_KEY", local=True, v1=True, key_required=False
    ),
    "lm_studio": PrefixProvider(
        _OPENAI, "http://127.0.0.1:1234/v1", "LM_STUDIO_API_KEY", local=True, v1=True, key_required=False
    ),
    # Ollama's OpenAI endpoints are under /v1 (LiteLLM's api_base is the server root, http://localhost:11434)
    "ollama": PrefixProvider(_OPENAI, "http://127.0.0.1:11434/v1", None, local=True, v1=True, key_required=False),
    "ollama_chat": PrefixProvider(_OPENAI, "http://127.0.0.1:11434/v1", None, local=True, v1=True, key_required=False),
    "llamafile": PrefixProvider(
        _OPENAI, "http://127.0.0.1:8080/v1", "LLAMAFILE_API_KEY", local=True, v1=True, key_required=False
    ),
}

# LiteLLM prefixes whose protocol tiergate does not speak (yet): their entries are left out, by name
UNSERVED_PREFIXES = frozenset(
    {
        "azure_ai",
        "azure_text",
        "sagemaker",
        "vertex_ai",
        "vertex_ai_beta",
        "cohere",
        "cohere_chat",
        "huggingface",
        "replicate",
        "watsonx",
        "databricks",
        "cloudflare",
        "ai21",
        "voyage",
        "text-completion-openai",
        "palm",
        "predibase",
        "clarifai",
        "triton",
        "xinference",
    }
)
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "0.0.0.0", "::1", "host.docker.internal"})


def is_local_url(url: str) -> bool:
    """A base URL on this machine (loopback, or Docker's name for the host)."""
    host = urlsplit(url).hostname or ""
    return host in LOCAL_HOSTS or host.startswith("127.")


def base_url_for(spec: PrefixProvider, api_base: str | None) -> str:
    """Where requests go: the entry's api_base (``/v1`` added for servers that serve only there), else the default."""
    if not api_base:
        return spec.base_url
    base = api_base.rstrip("/")
    if spec.v1 and not base.endswith("/v1"):
        base += "/v1"
    return base


AZURE_DEFAULT_API_VERSION = "2024-10-21"  # the latest GA version; an entry's api_version or AZURE_API_VERSION wins


def split_model(model: str) -> tuple[str, str]:
    """``groq/llama-3.1-8b-instant`` -> (groq, llama-3.1-8b-instant); a bare name is OpenAI's, or Anthropic's
    for ``claude-*`` (as LiteLLM infers it). An unknown prefix is returned for the caller to judge."""
    prefix, slash, rest = model.partition("/")
    if slash and rest:
        return prefix, rest
    return ("anthropic" if model.startswith("claude-") else "openai"), model
