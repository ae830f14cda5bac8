//! Finding and filling a login form the way a browser would submit it: the form that holds
//! the password field, its method and action (resolved against the page or `<base href>`),
//! and every successful control it carries (hidden CSRF tokens, request ids, checked boxes,
//! selected options), so the driver needs to know nothing about a provider's page.

use scraper::{ElementRef, Html};
use url::Url;

/// How the form is submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// A form ready to be filled in and submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// Absolute target, without fragment.
    pub action: Url,
    pub method: Method,
    /// The form data set in document order (names may repeat).
    pub fields: Vec<(String, String)>,
}

/// Why no login form was found on a page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// The page has no `<form>` at all.
    #[error("the page has no form")]
    NoForm,
    /// Forms exist, but none has a control named like the password field.
    #[error("no form has a field named {expected:?} (password fields on the page: {found:?})")]
    NoPasswordField {
        expected: String,
        found: Vec<String>,
    },
    /// The form's action is not a usable URL.
    #[error("form action {0:?} is not a valid URL")]
    BadAction(String),
}

impl Form {
    /// Sets field `name` to `value`: replaces its first occurrence (dropping repeats), or
    /// appends it when the form lacks it.
    pub fn set(&mut self, name: &str, value: &str) {
        let mut seen = false;
        self.fields.retain_mut(|(n, v)| {
            if n != name {
                return true;
            }
            if seen {
                return false;
            }
            seen = true;
            *v = value.to_owned();
            true
        });
        if !seen {
            self.fields.push((name.to_owned(), value.to_owned()));
        }
    }

    /// The fields as an `application/x-www-form-urlencoded` string.
    pub fn encoded(&self) -> String {
        encode_pairs(self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The target of a GET submission: the action with its query replaced by the fields, as
    /// browsers do.
    pub fn get_url(&self) -> Url {
        let mut url = self.action.clone();
        url.set_query(Some(&self.encoded()));
        url
    }
}

/// `application/x-www-form-urlencoded` serialisation of `pairs`.
pub fn encode_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        serializer.append_pair(k, v);
    }
    serializer.finish()
}

/// Finds the form on `html` (served at `page_url`) that has a control named `password_field`.
pub fn find_login_form(
    html: &str,
    page_url: &Url,
    password_field: &str,
) -> Result<Form, FormError> {
    let document = Html::parse_document(html);
    let root = document.root_element();
    let base = root
        .descendent_elements()
        .find(|e| e.value().name() == "base" && e.attr("href").is_some())
        .and_then(|e| e.attr("href"))
        .and_then(|href| page_url.join(href.trim()).ok())
        .unwrap_or_else(|| page_url.clone());
    let forms: Vec<ElementRef<'_>> = root
        .descendent_elements()
        .filter(|e| e.value().name() == "form")
        .collect();
    if forms.is_empty() {
        return Err(FormError::NoForm);
    }
    let Some((form, controls)) = forms.iter().find_map(|form| {
        let controls = controls_of(root, *form);
        controls
            .iter()
            .any(|c| c.attr("name") == Some(password_field))
            .then_some((*form, controls))
    }) else {
        let found = root
            .descendent_elements()
            .filter(|e| is_password_input(e))
            .filter_map(|e| e.attr("name").map(str::to_owned))
            .collect();
        return Err(FormError::NoPasswordField {
            expected: password_field.to_owned(),
            found,
        });
    };
    let action = match form.attr("action").map(str::trim) {
        // An empty or missing action submits to the document's own URL.
        None | Some("") => page_url.clone(),
        Some(action) => base
            .join(action)
            .map_err(|_| FormError::BadAction(action.to_owned()))?,
    };
    let mut action = action;
    action.set_fragment(None);
    let method = match form.attr("method").map(str::to_ascii_lowercase).as_deref() {
        Some("post") => Method::Post,
        _ => Method::Get,
    };
    Ok(Form {
        action,
        method,
        fields: data_set(&controls),
    })
}

/// Whether `html` shows a password field anywhere: after a login post, the sign of a refused
/// sign-in (the form shown again).
pub fn has_password_field(html: &str) -> bool {
    let document = Html::parse_document(html);
    document
        .root_element()
        .descendent_elements()
        .any(|e| is_password_input(&e))
}

/// What a person would read on a page, for error details: the title, then the visible text of
/// the body (scripts, styles and templates left out), on one line, at most `max` characters.
pub fn page_text(html: &str, max: usize) -> String {
    let document = Html::parse_document(html);
    let root = document.root_element();
    let title: String = root
        .descendent_elements()
        .find(|e| e.value().name() == "title")
        .map(|t| t.text().collect())
        .unwrap_or_default();
    let mut text = String::new();
    if let Some(body) = root
        .descendent_elements()
        .find(|e| e.value().name() == "body")
    {
        for node in body.descendants() {
            let Some(chunk) = node.value().as_text() else {
                continue;
            };
            let hidden = node.ancestors().any(|a| {
                a.value().as_element().is_some_and(|e| {
                    matches!(e.name(), "script" | "style" | "template" | "noscript")
                })
            });
            if !hidden {
                text.push(' ');
                text.push_str(chunk);
            }
        }
    }
    let joined = format!("{}: {}", title.trim(), text);
    crate::outcome::excerpt(&joined, max)
}

fn is_password_input(e: &ElementRef<'_>) -> bool {
    e.value().name() == "input"
        && e.attr("type")
            .is_some_and(|t| t.eq_ignore_ascii_case("password"))
}

/// The controls of `form` in document order: its descendants and the elements elsewhere that
/// name it with `form="id"`.
fn controls_of<'a>(root: ElementRef<'a>, form: ElementRef<'a>) -> Vec<ElementRef<'a>> {
    let is_control =
        |e: &ElementRef<'_>| matches!(e.value().name(), "input" | "select" | "textarea" | "button");
    let form_id = form.value().id();
    root.descendent_elements()
        .filter(is_control)
        .filter(|e| match (e.attr("form"), form_id) {
            (Some(owner), Some(id)) => owner == id,
            (Some(_), None) => false,
            (None, _) => e.ancestors().any(|a| a.id() == form.id()),
        })
        .collect()
}

/// The form data set (HTML's "constructing the entry list"), submitting with the first submit
/// button.
fn data_set(controls: &[ElementRef<'_>]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut submitter_used = false;
    for control in controls {
        let Some(name) = control.attr("name").filter(|n| !n.is_empty()) else {
            continue;
        };
        if control.attr("disabled").is_some() {
            continue;
        }
        let value = control.attr("value").unwrap_or("");
        match control.value().name() {
            "input" => {
                let kind = control
                    .attr("type")
                    .map(str::to_ascii_lowercase)
                    .unwrap_or_else(|| "text".to_owned());
                match kind.as_str() {
                    "checkbox" | "radio" => {
                        if control.attr("checked").is_some() {
                            let value = if value.is_empty() { "on" } else { value };
                            fields.push((name.to_owned(), value.to_owned()));
                        }
                    }
                    "submit" => {
                        if !submitter_used {
                            submitter_used = true;
                            fields.push((name.to_owned(), value.to_owned()));
                        }
                    }
                    "image" | "button" | "reset" | "file" => {}
                    _ => fields.push((name.to_owned(), value.to_owned())),
                }
            }
            "button" => {
                let kind = control
                    .attr("type")
                    .map(str::to_ascii_lowercase)
                    .unwrap_or_else(|| "submit".to_owned());
                if kind == "submit" && !submitter_used {
                    submitter_used = true;
                    fields.push((name.to_owned(), value.to_owned()));
                }
            }
            "select" => {
                let options: Vec<ElementRef<'_>> = control
                    .descendent_elements()
                    .filter(|e| e.value().name() == "option" && e.attr("disabled").is_none())
                    .collect();
                let option_value = |o: &ElementRef<'_>| {
                    o.attr("value")
                        .map(str::to_owned)
                        .unwrap_or_else(|| o.text().collect::<String>().trim().to_owned())
                };
                let selected: Vec<&ElementRef<'_>> = options
                    .iter()
                    .filter(|o| o.attr("selected").is_some())
                    .collect();
                if selected.is_empty() {
                    if control.attr("multiple").is_none()
                        && let Some(first) = options.first()
                    {
                        fields.push((name.to_owned(), option_value(first)));
                    }
                } else {
                    for o in selected {
                        fields.push((name.to_owned(), option_value(o)));
                    }
                }
            }
            "textarea" => {
                fields.push((name.to_owned(), control.text().collect::<String>()));
            }
            _ => {}
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    const NOVADS_LIKE: &str = r#"<!DOCTYPE html><html><head><title>x</title></head><body>
        <form method="get" action="/search"><input name="q"></form>
        <form method="post" action="/oidc/login" novalidate>
        <input type="hidden" name="request" value="req-1">
        <input type="hidden" name="csrf" value="tok&amp;en">
        <input id="username" name="username" type="text" value="">
        <input id="password" name="password" type="password" required>
        <button type="submit">Sign in</button>
        </form></body></html>"#;

    #[test]
    fn picks_the_form_with_the_password_field_and_keeps_hidden_inputs() {
        let page = url("http://127.0.0.1:8080/oidc/authorize?client_id=a&state=s");
        let form = find_login_form(NOVADS_LIKE, &page, "password").expect("form");
        assert_eq!(form.method, Method::Post);
        assert_eq!(form.action.as_str(), "http://127.0.0.1:8080/oidc/login");
        assert_eq!(
            form.fields,
            vec![
                ("request".into(), "req-1".into()),
                ("csrf".into(), "tok&en".into()),
                ("username".into(), "".into()),
                ("password".into(), "".into()),
            ]
        );
    }

    #[test]
    fn fills_credentials_and_encodes() {
        let page = url("http://127.0.0.1:8080/oidc/authorize");
        let mut form = find_login_form(NOVADS_LIKE, &page, "password").expect("form");
        form.set("username", "jana@talsi");
        form.set("password", "p&ss word=1");
        form.set("extra", "x");
        assert_eq!(
            form.encoded(),
            "request=req-1&csrf=tok%26en&username=jana%40talsi&password=p%26ss+word%3D1&extra=x"
        );
    }

    #[test]
    fn relative_actions_resolve_against_the_page_and_base() {
        let page = url("https://sso.example/portal/login/?url=aHR0cA#top");
        let html = |action: &str| {
            format!(
                r#"<form method="POST" {action}><input name="user"><input type="password" name="pwd"></form>"#
            )
        };
        let cases = [
            ("", "https://sso.example/portal/login/?url=aHR0cA"),
            (
                r#"action="""#,
                "https://sso.example/portal/login/?url=aHR0cA",
            ),
            (
                r##"action="#""##,
                "https://sso.example/portal/login/?url=aHR0cA",
            ),
            (r#"action="next""#, "https://sso.example/portal/login/next"),
            (
                r#"action="../auth?x=1""#,
                "https://sso.example/portal/auth?x=1",
            ),
            (r#"action="/""#, "https://sso.example/"),
            (r#"action="//other.example/p""#, "https://other.example/p"),
        ];
        for (attr, expected) in cases {
            let form = find_login_form(&html(attr), &page, "pwd").expect("form");
            assert_eq!(form.action.as_str(), expected, "{attr}");
            assert_eq!(form.method, Method::Post);
        }
        let with_base = r#"<html><head><base href="https://cdn.example/app/"></head><body>
            <form action="login"><input type="password" name="pwd"></form></body></html>"#;
        let form = find_login_form(with_base, &page, "pwd").expect("form");
        assert_eq!(form.action.as_str(), "https://cdn.example/app/login");
        assert_eq!(form.method, Method::Get, "GET is the default method");
        assert_eq!(
            form.get_url().as_str(),
            "https://cdn.example/app/login?pwd="
        );
    }

    /// The shape of LemonLDAP::NG's portal form: action "#", hidden `url`/`skin`/`token`,
    /// a select and a checkbox.
    #[test]
    fn lemonldap_like_form() {
        let html = r##"<form action="#" method="post" class="login" role="form">
            <input type="hidden" name="url" value="aHR0cDovL2F1dGg=">
            <input type="hidden" name="timezone">
            <input type="hidden" name="skin" value="bootstrap">
            <input type="hidden" name="token" value="1700000000_123">
            <select name="lmAuth"><option value="1_LDAP">LDAP</option><option value="2_Demo" selected>Demo</option></select>
            <input name="user" type="text" class="form-control" required>
            <input name="password" type="password" class="form-control" required>
            <input type="checkbox" name="checkLogins" value="1">
            <input type="checkbox" name="stayconnected" value="1" checked>
            <input type="checkbox" name="disabled" value="1" checked disabled>
            <textarea name="note">hi</textarea>
            <input type="submit" name="go" value="Connect"><input type="submit" name="other" value="No">
            </form>"##;
        let page = url("http://auth.example.com/oauth2/authorize?client_id=rp&state=s");
        let mut form = find_login_form(html, &page, "password").expect("form");
        assert_eq!(
            form.action.as_str(),
            "http://auth.example.com/oauth2/authorize?client_id=rp&state=s"
        );
        form.set("user", "jana");
        form.set("password", "pw");
        let names: Vec<(&str, &str)> = form
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("url", "aHR0cDovL2F1dGg="),
                ("timezone", ""),
                ("skin", "bootstrap"),
                ("token", "1700000000_123"),
                ("lmAuth", "2_Demo"),
                ("user", "jana"),
                ("password", "pw"),
                ("stayconnected", "1"),
                ("note", "hi"),
                ("go", "Connect"),
            ]
        );
    }

    #[test]
    fn controls_outside_the_form_that_name_it_belong_to_it() {
        let html = r#"<form id="f" method="post" action="/l"><input type="password" name="pw"></form>
            <input type="hidden" form="f" name="csrf" value="c">
            <input type="hidden" name="stray" value="s">"#;
        let form = find_login_form(html, &url("http://h/"), "pw").expect("form");
        assert_eq!(
            form.fields,
            vec![("pw".into(), "".into()), ("csrf".into(), "c".into())]
        );
    }

    #[test]
    fn missing_forms_are_explained() {
        let page = url("http://h/");
        assert_eq!(
            find_login_form("<p>consent?</p>", &page, "password"),
            Err(FormError::NoForm)
        );
        let html =
            r#"<form method="post"><input name="user"><input type="password" name="pwd"></form>"#;
        assert_eq!(
            find_login_form(html, &page, "password"),
            Err(FormError::NoPasswordField {
                expected: "password".into(),
                found: vec!["pwd".into()],
            })
        );
        assert!(has_password_field(html));
        assert!(!has_password_field("<form><input name=user></form>"));
    }

    #[test]
    fn page_text_shows_what_a_person_reads() {
        let html = r#"<html><head><title>Portal</title><style>p{}</style></head>
            <body><script>var x = 1;</script><div role="alert">Your   session
            has expired</div><form><input name="user"></form><p>Try again</p></body></html>"#;
        assert_eq!(
            page_text(html, 200),
            "Portal: Your session has expired Try again"
        );
        assert_eq!(page_text(html, 10), "Portal: Yo…");
    }

    #[test]
    fn set_replaces_the_first_and_drops_repeats() {
        let mut form = Form {
            action: url("http://h/"),
            method: Method::Post,
            fields: vec![
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("a".into(), "3".into()),
            ],
        };
        form.set("a", "x");
        assert_eq!(
            form.fields,
            vec![("a".into(), "x".into()), ("b".into(), "2".into())]
        );
    }
}
