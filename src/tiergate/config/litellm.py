"""Accept a LiteLLM proxy ``config.yaml`` as it is, by translating it to tiergate's shape, meaning kept.

LiteLLM groups deployments under a shared ``model_name`` (its load-balancing
group); here each entry becomes a deployment with its own provider (its own
key and base URL) and each group an alias whose members share the load
round-robin and fail over to one another (``routing.balance``). A ``*`` in
``model_name`` is a wildcard route that passes the client's model name
through. Prices: ``model_info`` first, then the price database
(config/prices.py), else the deployment is named unpriced. Tiers follow
``TIER_RULE`` unless ``model_info.tier`` says otherwise; a cloud provider is
never tier 0 unless the user says so. Settings: config/litellm_settings.py.
Everything that has no meaning here is returned by name (``Translation.
unsupported``) for one warning at start and in check-config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tiergate.config.litellm_providers import (
    AZURE_DEFAULT_API_VERSION,
    PREFIXES,
    UNSERVED_PREFIXES,
    PrefixProvider,
    base_url_for,
    is_local_url,
    split_model,
)
from tiergate.config.litellm_settings import translate_settings
from tiergate.config.prices import database_context_window, database_price, provider_knows
from tiergate.config.schema import AZURE_STREAM_USAGE_SINCE
from tiergate.core.capabilities import EMBEDDINGS_ONLY, capabilities_of
from tiergate.core.errors import ConfigError

LITELLM_KEYS = {"model_list", "router_settings", "general_settings", "litellm_settings", "environment_variables"}
# tiergate's own sections may sit beside LiteLLM's: everything but providers and deployments (model_list's)
TIERGATE_EXTRAS = {
    "server",
    "auth",
    "ledger",
    "ledger_spool",
    "ledger_timeout_s",
    "aliases",
    "tasks",
    "model_map",
    "routing",
    "timezone",
    "budgets",
    "limits",
    "guardian",
    "alerts",
    "local_models",
    "state",
    "state_prefix",
    "state_timeout_s",
    "on_outage",
    "privacy",
}
TIER_BY_OUTPUT_PRICE = ((1.0, 1), (5.0, 2))  # cloud: output USD/Mtok upper bounds; above -> 3
TIER_RULE = (
    "tiers from price: local -> 0; cloud by output price per Mtok: <= $1 -> 1, <= $5 -> 2, above -> 3; "
    "a cloud model with no known price -> 1; model_info.tier overrides"
)
CHAT_MODES = {"chat", "completion", "responses"}
SERVED_MODES = (*sorted(CHAT_MODES), "embedding")
# litellm_params that say where and how to call, all read here; any other is a default request parameter
CALL_PARAMS = {"model", "api_base", "base_url", "api_key", "rpm", "tpm", "extra_headers", "organization", "timeout"}
CALL_PARAMS |= {"stream_timeout", "input_cost_per_token", "output_cost_per_token", "weight"}
CALL_PARAMS |= {"api_version", "azure_ad_token", "aws_region_name", "aws_access_key_id", "aws_secret_access_key"}
CALL_PARAMS |= {"aws_session_token"}
AWS_UNSUPPORTED = {
    "aws_profile_name",
    "aws_role_name",
    "aws_session_name",
    "aws_web_identity_token",
    "aws_sts_endpoint",
}
AWS_REGION_VARS = ("AWS_REGION_NAME", "AWS_REGION", "AWS_DEFAULT_REGION")  # LiteLLM's order
SHARE_KEYS = ("weight", "rpm", "tpm")  # what LiteLLM's simple-shuffle weighs a group's entries by, first found
INFO_KEYS = {"input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost", "mode", "tier"}
INFO_KEYS |= {"cache_creation_input_token_cost", "max_input_tokens", "max_output_tokens", "max_tokens", "base_model"}
INFO_KEYS |= {"supports_vision", "supports_function_calling", "supports_response_schema", "supports_reasoning"}
INFO_KEYS |= {"id", "version", "description"}  # labels with no behaviour
PLACEHOLDER_KEYS = {"none", "fake", "dummy", "sk-fake", "sk-1234", "no-key", "sk-no-key-required", "ollama", "x"}
SUPPORTS = {
    "supports_vision": "vision",
    "supports_function_calling": "tools",
    "supports_response_schema": "json_schema",
    "supports_reasoning": "reasoning",
}


class LeftOut(Exception):
    """An entry that cannot be called as written (no region, no credentials): named, and left out."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


@dataclass(slots=True)
class Translation:
    """The tiergate config dict, and what the LiteLLM config asked for that has no meaning here."""

    config: dict[str, Any]
    unsupported: list[str] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (field path, what to know): warnings
    origins: dict[str, str] = field(default_factory=dict)  # deployment name -> where it came from and why its tier


def is_litellm_config(raw: Mapping[str, Any]) -> bool:
    return "model_list" in raw and not ({"providers", "deployments"} & raw.keys())


def tier_for(output_per_mtok: float | None, *, local: bool) -> int:
    """``TIER_RULE``: None is a cloud price nobody knows."""
    if local:
        return 0
    if output_per_mtok is None:
        return 1
    for bound, tier in TIER_BY_OUTPUT_PRICE:
        if output_per_mtok <= bound:
            return tier
    return 3


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "provider"


def _entry(i: int, item: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    if not isinstance(item, dict) or "model_name" not in item or "litellm_params" not in item:
        raise ConfigError(f"model_list[{i}]: needs model_name and litellm_params")
    params, info = item["litellm_params"], item.get("model_info") or {}
    if not isinstance(params, dict) or not isinstance(params.get("model"), str):
        raise ConfigError(f"model_list[{i}].litellm_params.model: required, e.g. openai/gpt-4o-mini")
    if not isinstance(info, dict):
        raise ConfigError(f"model_list[{i}].model_info: must be a mapping")
    return str(item["model_name"]), params, info


@dataclass(slots=True)
class _Builder:
    env: Mapping[str, str]
    out: Translation
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    shares: dict[str, dict[str, Any]] = field(default_factory=dict)  # deployment -> its weight, rpm, tpm

    def provider(self, i: int, prefix: str, spec: PrefixProvider, params: dict[str, Any]) -> tuple[str, bool]:
        """The provider for one entry: one per distinct (prefix, base URL, key, headers), so a group's
        entries each keep their own key."""
        api_base = params.get("api_base") or params.get("base_url")
        if spec.api == "azure-openai":
            return self._azure(i, params, api_base)
        if spec.api == "bedrock-converse":
            return self._bedrock(i, params, api_base)
        base = base_url_for(spec, api_base)
        local = spec.local if not api_base else is_local_url(base)
        prov: dict[str, Any] = {"api": spec.api, "base_url": base, "local": local}
        key = params.get("api_key")
        if key and local and str(key).strip().lower() in PLACEHOLDER_KEYS:
            key = None  # LiteLLM needs some key for a local server; tiergate sends none
        if key:
            prov["api_key"] = key
        elif spec.key_env and spec.key_env in self.env and (not api_base or spec.local):
            # a vendor's key goes to that vendor's endpoint only, never to another server named by api_base
            prov["api_key"] = f"env:{spec.key_env}"
        elif spec.key_required and not local and not api_base:
            self.out.notes.append(
                (f"model_list[{i}].litellm_params.api_key", f"not set and {spec.key_env} is not in the environment")
            )
        headers = dict(params.get("extra_headers") or {})
        if params.get("organization"):
            headers["OpenAI-Organization"] = str(params["organization"])
        if headers:
            prov["headers"] = headers
        for src, dst in (("timeout", "timeout_s"), ("stream_timeout", "stream_timeout_s")):
            if params.get(src) is not None:
                prov[dst] = params[src]
        return self._named(prefix, prov), local

    def _azure(self, i: int, params: dict[str, Any], api_base: str | None) -> tuple[str, bool]:
        """An Azure OpenAI resource: endpoint, api-version and key (or Entra token) as LiteLLM reads them."""
        base = str(api_base or self.env.get("AZURE_API_BASE") or "").rstrip("/")
        if not base:
            raise ConfigError(
                f"model_list[{i}].litellm_params.api_base: required for azure/ (https://NAME.openai.azure.com), "
                "or set AZURE_API_BASE"
            )
        prov: dict[str, Any] = {"api": "azure-openai", "base_url": base, "local": False}
        if not base.endswith("/openai/v1"):
            version = str(params.get("api_version") or self.env.get("AZURE_API_VERSION") or AZURE_DEFAULT_API_VERSION)
            if version[:10] < AZURE_STREAM_USAGE_SINCE:
                self.out.notes.append(
                    (
                        f"model_list[{i}].litellm_params.api_version",
                        f"{version} predates {AZURE_STREAM_USAGE_SINCE}, which reports a stream's usage; "
                        f"{AZURE_DEFAULT_API_VERSION} is used",
                    )
                )
                version = AZURE_DEFAULT_API_VERSION
            prov["api_version"] = version
        if params.get("api_key"):
            prov["api_key"] = params["api_key"]
        elif params.get("azure_ad_token"):
            prov["entra_token"] = params["azure_ad_token"]
        elif "AZURE_API_KEY" in self.env:  # LiteLLM's variable for the user's own Azure resources
            prov["api_key"] = "env:AZURE_API_KEY"
        else:
            self.out.notes.append((f"model_list[{i}].litellm_params.api_key", "not set and AZURE_API_KEY is not set"))
        for src, dst in (("timeout", "timeout_s"), ("stream_timeout", "stream_timeout_s")):
            if params.get(src) is not None:
                prov[dst] = params[src]
        return self._named("azure", prov), False

    def _bedrock(self, i: int, params: dict[str, Any], api_base: str | None) -> tuple[str, bool]:
        """A Bedrock Runtime endpoint: region, SigV4 credentials (or a Bedrock API key) as LiteLLM reads them."""
        where = f"model_list[{i}].litellm_params"
        region = params.get("aws_region_name") or next((self.env[v] for v in AWS_REGION_VARS if self.env.get(v)), None)
        if not region:
            raise LeftOut(f"{where}.aws_region_name", "no region: set it (e.g. us-east-1) or AWS_REGION_NAME")
        base = str(api_base or f"https://bedrock-runtime.{region}.amazonaws.com").rstrip("/")
        prov: dict[str, Any] = {"api": "bedrock-converse", "base_url": base, "local": False, "aws_region": region}
        for key, var in (
            ("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
            ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
            ("aws_session_token", "AWS_SESSION_TOKEN"),
        ):
            if params.get(key):
                prov[key] = params[key]
            elif var in self.env and not params.get("aws_access_key_id"):  # never mix an entry's key with the env's
                prov[key] = f"env:{var}"
        if "aws_secret_access_key" not in prov:
            prov.pop("aws_access_key_id", None)
            prov.pop("aws_session_token", None)
            if params.get("api_key") or "AWS_BEARER_TOKEN_BEDROCK" in self.env:  # a Bedrock API key
                prov["api_key"] = params.get("api_key") or "env:AWS_BEARER_TOKEN_BEDROCK"
            else:
                raise LeftOut(
                    f"{where}.aws_access_key_id",
                    "no credentials: aws_access_key_id and aws_secret_access_key (or AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY), or a Bedrock API key (api_key, AWS_BEARER_TOKEN_BEDROCK)",
                )
        for src, dst in (("timeout", "timeout_s"), ("stream_timeout", "stream_timeout_s")):
            if params.get(src) is not None:
                prov[dst] = params[src]
        return self._named("bedrock", prov), False

    def _named(self, prefix: str, prov: dict[str, Any]) -> str:
        """A provider name of its own for each distinct provider row (same row, same name)."""
        base = str(prov["base_url"])
        stem = f"{prefix}-{_slug(base.split('//', 1)[-1])}"
        name, n = stem, 1
        while name in self.providers and self.providers[name] != prov:
            n += 1
            name = f"{stem}-{n}"
        self.providers[name] = prov
        return name

    def add(self, i: int, item: Any) -> None:
        group, params, info = _entry(i, item)
        where = f"model_list[{i}]"
        prefix, upstream = split_model(params["model"])
        if prefix == "bedrock":  # LiteLLM's route prefixes: Converse is the one route here
            upstream = upstream.removeprefix("converse/").removeprefix("invoke/")
        if prefix in UNSERVED_PREFIXES:
            self.out.unsupported.append(f"{where} ({group}: provider {prefix!r} is not served yet; entry left out)")
            return
        if prefix not in PREFIXES:
            if not provider_knows("openrouter", params["model"]):
                raise ConfigError(
                    f"{where}.litellm_params.model: provider prefix {prefix!r} is not supported; "
                    f"allowed: {', '.join(sorted(PREFIXES))} (not served yet: {', '.join(sorted(UNSERVED_PREFIXES))})"
                )
            prefix, upstream = "openrouter", params["model"]  # an OpenRouter model id, as LiteLLM reads it
        if params["model"] == "*":
            self.out.unsupported.append(f"{where} (model '*': provider chosen by the client; entry left out)")
            return
        mode = str(info.get("mode", "chat"))
        if mode not in SERVED_MODES:
            self.out.unsupported.append(f"{where}.model_info.mode={mode} ({group}: entry left out)")
            return
        try:
            pkey, local = self.provider(i, prefix, PREFIXES[prefix], params)
        except LeftOut as out:  # LiteLLM would start and fail each call; here it is said once, by name
            self.out.unsupported.append(f"{out.path} ({group}: {out.reason}; entry left out)")
            return
        base = self.providers[pkey]["base_url"]
        self._unsupported_params(where, params, info)
        dep: dict[str, Any] = {"name": f"{group}#{i}", "provider": pkey, "model": upstream}
        if info.get("base_model"):
            dep["base_model"] = str(info["base_model"])
        price_out = self._price(dep, params, info, prefix=prefix, base=base, local=local)
        dep["tier"] = int(info["tier"]) if "tier" in info else tier_for(price_out, local=local)
        why = (
            "model_info.tier"
            if "tier" in info
            else "local"
            if local
            else "no known price"
            if price_out is None
            else f"output ${price_out:g}/Mtok"
        )
        priced = "model_info" if "price" in dep else ("free" if local else "the price database")
        origin = f"model_list[{i}] ({group}: {params['model']}); tier {dep['tier']} ({why}); price: {priced}"
        window = info.get("max_input_tokens") or (
            None if local else database_context_window(prefix, base, str(info.get("base_model") or params["model"]))
        )
        if window:
            dep["context_window"] = int(window)
        out_cap = info.get("max_output_tokens") or info.get("max_tokens")
        if out_cap:
            dep["max_output_tokens"] = int(out_cap)
        for key in ("rpm", "tpm"):  # the entry's quota: enforced, the group's next entry taking over at it
            quota = params.get(key, item.get(key))
            if quota is None:
                continue
            if not isinstance(quota, int) or isinstance(quota, bool) or quota <= 0:
                raise ConfigError(f"{where}.litellm_params.{key}: expected a whole number above 0, got {quota!r}")
            dep[key] = quota
        wildcard = "*" in group or "*" in upstream
        if not wildcard or mode == "embedding" or SUPPORTS.keys() & info.keys():  # else: the served model's own
            dep["capabilities"] = sorted(self._capabilities(upstream, mode, info))
        if wildcard:
            if "*" not in group or upstream.count("*") > 1:
                raise ConfigError(
                    f"{where}: a wildcard route needs a * in model_name and at most one in litellm_params.model, "
                    f"e.g. model_name: 'openai/*' with model: 'openai/*'"
                )
            dep["name"] = group
        self.deployments.append(dep)
        self.groups.setdefault(group, []).append(str(dep["name"]))
        self.out.origins[str(dep["name"])] = origin
        self.shares[str(dep["name"])] = {k: params.get(k, item.get(k)) for k in SHARE_KEYS}

    def weigh(self, members: list[str]) -> str | None:
        """Each member's ``weight``, as LiteLLM's simple-shuffle weighs a group: by the first of weight, rpm, tpm
        that the group's first entry sets, an entry without it weighing 0; None when none is set."""
        key = next((k for k in SHARE_KEYS if self.shares[members[0]][k] is not None), None)
        if key is None:
            return None
        for dep in self.deployments:
            if dep["name"] in members:
                value = self.shares[dep["name"]][key]
                dep["weight"] = float(value) if isinstance(value, int | float) and value >= 0 else 0.0
        return key

    def _price(
        self, dep: dict[str, Any], params: dict[str, Any], info: dict[str, Any], *, prefix: str, base: str, local: bool
    ) -> float | None:
        """The entry's written costs as its price line; the output price the tier rule reads (None: unknown)."""
        keys = ("input_cost_per_token", "output_cost_per_token")
        costs = [info.get(k, params.get(k)) for k in keys]
        extra = {
            "cache_read_per_mtok": info.get("cache_read_input_token_cost"),
            "cache_write_per_mtok": info.get("cache_creation_input_token_cost"),
        }
        if costs != [None, None] or any(v is not None for v in extra.values()):
            price = {
                f: float(c) * 1e6
                for f, c in zip(("input_per_mtok", "output_per_mtok"), costs, strict=True)
                if c is not None
            }
            price |= {f: float(c) * 1e6 for f, c in extra.items() if c is not None}
            dep["price"] = price
            if costs[1] is not None:
                return float(costs[1]) * 1e6
        if local:
            return 0.0
        db = database_price(prefix, base, str(info.get("base_model") or params["model"]))
        return db.rates.output if db is not None else None

    @staticmethod
    def _capabilities(upstream: str, mode: str, info: dict[str, Any]) -> frozenset[str]:
        """model_info.mode and supports_* over what the model's family can do."""
        if mode == "embedding":
            return EMBEDDINGS_ONLY
        caps = set(capabilities_of(upstream))
        if "mode" in info:  # an explicit chat mode: a model named like an embedding model still chats
            caps.discard("embeddings")
            caps.add("chat")
        for key, cap in SUPPORTS.items():
            if key in info:
                (caps.add if info[key] else caps.discard)(cap)
        return frozenset(caps)

    def _unsupported_params(self, where: str, params: dict[str, Any], info: dict[str, Any]) -> None:
        self.out.unsupported += [
            f"{where}.litellm_params.{k} (give keys: no AWS profiles or role assumption)"
            for k in sorted(AWS_UNSUPPORTED & params.keys())
        ]
        defaults = sorted(k for k in params if k not in CALL_PARAMS and k not in AWS_UNSUPPORTED)
        if defaults:
            self.out.unsupported.append(f"{where}.litellm_params.{{{', '.join(defaults)}}} (not applied to requests)")
        self.out.unsupported += [f"{where}.model_info.{k}" for k in sorted(info) if k not in INFO_KEYS]


def translate_litellm(raw: dict[str, Any], env: Mapping[str, str] | None = None) -> Translation:
    """A tiergate config dict equivalent to a LiteLLM proxy config dict, with what it could not keep."""
    unknown = set(raw) - LITELLM_KEYS - TIERGATE_EXTRAS
    if unknown:
        raise ConfigError(
            f"{sorted(unknown)[0]}: unknown top-level key in a LiteLLM config; "
            f"allowed: {', '.join(sorted(LITELLM_KEYS | TIERGATE_EXTRAS))}"
        )
    out = Translation({})
    b = _Builder(env or {}, out)
    entries = raw.get("model_list") or []
    if not isinstance(entries, list):
        raise ConfigError("model_list: must be a list of {model_name, litellm_params}")
    for i, item in enumerate(entries):
        b.add(i, item)
    settings = translate_settings(raw)
    out.unsupported += settings.unsupported
    aliases: dict[str, list[str]] = {}
    balance: list[str] = []
    cheapest: list[str] = []
    for group, members in b.groups.items():
        if len(members) == 1:  # a group of one is simply a deployment under the group's name
            next(d for d in b.deployments if d["name"] == members[0])["name"] = group
            out.origins[group] = out.origins.pop(members[0])
        else:
            aliases[group] = members
            if settings.strategy == "cost-based-routing":
                cheapest.append(group)
            else:
                balance.append(group)
                b.weigh(members)
    names = {str(d["name"]) for d in b.deployments}
    for alias, (target,) in settings.aliases.items():
        aliases[alias] = aliases.get(target, [target]) if target in aliases or target in names else [target]
    cfg: dict[str, Any] = {"providers": b.providers, "deployments": b.deployments, "aliases": aliases}
    routing = dict(settings.routing)
    if balance:
        routing["balance"] = balance
    if cheapest:
        routing["cheapest_first"] = cheapest
    if routing:
        cfg["routing"] = routing
    cfg |= settings.top
    for key in TIERGATE_EXTRAS & raw.keys():  # tiergate's own sections win over what LiteLLM's became
        value, have = raw[key], cfg.get(key)
        if isinstance(have, dict) and isinstance(value, dict):
            cfg[key] = {**have, **value}
        elif isinstance(have, list) and isinstance(value, list):
            cfg[key] = [*have, *value]
        else:
            cfg[key] = value
    out.config = cfg
    return out
