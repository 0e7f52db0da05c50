"""Issue 16: webhook URLs must be http(s), webhooks.price_changed_url as alerts.webhook_url."""

from __future__ import annotations

import pytest

from marketd.config import parse_config
from marketd.errors import ConfigError

SECRET = "s" * 40


@pytest.mark.parametrize("url", ["file:///etc/shadow", "ftp://hooks.example.com/x",
                                 "javascript:alert(1)", "gopher://127.0.0.1:6379/_FLUSHALL",
                                 "https://", "hooks.example.com/marketd"])
def test_price_changed_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"webhooks": {"price_changed_url": url, "secret": SECRET}}, env={})
    problems = dict(info.value.problems)
    assert set(problems) == {"webhooks.price_changed_url"}
    assert "http(s)" in problems["webhooks.price_changed_url"]


@pytest.mark.parametrize("url", ["https://app.example.com/hooks/marketd",
                                 "http://127.0.0.1:9000/hook"])
def test_http_price_changed_urls_pass(url: str) -> None:
    config = parse_config({"webhooks": {"price_changed_url": url, "secret": SECRET}}, env={})
    assert config.webhooks.price_changed_url == url
