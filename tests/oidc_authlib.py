"""The authorization code flow with PKCE against a running novads, driven by Authlib: an
independent OpenID Connect client written by other people, in another language.

Usage: python3 tests/oidc_authlib.py ISSUER CLIENT_ID REDIRECT_URI USERNAME PASSWORD
Prints one line per step; exits non-zero on the first failure.
"""

import html.parser
import secrets
import sys
from urllib.parse import parse_qs, urlparse

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt
from authlib.oidc.core import CodeIDToken


class HiddenFields(html.parser.HTMLParser):
    """Collects the login form's hidden inputs."""

    def __init__(self):
        super().__init__()
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("type") == "hidden":
            self.fields[attrs["name"]] = attrs.get("value", "")


def step(message):
    print(f"authlib: {message}", flush=True)


def main(issuer, client_id, redirect_uri, username, password):
    browser = requests.Session()
    metadata = browser.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    assert metadata["issuer"] == issuer, metadata
    assert "S256" in metadata["code_challenge_methods_supported"]
    step("discovery ok")

    client = OAuth2Session(
        client_id,
        redirect_uri=redirect_uri,
        scope="openid email profile",
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(16)
    url, state = client.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    page = browser.get(url, allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.status_code
    form = HiddenFields()
    form.feed(page.text)
    form.fields.update(username=username, password=password)
    answer = browser.post(
        f"{issuer}/oidc/login", data=form.fields, allow_redirects=False, timeout=10
    )
    assert answer.status_code == 303, (answer.status_code, answer.text[:200])
    location = answer.headers["location"]
    assert parse_qs(urlparse(location).query)["state"] == [state]
    step("login form ok")

    token = client.fetch_token(
        metadata["token_endpoint"], authorization_response=location, code_verifier=verifier
    )
    keys = JsonWebKey.import_key_set(browser.get(metadata["jwks_uri"], timeout=10).json())
    claims = jwt.decode(
        token["id_token"],
        keys,
        claims_cls=CodeIDToken,
        claims_options={"iss": {"value": issuer}},
        claims_params={"nonce": nonce, "client_id": client_id, "access_token": token["access_token"]},
    )
    claims.validate()
    assert claims["aud"] == client_id and claims["preferred_username"] == username, claims
    step(f"ID token verified against JWKS, sub={claims['sub']}")

    info = client.get(metadata["userinfo_endpoint"], timeout=10).json()
    assert info["sub"] == claims["sub"], info
    # The standard claims of the granted scopes, where relying parties such as Grafana look.
    assert info["preferred_username"] == username, info
    assert info["name"] and info["name"] == claims["name"], (info, claims)
    assert info["email"] and info["email"] == claims["email"], (info, claims)
    step(f"userinfo ok, name={info['name']!r} email={info['email']}")

    old_refresh = token["refresh_token"]
    renewed = client.refresh_token(metadata["token_endpoint"], refresh_token=old_refresh)
    assert renewed["refresh_token"] != old_refresh
    step("refresh rotated")

    revoked = client.revoke_token(
        metadata["revocation_endpoint"], token=renewed["refresh_token"]
    )
    assert revoked.status_code == 200, revoked.status_code
    try:
        client.refresh_token(metadata["token_endpoint"], refresh_token=renewed["refresh_token"])
    except Exception as error:  # authlib raises OAuthError for invalid_grant
        assert "invalid_grant" in str(error), error
    else:
        raise AssertionError("a revoked refresh token still worked")
    step("revocation ok")
    print("authlib: 1 passed, 0 failed", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:6])
