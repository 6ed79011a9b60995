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

    def _target(self, d: Deployment) -> tuple[str, dict[str, str]]:
        t = self._targets.get(d.name)
        if t is None or t[0] is not d:
            t = self._targets[d.name] = (d, azure_url(d, self.path), azure_headers(d))
        return t[1], t[2]


class AzureOpenAIEmbeddingsAdapter(OpenAIEmbeddingsAdapter):
    api = API

    _target = AzureOpenAIChatAdapter._target
