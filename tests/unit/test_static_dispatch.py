"""The client protocol's route lookup (tiergate.client_protocol.static_dispatch) against aiohttp's router.

For every route without a variable part, the lookup must land on the very route, handler and app that the
app's own router resolves, and leave every other request to the router.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import make_mocked_request

from tiergate.api.edge import STATIC_ROUTES
from tiergate.app import create_app
from tiergate.client_protocol import static_dispatch
from tiergate.config.loading import config_from_dict


@pytest.fixture(scope="module")
def app():
    return create_app(config_from_dict({"auth": {"required": False}, "ledger": "sqlite:///:memory:"}))


def test_every_static_route_is_dispatched_to_what_the_router_resolves(app):
    table = static_dispatch(app)
    assert ("POST", "/v1/chat/completions") in table and ("POST", "/v1/messages") in table
    assert len(table) == len(app[STATIC_ROUTES]) > 20
    for (method, path), (match_info, handler) in table.items():
        resolved = asyncio.run(app.router.resolve(make_mocked_request(method, path, app=app)))
        assert resolved.route is match_info.route, (method, path)
        assert handler is resolved.handler and match_info.apps == (app,), (method, path)
        assert match_info.current_app is app and dict(match_info) == {} == dict(resolved)


def test_paths_with_variable_parts_and_other_methods_are_left_to_the_router(app):
    table = static_dispatch(app)
    assert not any("{" in path for _, path in table)
    assert ("HEAD", "/health") not in table and ("GET", "/health") in table  # HEAD: the router's own route
    assert ("DELETE", "/v1/chat/completions") not in table  # the catch-all answers 405 in the client's envelope
