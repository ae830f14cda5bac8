//! The pages a person sees: the login form and the error page, in Latvian and English.
//! Server-rendered (askama escapes every value), no JavaScript, no third-party assets.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Path of the one stylesheet, served by novads itself.
pub const CSS_PATH: &str = "/oidc/static/login.css";

/// Strict: only our own stylesheet, no scripts, no framing.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Languages of the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locale {
    Lv,
    En,
}

impl Locale {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lv => "lv",
            Self::En => "en",
        }
    }

    pub fn parse(tag: &str) -> Option<Self> {
        let primary = tag
            .trim()
            .split(['-', '_', ';'])
            .next()?
            .to_ascii_lowercase();
        match primary.as_str() {
            "lv" => Some(Self::Lv),
            "en" => Some(Self::En),
            _ => None,
        }
    }

    /// The first supported language of `ui_locales` (space-separated, in order of preference),
    /// then of `Accept-Language`; Latvian otherwise.
    pub fn negotiate(ui_locales: Option<&str>, accept_language: Option<&str>) -> Self {
        if let Some(found) = ui_locales
            .into_iter()
            .flat_map(|v| v.split_whitespace())
            .find_map(Self::parse)
        {
            return found;
        }
        let mut ranked: Vec<(f32, Self)> = accept_language
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter_map(|item| {
                let mut parts = item.split(';');
                let locale = Self::parse(parts.next()?)?;
                let q = parts
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some((q, locale))
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranked.first().map_or(Self::Lv, |(_, l)| *l)
    }

    pub fn text(self) -> &'static Text {
        match self {
            Self::Lv => &LATVIAN,
            Self::En => &ENGLISH,
        }
    }
}

/// Every string of the pages.
pub struct Text {
    pub lang: &'static str,
    pub other_lang: &'static str,
    pub other_language_name: &'static str,
    pub language: &'static str,
    pub title: &'static str,
    pub signing_in_to: &'static str,
    pub username: &'static str,
    pub username_hint: &'static str,
    pub password: &'static str,
    pub submit: &'static str,
    /// The one message for every failed sign-in.
    pub wrong_credentials: &'static str,
    /// The realm's directory cannot be reached; `{realm}` is replaced by the realm's display
    /// name. Says nothing about the account: every account of the realm is told the same.
    pub directory_unreachable: &'static str,
    /// A source that failed too often, told to wait (the page comes with `429`).
    pub too_many_attempts: &'static str,
    pub expired: &'static str,
    pub error_title: &'static str,
    pub signed_out_title: &'static str,
    pub signed_out: &'static str,
    /// Asked when a logout link carries no ID token of ours (anyone can send such a link).
    pub sign_out_question: &'static str,
    pub sign_out_button: &'static str,
}

static LATVIAN: Text = Text {
    lang: "lv",
    other_lang: "en",
    other_language_name: "English",
    language: "Valoda",
    title: "Pieteikšanās",
    signing_in_to: "Jūs piesakāties lietotnē",
    username: "Lietotājvārds",
    username_hint: "Piemēram, jana@talsi (vārds@pašvaldība)",
    password: "Parole",
    submit: "Pieteikties",
    wrong_credentials: "Nepareizs lietotājvārds vai parole.",
    directory_unreachable: "Pašvaldības lietotāju katalogs ({realm}) pašlaik nav sasniedzams, tāpēc pieteikties nevar. Lūdzu, pēc brīža mēģiniet vēlreiz.",
    too_many_attempts: "Pārāk daudz neveiksmīgu mēģinājumu. Lūdzu, pagaidiet brīdi un mēģiniet vēlreiz.",
    expired: "Pieteikšanās laiks beidzās. Lūdzu, atveriet lietotni un mēģiniet vēlreiz.",
    error_title: "Pieteikšanās nav iespējama",
    signed_out_title: "Izrakstīšanās",
    signed_out: "Jūs esat izrakstījies no visām lietotnēm.",
    sign_out_question: "Vai izrakstīties no visām lietotnēm?",
    sign_out_button: "Izrakstīties",
};

static ENGLISH: Text = Text {
    lang: "en",
    other_lang: "lv",
    other_language_name: "Latviešu",
    language: "Language",
    title: "Sign in",
    signing_in_to: "You are signing in to",
    username: "Username",
    username_hint: "For example jana@talsi (name@municipality)",
    password: "Password",
    submit: "Sign in",
    wrong_credentials: "Wrong username or password.",
    directory_unreachable: "The municipality's user directory ({realm}) cannot be reached at the moment, so nobody can sign in. Please try again shortly.",
    too_many_attempts: "Too many failed attempts. Please wait a moment and try again.",
    expired: "The sign-in page expired. Please open the application and try again.",
    error_title: "Cannot sign in",
    signed_out_title: "Signed out",
    signed_out: "You are signed out of every application.",
    sign_out_question: "Sign out of every application?",
    sign_out_button: "Sign out",
};

impl Text {
    /// [`Text::directory_unreachable`] for one realm.
    pub fn directory_unreachable_for(&self, realm: &str) -> String {
        self.directory_unreachable.replace("{realm}", realm)
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub text: &'a Text,
    pub css_path: &'a str,
    pub action: &'a str,
    pub client_id: &'a str,
    /// The sealed authorization request (`oidc/sealed_request.rs`).
    pub sealed_request: &'a str,
    pub csrf: &'a str,
    pub username: &'a str,
    pub error: Option<&'a str>,
    pub switch_href: &'a str,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub lang: &'a str,
    pub css_path: &'a str,
    pub title: &'a str,
    pub message: &'a str,
}

#[derive(Template)]
#[template(path = "logout_confirm.html")]
pub struct LogoutConfirmPage<'a> {
    pub lang: &'a str,
    pub css_path: &'a str,
    pub title: &'a str,
    pub question: &'a str,
    pub button: &'a str,
    pub csrf: &'a str,
    pub client_id: Option<&'a str>,
    pub post_logout_redirect_uri: Option<&'a str>,
    pub state: Option<&'a str>,
}

/// Renders a page with the security headers every page carries.
pub fn html(status: StatusCode, page: &impl Template) -> Response {
    let body = match page.render() {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// An error page in `locale`.
pub fn error_page(status: StatusCode, locale: Locale, message: &str) -> Response {
    message_page(status, locale, locale.text().error_title, message)
}

/// A page with a title and one message.
pub fn message_page(status: StatusCode, locale: Locale, title: &str, message: &str) -> Response {
    html(
        status,
        &ErrorPage {
            lang: locale.text().lang,
            css_path: CSS_PATH,
            title,
            message,
        },
    )
}

/// Why a sign-in page cannot go on, answered as an error page in the person's language.
/// Handlers of the pages return `Result<Response, PageError>` and refuse with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageError {
    /// The sign-in request is unknown, finished or expired.
    Expired(Locale),
    /// The form does not carry this browser's CSRF token.
    Forbidden(Locale),
    /// The request is malformed; the message says how.
    BadRequest(Locale, String),
    /// Storage failed; logged where it happened ([`PageError::unavailable`]).
    Unavailable(Locale),
    /// Too many sign-ins were started by this address (429); try again after the given
    /// seconds.
    TryLater(Locale, StatusCode, u64),
}

impl PageError {
    /// A storage failure: logged here, the person sees only that sign-in is unavailable.
    pub fn unavailable(locale: Locale, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "sign-in storage unavailable");
        Self::Unavailable(locale)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            Self::Expired(locale) => error_page(StatusCode::GONE, locale, locale.text().expired),
            Self::Forbidden(locale) => {
                error_page(StatusCode::FORBIDDEN, locale, locale.text().expired)
            }
            Self::BadRequest(locale, message) => {
                error_page(StatusCode::BAD_REQUEST, locale, &message)
            }
            Self::Unavailable(locale) => error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                locale,
                "Sign-in is temporarily unavailable.",
            ),
            Self::TryLater(locale, status, seconds) => {
                let mut page = error_page(
                    status,
                    locale,
                    "Too many sign-ins were started; try again in a minute.",
                );
                page.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, seconds.into());
                page
            }
        }
    }
}

/// The stylesheet: plain, readable, large targets, visible focus.
pub const STYLESHEET: &str = "\
body{font-family:system-ui,sans-serif;background:#f4f6f8;color:#1b1f24;margin:0}\
main{max-width:26rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:8px;\
box-shadow:0 1px 4px rgba(0,0,0,.15)}\
h1{font-size:1.5rem;margin-top:0}\
label{display:block;font-weight:600;margin-top:1rem}\
input{display:block;width:100%;box-sizing:border-box;font-size:1rem;padding:.6rem;\
margin-top:.3rem;border:1px solid #6b7280;border-radius:4px}\
input:focus,button:focus,a:focus{outline:3px solid #1d4ed8;outline-offset:2px}\
.hint{font-size:.875rem;color:#4b5563;margin:.3rem 0 0}\
.error{color:#991b1b;background:#fee2e2;padding:.6rem;border-radius:4px}\
button{margin-top:1.5rem;width:100%;font-size:1rem;padding:.7rem;background:#1d4ed8;\
color:#fff;border:0;border-radius:4px;cursor:pointer}\
.languages{margin-top:1.5rem;text-align:right}\
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_negotiation() {
        assert_eq!(Locale::negotiate(Some("en lv"), Some("lv")), Locale::En);
        assert_eq!(Locale::negotiate(Some("de lv-LV"), None), Locale::Lv);
        assert_eq!(
            Locale::negotiate(None, Some("de,en-GB;q=0.8,lv;q=0.5")),
            Locale::En
        );
        assert_eq!(
            Locale::negotiate(None, Some("lv;q=0.9,en;q=0.2")),
            Locale::Lv
        );
        assert_eq!(Locale::negotiate(None, Some("fr")), Locale::Lv);
        assert_eq!(Locale::negotiate(None, None), Locale::Lv);
    }

    #[test]
    fn values_are_escaped() {
        let page = LoginPage {
            text: Locale::En.text(),
            css_path: CSS_PATH,
            action: "/oidc/login",
            client_id: "<script>alert(1)</script>",
            sealed_request: "r",
            csrf: "c",
            username: "\"><img src=x onerror=alert(1)>",
            error: Some("Wrong username or password."),
            switch_href: "/oidc/login?request=r&lang=lv",
        };
        let html = page.render().expect("renders");
        assert!(!html.contains("<script>alert"));
        assert!(!html.contains("<img src=x"));
        assert!(html.contains("&#60;script&#62;"));
        assert!(html.contains("role=\"alert\""));
        assert!(html.contains("aria-invalid=\"true\""));
        assert!(html.contains("<label for=\"username\">"));
    }
}
