//! `Idempotency-Key` on the admin API's creates: a client unsure whether a create went through
//! sends it again with the same key and gets the first answer, without a second write. The
//! first successful answer is kept in `admin_idempotency_keys` for [`KEY_LIFETIME`], per caller
//! (the token's subject); the same key with another request is refused
//! (`idempotency-key-reused`, 422), and while the first is still in flight a second is refused
//! (`conflict`). Expired keys are swept by every new claim.

use std::time::Duration;

use aws_lc_rs::digest::{self, SHA256};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::problem::AdminError;
use crate::db::{Database, WriteScope, on_pool, on_write};

/// How long a key and its answer are kept.
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest key accepted; keys are meant to be UUIDs or similar.
pub const MAX_KEY_LENGTH: usize = 255;
/// The headers of an answer that are kept with it and replayed.
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::ETAG, header::LOCATION];

/// The `Idempotency-Key` of a request, if it has one: 1 to 255 visible ASCII characters,
/// optionally quoted (as the IETF draft writes it, a structured-field string).
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, AdminError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    let key = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    let valid = (1..=MAX_KEY_LENGTH).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
    if valid {
        Ok(Some(key.to_owned()))
    } else {
        Err(AdminError::InvalidRequest(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters, such as a UUID"
        )))
    }
}

/// What makes two requests the same request: method, path and body. SHA-256, hex.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut context = digest::Context::new(&SHA256);
    for part in [method.as_bytes(), b"\n", path.as_bytes(), b"\n", body] {
        context.update(part);
    }
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An answer as kept for replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptAnswer {
    pub status: u16,
    /// Header name → value, of [`KEPT_HEADERS`].
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl IntoResponse for KeptAnswer {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// What a claim of a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new: the request runs, and its answer is kept ([`IdempotencyKeys::keep`]) or
    /// the key released ([`IdempotencyKeys::release`]).
    Fresh,
    /// The same request was answered before: this is its answer.
    Answered(KeptAnswer),
    /// The same request is still being handled.
    InFlight,
    /// The key was used for another request.
    Reused,
}

/// `admin_idempotency_keys`.
pub struct IdempotencyKeys<'a> {
    pub db: &'a Database,
}

impl IdempotencyKeys<'_> {
    /// Claims `key` of `subject` for the request `fingerprint` at `now_ms`, after sweeping
    /// expired keys.
    pub async fn claim(
        &self,
        subject: &str,
        key: &str,
        fingerprint: &str,
        now_ms: i64,
    ) -> Result<Claim, sqlx::Error> {
        let expires_at = now_ms.saturating_add(KEY_LIFETIME.as_millis() as i64);
        let mut write = self.db.begin_write(WriteScope::Transaction).await?;
        let inserted = on_write!(&mut write, |conn| {
            sqlx::query("DELETE FROM admin_idempotency_keys WHERE expires_at <= $1")
                .bind(now_ms)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "INSERT INTO admin_idempotency_keys \
                 (subject, idempotency_key, fingerprint, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subject, idempotency_key) DO NOTHING",
            )
            .bind(subject)
            .bind(key)
            .bind(fingerprint)
            .bind(now_ms)
            .bind(expires_at)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        });
        write.commit().await?;
        if inserted == 1 {
            return Ok(Claim::Fresh);
        }
        let found: Option<(String, Option<i64>, Option<String>)> = on_pool!(self.db, |pool| {
            sqlx::query_as(
                "SELECT fingerprint, CAST(status AS BIGINT), response FROM admin_idempotency_keys \
                 WHERE subject = $1 AND idempotency_key = $2",
            )
            .bind(subject)
            .bind(key)
            .fetch_optional(pool)
            .await?
        });
        Ok(match found {
            // Released between the insert and the read: the caller may simply try again.
            None => Claim::InFlight,
            Some((kept, _, _)) if kept != fingerprint => Claim::Reused,
            Some((_, Some(_), Some(response))) => serde_json::from_str(&response)
                .map(Claim::Answered)
                .unwrap_or(Claim::InFlight),
            Some(_) => Claim::InFlight,
        })
    }

    /// Keeps the answer of a request that claimed `key`.
    pub async fn keep(
        &self,
        subject: &str,
        key: &str,
        answer: &KeptAnswer,
    ) -> Result<(), sqlx::Error> {
        let response = serde_json::to_string(answer).unwrap_or_default();
        let mut write = self.db.begin_write(WriteScope::Statement).await?;
        on_write!(&mut write, |conn| {
            sqlx::query(
                "UPDATE admin_idempotency_keys SET status = $1, response = $2 \
                 WHERE subject = $3 AND idempotency_key = $4",
            )
            .bind(i64::from(answer.status))
            .bind(response)
            .bind(subject)
            .bind(key)
            .execute(&mut *conn)
            .await?;
        });
        write.commit().await
    }

    /// Gives `key` up after its request failed, so that it may be used again.
    pub async fn release(&self, subject: &str, key: &str) -> Result<(), sqlx::Error> {
        let mut write = self.db.begin_write(WriteScope::Statement).await?;
        on_write!(&mut write, |conn| {
            sqlx::query(
                "DELETE FROM admin_idempotency_keys \
                 WHERE subject = $1 AND idempotency_key = $2 AND status IS NULL",
            )
            .bind(subject)
            .bind(key)
            .execute(&mut *conn)
            .await?;
        });
        write.commit().await
    }
}

/// Runs `create` at most once per `key` of `subject` (every time without a key): a repeat of
/// an answered request gets the kept answer, a failed request releases its key.
pub async fn once(
    db: &Database,
    subject: &str,
    key: Option<String>,
    fingerprint: &str,
    create: impl Future<Output = Result<Response, AdminError>>,
) -> Result<Response, AdminError> {
    let Some(key) = key else {
        return create.await;
    };
    let keys = IdempotencyKeys { db };
    let now_ms = chrono::Utc::now().timestamp_millis();
    match keys
        .claim(subject, &key, fingerprint, now_ms)
        .await
        .map_err(|e| AdminError::storage("claiming an idempotency key failed", e))?
    {
        Claim::Fresh => {}
        Claim::Answered(answer) => return Ok(answer.into_response()),
        Claim::InFlight => {
            return Err(AdminError::Conflict(
                "a request with this Idempotency-Key is still being handled; try again".to_owned(),
            ));
        }
        Claim::Reused => {
            return Err(AdminError::IdempotencyKeyReused(
                "this Idempotency-Key was used for another request; use a new key".to_owned(),
            ));
        }
    }
    let answered = create.await;
    let response = match answered {
        Ok(response) if response.status().is_success() => response,
        other => {
            if let Err(e) = keys.release(subject, &key).await {
                tracing::warn!(error = %e, "could not release an idempotency key");
            }
            return other;
        }
    };
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, super::MAX_BODY_BYTES * 4)
        .await
        .map_err(|e| AdminError::storage("reading an answer to keep failed", e))?;
    let answer = KeptAnswer {
        status: parts.status.as_u16(),
        headers: KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = parts.headers.get(name)?.to_str().ok()?;
                Some((name.as_str().to_owned(), value.to_owned()))
            })
            .collect(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    };
    // The create happened: its answer goes out even if it cannot be kept (logged).
    if let Err(e) = keys.keep(subject, &key, &answer).await {
        tracing::warn!(error = %e, "could not keep the answer of an idempotent create");
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "idempotency-key",
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    #[test]
    fn keys_are_visible_ascii_optionally_quoted() {
        assert_eq!(key_of(&HeaderMap::new()), Ok(None));
        assert_eq!(
            key_of(&headers("8e03978e-40d5-43e8-bc93-6894a57f9324")),
            Ok(Some("8e03978e-40d5-43e8-bc93-6894a57f9324".into()))
        );
        assert_eq!(key_of(&headers("\"abc\"")), Ok(Some("abc".into())));
        for bad in ["", "\"\"", "a b", &"k".repeat(256)] {
            assert!(key_of(&headers(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_fingerprint_covers_method_path_and_body() {
        let base = fingerprint("POST", "/api/v1/municipalities", b"{}");
        assert_eq!(base.len(), 64);
        assert_eq!(base, fingerprint("POST", "/api/v1/municipalities", b"{}"));
        assert_ne!(base, fingerprint("POST", "/api/v1/municipalities", b"{ }"));
        assert_ne!(base, fingerprint("POST", "/api/v1/municipalitie", b"s{}"));
    }

    #[test]
    fn a_kept_answer_replays_status_headers_and_body() {
        let answer = KeptAnswer {
            status: 201,
            headers: vec![("location".into(), "/api/v1/municipalities/riga".into())],
            body: "{\"code\":\"riga\"}".into(),
        };
        let response = answer.into_response();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(
            response.headers()[header::LOCATION],
            "/api/v1/municipalities/riga"
        );
    }
}
