"""Which adapter serves a (client protocol, upstream api) pair, over one transport.

One table for the app and for tests that build the pipeline over an
in-memory transport, so both route through the same adapters.
"""

from __future__ import annotations

from tiergate.adapters.anthropic_messages import AnthropicMessagesAdapter
from tiergate.adapters.azure_openai import API as AZURE
from tiergate.adapters.azure_openai import AzureOpenAIChatAdapter, AzureOpenAIEmbeddingsAdapter
from tiergate.adapters.base import Adapter
from tiergate.adapters.bedrock_converse import API as BEDROCK
from tiergate.adapters.bedrock_converse import BedrockConverseAdapter
from tiergate.adapters.gemini_native import API as GEMINI_API
from tiergate.adapters.gemini_native import GeminiNativeAdapter
from tiergate.adapters.ollama_native import OllamaNativeAdapter
from tiergate.adapters.openai_chat import OpenAIChatAdapter, OpenAIEmbeddingsAdapter
from tiergate.adapters.openai_responses import OpenAIResponsesAdapter
from tiergate.adapters.responses_bridge import RESPONSES, ChatViaResponses, ResponsesViaChat
from tiergate.adapters.translated import AnthropicViaOpenAI, OpenAIViaAnthropic
from tiergate.adapters.translated_clients import (
    GeminiEmbedViaOpenAI,
    GeminiViaOpenAI,
    OllamaChatViaOpenAI,
    OllamaEmbedViaOpenAI,
)
from tiergate.adapters.transport import UpstreamTransport


def protocol_adapters(transport: UpstreamTransport) -> dict[tuple[str, str], Adapter]:
    """(client protocol, upstream api) -> adapter; a pair missing here is a candidate the policy skips."""
    chat = OpenAIChatAdapter(transport)
    messages = AnthropicMessagesAdapter(transport)
    chat_via_messages = OpenAIViaAnthropic(messages)
    embeddings = OpenAIEmbeddingsAdapter(transport)
    responses = OpenAIResponsesAdapter(transport)
    chat_via_responses = ChatViaResponses(responses)
    return {
        ("openai-chat", "openai-chat"): chat,
        ("openai-chat", "anthropic-messages"): chat_via_messages,
        ("anthropic-messages", "anthropic-messages"): messages,
        ("anthropic-messages", "openai-chat"): AnthropicViaOpenAI(chat),
        ("openai-embeddings", "openai-chat"): embeddings,
        (RESPONSES, "openai-chat"): ResponsesViaChat(chat),
        (RESPONSES, "anthropic-messages"): ResponsesViaChat(chat_via_messages, "anthropic-messages"),
        # upstreams that speak Responses: passed through for Responses clients, translated for the others
        (RESPONSES, RESPONSES): responses,
        ("openai-chat", RESPONSES): chat_via_responses,
        ("anthropic-messages", RESPONSES): AnthropicViaOpenAI(chat_via_responses),
        # Ollama's native API: one translation onto OpenAI chat, composed with the Anthropic bridge
        ("ollama-chat", "openai-chat"): OllamaChatViaOpenAI(chat),
        ("ollama-chat", "anthropic-messages"): OllamaChatViaOpenAI(chat_via_messages),
        ("ollama-generate", "openai-chat"): OllamaChatViaOpenAI(chat, generate=True),
        ("ollama-generate", "anthropic-messages"): OllamaChatViaOpenAI(chat_via_messages, generate=True),
        ("ollama-embed", "openai-chat"): OllamaEmbedViaOpenAI(embeddings),
        ("ollama-embeddings", "openai-chat"): OllamaEmbedViaOpenAI(embeddings, legacy=True),
        # an upstream that is itself Ollama: its native API passed through (its own tool parsing, think, ...)
        ("ollama-chat", "ollama"): OllamaNativeAdapter(transport, "/api/chat"),
        ("ollama-generate", "ollama"): OllamaNativeAdapter(transport, "/api/generate"),
        ("ollama-embed", "ollama"): OllamaNativeAdapter(transport, "/api/embed", produces_text=False),
        ("ollama-embeddings", "ollama"): OllamaNativeAdapter(transport, "/api/embeddings", produces_text=False),
        # Gemini's generateContent API, the same way
        ("gemini-generate", "openai-chat"): GeminiViaOpenAI(chat),
        ("gemini-generate", "anthropic-messages"): GeminiViaOpenAI(chat_via_messages),
        ("gemini-embed", "openai-chat"): GeminiEmbedViaOpenAI(embeddings),
        ("gemini-batch-embed", "openai-chat"): GeminiEmbedViaOpenAI(embeddings, batch=True),
        # Gemini's own API upstream: passed through (thinking, thought signatures, cached content survive)
        ("gemini-generate", GEMINI_API): GeminiNativeAdapter(transport),
        ("gemini-embed", GEMINI_API): GeminiNativeAdapter(transport, "embedContent", produces_text=False),
        ("gemini-batch-embed", GEMINI_API): GeminiNativeAdapter(transport, "batchEmbedContents", produces_text=False),
        # Ollama and Gemini clients on a Responses upstream, through the chat-over-Responses bridge
        ("ollama-chat", RESPONSES): OllamaChatViaOpenAI(chat_via_responses),
        ("ollama-generate", RESPONSES): OllamaChatViaOpenAI(chat_via_responses, generate=True),
        ("gemini-generate", RESPONSES): GeminiViaOpenAI(chat_via_responses),
        **_azure(transport),
        **_bedrock(transport),
    }


def _bedrock(transport: UpstreamTransport) -> dict[tuple[str, str], Adapter]:
    """AWS Bedrock's Converse API: one translation from OpenAI chat, every other surface through its bridge."""
    chat = BedrockConverseAdapter(transport)
    return {
        ("openai-chat", BEDROCK): chat,
        ("anthropic-messages", BEDROCK): AnthropicViaOpenAI(chat),
        (RESPONSES, BEDROCK): ResponsesViaChat(chat, BEDROCK),
        ("ollama-chat", BEDROCK): OllamaChatViaOpenAI(chat),
        ("ollama-generate", BEDROCK): OllamaChatViaOpenAI(chat, generate=True),
        ("gemini-generate", BEDROCK): GeminiViaOpenAI(chat),
    }


def _azure(transport: UpstreamTransport) -> dict[tuple[str, str], Adapter]:
    """Azure OpenAI: OpenAI's body at Azure's URLs with its key header, so every OpenAI-side client reaches it."""
    chat, embeddings = AzureOpenAIChatAdapter(transport), AzureOpenAIEmbeddingsAdapter(transport)
    return {
        ("openai-chat", AZURE): chat,
        ("anthropic-messages", AZURE): AnthropicViaOpenAI(chat),
        ("openai-embeddings", AZURE): embeddings,
        (RESPONSES, AZURE): ResponsesViaChat(chat, AZURE),
        ("ollama-chat", AZURE): OllamaChatViaOpenAI(chat),
        ("ollama-generate", AZURE): OllamaChatViaOpenAI(chat, generate=True),
        ("ollama-embed", AZURE): OllamaEmbedViaOpenAI(embeddings),
        ("ollama-embeddings", AZURE): OllamaEmbedViaOpenAI(embeddings, legacy=True),
        ("gemini-generate", AZURE): GeminiViaOpenAI(chat),
        ("gemini-embed", AZURE): GeminiEmbedViaOpenAI(embeddings),
        ("gemini-batch-embed", AZURE): GeminiEmbedViaOpenAI(embeddings, batch=True),
    }
