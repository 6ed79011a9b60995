"""Field order of the records the request path builds positionally.

A class called with keyword arguments builds a dict of them per call (Python 3.11's type call), so the
chat lane builds these by position. Reordering a class's fields would then put values in the wrong
places without a type error where two neighbours share a type (requested_model and protocol are both
str): this table pins the order the call sites rely on.
"""

from __future__ import annotations

import dataclasses

import pytest

from tiergate.adapters.base import UpstreamReply
from tiergate.adapters.usage import Reported
from tiergate.core.types import Identity, RequestFeatures, Usage
from tiergate.pipeline.service import PipelineRequest
from tiergate.router.context import CallContext, Outcome


@pytest.mark.parametrize(
    ("cls", "leading"),
    [
        (Identity, ["key_name", "agent", "session", "task", "local_only"]),  # api/auth.identity_from_headers
        (  # api/openai.chat_features
            RequestFeatures,
            ["model", "task", "prompt_tokens_est", "prompt", "max_tokens", "local_only", "stream", "needs"],
        ),
        (  # api/openai.pipeline_request
            PipelineRequest,
            ["request_id", "identity", "features", "body", "protocol", "started", "hints"],
        ),
        (  # pipeline/service.RequestPipeline.context
            CallContext,
            [
                "request_id",
                "identity",
                "requested_model",
                "protocol",
                "stream",
                "started",
                "wall_start",
                "deadline",
                "features",
                "hold",
                "hints",
            ],
        ),
        (Outcome, ["deployment", "candidate", "fallbacks", "reason", "reply", "stream"]),  # router/executor._outcome
        (UpstreamReply, ["status", "body", "content_type", "usage", "upstream_ms", "notes"]),  # adapters/openai_chat
        (Usage, ["prompt_tokens", "completion_tokens", "estimated", "cache_read_tokens", "cache_write_tokens"]),
    ],
)
def test_the_fields_built_by_position_keep_their_order(cls, leading):
    names = [f.name for f in dataclasses.fields(cls)]
    assert names[: len(leading)] == leading


def test_reported_keeps_its_order():
    assert Reported._fields == ("prompt", "completion", "cache_read", "cache_write")  # adapters/usage
