//! What can go wrong in one iteration, by category. Categories are stable strings
//! (`http_503:token`, `login_rejected`, `token_error:refresh:invalid_grant`) so runs can be
//! compared and scripts can match them.

use std::fmt;

/// The part of an iteration a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// GET of the authorization endpoint and the redirects up to the login page.
    Authorize,
    /// Submission of the login form and the redirects up to the client's redirect URI.
    Login,
    /// The authorization-code grant at the token endpoint.
    Token,
    /// The refresh-token grant.
    Refresh,
}

impl Step {
    pub const fn as_str(self) -> &'static str {
        match self {
            Step::Authorize => "authorize",
            Step::Login => "login",
            Step::Token => "token",
            Step::Refresh => "refresh",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The category of a failed iteration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// Connection refused or reset, TLS failure, malformed HTTP.
    Transport(Step),
    /// No answer within the request timeout.
    Timeout(Step),
    /// An HTTP status the flow does not expect at this step.
    Status(Step, u16),
    /// More redirects than a browser would follow.
    TooManyRedirects(Step),
    /// A redirect without a usable `Location`.
    BadLocation(Step),
    /// The authorization endpoint led to a page without the expected login form.
    LoginFormMissing,
    /// After the credentials were posted, the login form came back (wrong password, locked
    /// account, expired CSRF token...).
    LoginRejected,
    /// A page that is neither the login form nor a redirect (a consent or notice page).
    UnexpectedPage(Step),
    /// The provider answered the authorization request with a code without asking for a
    /// password although the browser had no cookie.
    NoLoginAsked,
    /// The client was sent `error=...` instead of a code.
    AuthorizationError(String),
    /// The redirect to the client carries no `code`.
    CodeMissing,
    /// The redirect to the client carries a different or no `state`.
    StateMismatch,
    /// The redirect's `iss` (RFC 9207) is not the issuer.
    IssuerMismatch,
    /// The token endpoint answered an OAuth error.
    TokenError(Step, String),
    /// The token endpoint's answer is not a usable token response.
    BadTokenResponse(Step),
    /// The ID token does not parse or names another issuer, audience or nonce.
    IdTokenInvalid(Step),
    /// Refresh mode: a sign-in returned no refresh token.
    RefreshTokenMissing,
    /// Refresh mode: the sign-in that obtains a new refresh token failed.
    SetupLogin(Box<Category>),
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Category::Transport(step) => write!(f, "transport:{step}"),
            Category::Timeout(step) => write!(f, "timeout:{step}"),
            Category::Status(step, status) => write!(f, "http_{status}:{step}"),
            Category::TooManyRedirects(step) => write!(f, "too_many_redirects:{step}"),
            Category::BadLocation(step) => write!(f, "bad_location:{step}"),
            Category::LoginFormMissing => f.write_str("login_form_missing"),
            Category::LoginRejected => f.write_str("login_rejected"),
            Category::UnexpectedPage(step) => write!(f, "unexpected_page:{step}"),
            Category::NoLoginAsked => f.write_str("no_login_asked"),
            Category::AuthorizationError(code) => write!(f, "authorization_error:{code}"),
            Category::CodeMissing => f.write_str("code_missing"),
            Category::StateMismatch => f.write_str("state_mismatch"),
            Category::IssuerMismatch => f.write_str("iss_mismatch"),
            Category::TokenError(step, code) => write!(f, "token_error:{step}:{code}"),
            Category::BadTokenResponse(step) => write!(f, "bad_token_response:{step}"),
            Category::IdTokenInvalid(step) => write!(f, "id_token_invalid:{step}"),
            Category::RefreshTokenMissing => f.write_str("refresh_token_missing"),
            Category::SetupLogin(inner) => write!(f, "setup_login:{inner}"),
        }
    }
}

/// A failed iteration: its category and a human-readable detail (URL, status, excerpt) for the
/// first occurrence shown in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowError {
    pub category: Category,
    pub detail: String,
}

impl FlowError {
    pub fn new(category: Category, detail: impl Into<String>) -> Self {
        Self {
            category,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.category, self.detail)
    }
}

impl std::error::Error for FlowError {}

/// An OAuth error code reduced to what can safely be a category: the RFC's alphabet
/// (`%x20-21 / %x23-5B / %x5D-7E` minus space), at most 48 characters.
pub fn error_code(raw: &str) -> String {
    let code: String = raw
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .take(48)
        .collect();
    if code.is_empty() {
        "unknown".to_owned()
    } else {
        code
    }
}

/// The first `max` characters of `text` on one line, for error details.
pub fn excerpt(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_stable_strings() {
        assert_eq!(
            Category::Status(Step::Token, 503).to_string(),
            "http_503:token"
        );
        assert_eq!(
            Category::TokenError(Step::Refresh, "invalid_grant".into()).to_string(),
            "token_error:refresh:invalid_grant"
        );
        assert_eq!(
            Category::SetupLogin(Box::new(Category::LoginRejected)).to_string(),
            "setup_login:login_rejected"
        );
        assert_eq!(
            Category::Timeout(Step::Authorize).to_string(),
            "timeout:authorize"
        );
    }

    #[test]
    fn error_codes_are_sanitised() {
        assert_eq!(error_code("invalid_grant"), "invalid_grant");
        assert_eq!(error_code("bad \"code\"\n"), "badcode");
        assert_eq!(error_code(""), "unknown");
        assert_eq!(error_code(&"x".repeat(100)).len(), 48);
    }

    #[test]
    fn excerpts_are_one_line_and_bounded() {
        assert_eq!(excerpt("a\n  b\tc", 10), "a b c");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }
}
