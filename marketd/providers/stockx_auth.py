"""`marketd auth stockx`: the one-time browser step that yields a StockX refresh token.

StockX allows only the Authorization Code grant ([OBS] client_credentials is refused), so a
person signs in once: we print the authorize URL, a tiny server on 127.0.0.1 receives the
redirect to ``/callback?code=…&state=…``, the code is exchanged at ``{auth_url}/oauth/token``
and the refresh token is stored for the daemon (``provider_tokens``, kind ``refresh_token``).
The redirect URI must be registered for the app in the StockX developer portal.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import structlog
from aiohttp import web

from marketd.clock import Clock
from marketd.config import ProviderConfig
from marketd.errors import AuthError, TransientError
from marketd.providers.base import KeyValueStore, send

log = structlog.get_logger(__name__)

DEFAULT_AUTH_URL = "https://accounts.stockx.com"
AUDIENCE = "gateway.stockx.com"
SCOPE = "offline_access openid"  # offline_access is what yields a refresh token [DOC]
CALLBACK_PATH = "/callback"
CLIENT_CREDENTIAL = "STOCKX_CLIENT_ID / STOCKX_CLIENT_SECRET"


def build_authorize_url(client_id: str, redirect_uri: str, state: str, *,
                        auth_url: str = DEFAULT_AUTH_URL, code_challenge: str = "") -> str:
    """The page where a person signs in and grants marketd access (with PKCE's S256
    challenge when ``code_challenge`` is given)."""
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
              "scope": SCOPE, "audience": AUDIENCE, "state": state}
    if code_challenge:
        params |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
    query = urlencode(params, quote_via=quote)
    return f"{auth_url.rstrip('/')}/authorize?{query}"


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, its S256 code_challenge), RFC 7636."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def redirect_uri_for(port: int) -> str:
    return f"http://127.0.0.1:{port}{CALLBACK_PATH}"


def code_from_callback(query: Mapping[str, str], state: str) -> str:
    """The authorization code from the redirect's query, after checking ``state``."""
    if query.get("error"):
        detail = query.get("error_description") or query["error"]
        raise AuthError("stockx", f"StockX refused the authorisation: {detail}",
                        credential=CLIENT_CREDENTIAL)
    if not secrets.compare_digest(query.get("state", "").encode(), state.encode()):
        raise AuthError("stockx", "the callback's state does not match this run: start "
                                  "`marketd auth stockx` again", credential=CLIENT_CREDENTIAL)
    code = query.get("code", "")
    if not code:
        raise AuthError("stockx", "the callback carried no code", credential=CLIENT_CREDENTIAL)
    return code


async def wait_for_code(state: str, *, port: int, timeout_s: float,
                        on_listening: Callable[[], object] = lambda: None) -> str:
    """Serve ``/callback`` on 127.0.0.1:port until one redirect arrives; return its code.
    ``on_listening`` runs once the port is open (that is when to show the address)."""
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def callback(request: web.Request) -> web.Response:
        # a request without this run's state is a stray (another tab, a scanner, a page
        # probing loopback): it is answered 400 and the wait goes on
        given = request.query.get("state", "")
        if not secrets.compare_digest(given.encode("utf-8", "surrogateescape"),
                                      state.encode()):
            log.warning("stockx_auth_stray_callback", remote=request.remote)
            return web.Response(status=400, text="marketd: not this sign-in's callback\n")
        try:
            code = code_from_callback(request.query, state)
        except AuthError as exc:
            if not answer.done():
                answer.set_exception(exc)
            return web.Response(status=400, text=f"marketd: {exc.message}\n")
        if not answer.done():
            answer.set_result(code)
        return web.Response(text="marketd: StockX access granted. You can close this tab.\n")

    app = web.Application()
    app.router.add_get(CALLBACK_PATH, callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        on_listening()
        try:
            return await asyncio.wait_for(answer, timeout_s)
        except TimeoutError:
            raise AuthError("stockx", f"no browser callback within {timeout_s:g} s: run "
                                      "`marketd auth stockx` again",
                            credential=CLIENT_CREDENTIAL) from None
    finally:
        await runner.cleanup()


async def exchange_code(session: aiohttp.ClientSession, config: ProviderConfig, code: str,
                        redirect_uri: str, code_verifier: str = "") -> dict[str, Any]:
    """Trade the authorization code for tokens at ``{auth_url}/oauth/token``."""
    url = f"{str(config.options.get('auth_url') or DEFAULT_AUTH_URL).rstrip('/')}/oauth/token"
    form = {"grant_type": "authorization_code", "client_id": _opt(config, "client_id"),
            "client_secret": _opt(config, "client_secret"), "code": code,
            "redirect_uri": redirect_uri}
    if code_verifier:
        form["code_verifier"] = code_verifier
    resp = await send(session, "POST", url, provider="stockx", timeout_s=config.timeout_s,
                      headers={"Accept": "application/json"}, data=form)
    status = resp.status
    try:
        data = resp.json() if resp.body.strip() else {}
    except ValueError:
        data = {}
    if status >= 500 or status in (408, 429):
        raise TransientError("stockx", f"token endpoint: HTTP {status}", status=status)
    if status != 200:
        detail = (data.get("error_description") or data.get("error") or "") \
            if isinstance(data, dict) else ""
        raise AuthError("stockx", f"the code exchange was refused (HTTP {status}: {detail})",
                        credential=CLIENT_CREDENTIAL, status=status)
    if not isinstance(data, dict) or not data.get("refresh_token"):
        raise AuthError("stockx", "StockX returned no refresh token: the app must allow the "
                                  "offline_access scope", credential=CLIENT_CREDENTIAL)
    return data


async def store_tokens(store: KeyValueStore, tokens: Mapping[str, Any], now: float) -> str:
    """Keep the refresh token (and the access token, so the daemon need not mint one)."""
    refresh_token = str(tokens["refresh_token"])
    await store.put_token("stockx", "refresh_token", refresh_token, None)
    access = tokens.get("access_token")
    if isinstance(access, str) and access:
        try:
            lifetime = float(tokens.get("expires_in") or 0)
        except (TypeError, ValueError):
            lifetime = 0.0
        if lifetime > 0:
            await store.put_token("stockx", "access_token", access, now + lifetime)
    return refresh_token


async def run_auth_flow(config: ProviderConfig, store: KeyValueStore, *, port: int = 8788,
                        print_fn: Callable[[str], object] = print, timeout_s: float = 600.0,
                        clock: Clock | None = None) -> str:
    """The whole browser step; returns the refresh token it stored."""
    missing = [env for key, env in (("client_id", "STOCKX_CLIENT_ID"),
                                    ("client_secret", "STOCKX_CLIENT_SECRET"))
               if not _opt(config, key)]
    if missing:
        raise AuthError("stockx", f"missing credentials: set {', '.join(missing)}",
                        credential=", ".join(missing))
    state = secrets.token_urlsafe(24)
    verifier, challenge = pkce_pair()
    redirect_uri = redirect_uri_for(port)
    url = build_authorize_url(_opt(config, "client_id"), redirect_uri, state,
                              auth_url=str(config.options.get("auth_url") or DEFAULT_AUTH_URL),
                              code_challenge=challenge)

    def show() -> None:
        print_fn(f"Open this address in a browser and sign in to StockX:\n\n  {url}\n")
        print_fn(f"Waiting for the redirect to {redirect_uri} (register it for your app in "
                 f"the StockX developer portal; on a remote machine first run "
                 f"ssh -L {port}:127.0.0.1:{port} <host>)")

    code = await wait_for_code(state, port=port, timeout_s=timeout_s, on_listening=show)
    async with aiohttp.ClientSession() as session:
        tokens = await exchange_code(session, config, code, redirect_uri, verifier)
    refresh_token = await store_tokens(store, tokens, (clock or Clock()).now())
    log.info("stockx_refresh_token_stored")
    return refresh_token


def _opt(config: ProviderConfig, key: str) -> str:
    value = config.options.get(key)
    return value.strip() if isinstance(value, str) else ""
