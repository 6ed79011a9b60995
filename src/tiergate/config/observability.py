"""Config of ``observability:``: the metrics' label cap, the log format, OpenTelemetry tracing.

Tracing is off unless ``observability.tracing`` is set; its endpoint is usually
``env:OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (resolved at load like every env: value).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricsConfig(_Model):
    max_label_values: int = Field(
        50,
        ge=1,
        le=10_000,
        description="distinct agent and task names kept as labels of the spend metrics; later ones count as 'other'",
    )


class TracingConfig(_Model):
    endpoint: str | None = Field(
        None,
        description="OTLP/HTTP traces URL (http(s)://HOST:PORT/v1/traces), "
        "e.g. env:OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; omitted: spans are made, exported nowhere",
    )
    service_name: str = Field("tiergate", min_length=1, description="the service.name resource attribute")
    headers: dict[str, str] = Field(default_factory=dict, description="sent with each export (e.g. an API key)")
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0, description="share of requests traced (parent-based)")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (the OTLP/HTTP traces endpoint)")
        return v


class ObservabilityConfig(_Model):
    log_format: Literal["text", "json"] = Field(
        "text", description="text, or json: one JSON object per line with the request id (tiergate serve --log-format)"
    )
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracing: TracingConfig | None = Field(None, description="OpenTelemetry traces; off when omitted")
