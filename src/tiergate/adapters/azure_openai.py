"""The ``azure-openai`` protocol: Azure OpenAI's chat completions and embeddings.

The body is OpenAI's; what differs is where it goes and how it is signed.
A classic resource endpoint (``https://NAME.openai.azure.com``) serves each
deployment at ``/openai/deployments/DEPLOYMENT/chat/completions`` and refuses,
with 404, any call without ``?api-version=``; the v1 API (a base URL ending
in ``/openai/v1``) takes the deployment as the body's ``model`` and needs no
version. The key goes in the ``api-key`` header, never ``Authorization``,
which carries a Microsoft Entra token instead when the provider has one (as
a header, config/catalog.py). Replies and streams are OpenAI's, plus content
filter fields, and are read by the OpenAI chat adapter unchanged.
"""

from __future__ import annotations

from urllib.parse import quote

from tiergate.adapters.openai_chat import OpenAIChatAdapter, OpenAIEmbeddingsAdapter
from tiergate.adapters.upstream_http import USER_AGENT
from tiergate.core.catalog import Deployment

API = "azure-openai"


def azure_url(d: Deployment, path: str) -> str:
    """Where a deployment's ``path`` (``/chat/completions``, ``/embeddings``) is served."""
    version = f"?api-version={quote(d.api_version, safe='')}" if d.api_version else ""
    if d.base_url.endswith("/openai/v1"):
        return f"{d.base_url}{path}{version}"
    return f"{d.base_url}/openai/deployments/{quote(d.model, safe='')}{path}{version}"


def azure_headers(d: Deployment) -> dict[str, str]:
    h = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **d.headers}
    if d.api_key:
        h["api-key"] = d.api_key
    return h


class AzureOpenAIChatAdapter(OpenAIChatAdapter):
    api = API

    def url_of(self, d: Deployment) -> str:
        return azure_url(d, self.path)

    def headers_of(self, d: Deployment) -> dict[str, str]:
        return azure_headers(d)


class AzureOpenAIEmbeddingsAdapter(OpenAIEmbeddingsAdapter):
    api = API

    url_of = AzureOpenAIChatAdapter.url_of
    headers_of = AzureOpenAIChatAdapter.headers_of
