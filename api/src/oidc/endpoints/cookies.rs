//! The provider's cookies: the login form's CSRF token and the single sign-on session.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

/// Name of the cookie that carries the login form's CSRF token (double submit).
pub const CSRF_COOKIE: &str = "novads_csrf";
/// Name of the cookie that carries the logout confirmation's CSRF token (double submit).
pub const LOGOUT_CSRF_COOKIE: &str = "novads_logout_csrf";
/// Name of the single sign-on session cookie.
pub const SESSION_COOKIE: &str = "novads_session";

/// Adds a cookie; `Secure` whenever the issuer is served over https.
pub fn set_cookie(
    issuer: &str,
    response: &mut Response,
    name: &str,
    value: &str,
    attributes: &str,
) {
    let secure = if issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    if let Ok(header) = HeaderValue::from_str(&format!("{name}={value}; {attributes}{secure}")) {
        response.headers_mut().append(header::SET_COOKIE, header);
    }
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}
