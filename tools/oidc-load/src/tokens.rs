//! Reading token responses (RFC 6749 §5) and checking the ID token's claims that tie it to
//! this request (issuer, audience, nonce). Signatures are not verified: the driver measures a
//! provider, it does not protect an application.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::outcome::{Category, FlowError, Step, error_code, excerpt};

/// What a token response carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub access_token: String,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
}

/// What the ID token must say.
#[derive(Debug, Clone, Copy)]
pub struct IdTokenExpectations<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The code flow's nonce; `None` after a refresh (no nonce is sent then).
    pub nonce: Option<&'a str>,
    /// Whether an ID token must be present (scope `openid` in the code flow).
    pub required: bool,
}

/// Reads a token endpoint answer of HTTP status `status` with body `body`.
pub fn parse_token_response(
    step: Step,
    status: u16,
    body: &str,
    expect: &IdTokenExpectations<'_>,
) -> Result<Tokens, FlowError> {
    let json: Option<Value> = serde_json::from_str(body).ok();
    if status != 200 {
        let error = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(Value::as_str);
        return Err(match error {
            Some(code) => FlowError::new(
                Category::TokenError(step, error_code(code)),
                format!(
                    "HTTP {status}: {}",
                    json.as_ref()
                        .and_then(|j| j.get("error_description"))
                        .and_then(Value::as_str)
                        .unwrap_or(code)
                ),
            ),
            None => FlowError::new(
                Category::Status(step, status),
                format!(
                    "token endpoint answered HTTP {status}: {}",
                    excerpt(body, 200)
                ),
            ),
        });
    }
    let bad = |why: &str| {
        FlowError::new(
            Category::BadTokenResponse(step),
            format!("{why}: {}", excerpt(body, 200)),
        )
    };
    let Some(json) = json.filter(Value::is_object) else {
        return Err(bad("not a JSON object"));
    };
    let string = |name: &str| {
        json.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let Some(access_token) = string("access_token") else {
        return Err(bad("no access_token"));
    };
    if !string("token_type").is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
        return Err(bad("token_type is not Bearer"));
    }
    let id_token = string("id_token");
    match &id_token {
        Some(token) => check_id_token(step, token, expect)?,
        None if expect.required => return Err(bad("no id_token")),
        None => {}
    }
    Ok(Tokens {
        access_token,
        id_token,
        refresh_token: string("refresh_token"),
    })
}

/// The claims of a compact JWS, unverified.
pub fn jwt_claims(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

fn check_id_token(
    step: Step,
    token: &str,
    expect: &IdTokenExpectations<'_>,
) -> Result<(), FlowError> {
    let invalid = |why: String| FlowError::new(Category::IdTokenInvalid(step), why);
    let Some(claims) = jwt_claims(token) else {
        return Err(invalid(
            "the id_token is not a JWT with a JSON payload".into(),
        ));
    };
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if iss.trim_end_matches('/') != expect.issuer.trim_end_matches('/') {
        return Err(invalid(format!("iss {iss:?} is not {:?}", expect.issuer)));
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expect.client_id,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(expect.client_id)),
        _ => false,
    };
    if !audience_ok {
        return Err(invalid(format!(
            "aud {} does not name {:?}",
            claims.get("aud").unwrap_or(&Value::Null),
            expect.client_id
        )));
    }
    if let Some(nonce) = expect.nonce {
        let got = claims.get("nonce").and_then(Value::as_str);
        if got != Some(nonce) {
            return Err(invalid(format!("nonce {got:?} is not the one sent")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(claims: Value) -> String {
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.sig", enc(&json!({"alg": "ES256"})), enc(&claims))
    }

    const EXPECT: IdTokenExpectations<'static> = IdTokenExpectations {
        issuer: "http://127.0.0.1:8080",
        client_id: "bench",
        nonce: Some("n1"),
        required: true,
    };

    fn body(id_token: &str) -> String {
        json!({
            "access_token": "at", "token_type": "Bearer", "expires_in": 600,
            "id_token": id_token, "refresh_token": "rt"
        })
        .to_string()
    }

    #[test]
    fn accepts_a_matching_response() {
        let id = jwt(json!({"iss": "http://127.0.0.1:8080/", "aud": "bench", "nonce": "n1"}));
        let tokens = parse_token_response(Step::Token, 200, &body(&id), &EXPECT).expect("ok");
        assert_eq!(tokens.access_token, "at");
        assert_eq!(tokens.refresh_token.as_deref(), Some("rt"));
        let id = jwt(json!({"iss": "http://127.0.0.1:8080", "aud": ["x", "bench"], "nonce": "n1"}));
        assert!(parse_token_response(Step::Token, 200, &body(&id), &EXPECT).is_ok());
    }

    #[test]
    fn rejects_foreign_id_tokens() {
        let category = |claims: Value| {
            parse_token_response(Step::Token, 200, &body(&jwt(claims)), &EXPECT)
                .map_err(|e| e.category)
        };
        let invalid = Err(Category::IdTokenInvalid(Step::Token));
        assert_eq!(
            category(json!({"iss": "https://other", "aud": "bench", "nonce": "n1"})),
            invalid
        );
        assert_eq!(
            category(json!({"iss": "http://127.0.0.1:8080", "aud": "other", "nonce": "n1"})),
            invalid
        );
        assert_eq!(
            category(json!({"iss": "http://127.0.0.1:8080", "aud": "bench", "nonce": "n2"})),
            invalid
        );
        assert_eq!(
            parse_token_response(Step::Token, 200, &body("not-a-jwt"), &EXPECT)
                .map_err(|e| e.category),
            invalid
        );
    }

    #[test]
    fn refresh_needs_no_nonce_and_no_id_token() {
        let expect = IdTokenExpectations {
            nonce: None,
            required: false,
            ..EXPECT
        };
        let body = json!({"access_token": "at2", "token_type": "bearer"}).to_string();
        let tokens = parse_token_response(Step::Refresh, 200, &body, &expect).expect("ok");
        assert_eq!(tokens.refresh_token, None);
        assert_eq!(tokens.id_token, None);
    }

    #[test]
    fn errors_are_categorised() {
        let category = |status: u16, body: &str| {
            parse_token_response(Step::Refresh, status, body, &EXPECT).map_err(|e| e.category)
        };
        assert_eq!(
            category(
                400,
                r#"{"error":"invalid_grant","error_description":"used"}"#
            ),
            Err(Category::TokenError(Step::Refresh, "invalid_grant".into()))
        );
        assert_eq!(
            category(502, "<html>bad gateway</html>"),
            Err(Category::Status(Step::Refresh, 502))
        );
        assert_eq!(
            category(200, "[]"),
            Err(Category::BadTokenResponse(Step::Refresh))
        );
        assert_eq!(
            category(200, r#"{"access_token":"a","token_type":"mac"}"#),
            Err(Category::BadTokenResponse(Step::Refresh))
        );
        assert_eq!(
            category(200, r#"{"access_token":"a","token_type":"Bearer"}"#),
            Err(Category::BadTokenResponse(Step::Refresh)),
            "id_token required"
        );
    }
}
