//! The `oidc-load` command line.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use url::Url;

use crate::error::LoadError;
use crate::run::{ClientAuthChoice, Limit, LoadConfig, Mode, PkceChoice};
use crate::users::{Credentials, parse_users_file, pattern_users};

/// Measures complete OpenID Connect code-flow logins (authorize → login form → token) or
/// refresh-token grants per second against any provider, driven by its discovery document and
/// its login page, like browsers without a single sign-on cookie.
#[derive(Debug, Parser)]
#[command(name = "oidc-load", version, max_term_width = 100)]
pub struct Cli {
    /// The provider's issuer; `<issuer>/.well-known/openid-configuration` is read.
    #[arg(long)]
    pub issuer: String,
    /// The client (relying party) registered at the provider.
    #[arg(long)]
    pub client_id: String,
    /// The client's secret (confidential client). Without it the client is public and uses
    /// PKCE only.
    #[arg(long, env = "OIDC_LOAD_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// How the client authenticates at the token endpoint.
    #[arg(long, value_enum, default_value_t = ClientAuthChoice::Auto)]
    pub client_auth: ClientAuthChoice,
    /// A redirect URI registered for the client. It is never fetched.
    #[arg(long)]
    pub redirect_uri: Url,
    /// Requested scope.
    #[arg(long, default_value = "openid")]
    pub scope: String,
    /// PKCE with S256.
    #[arg(long, value_enum, default_value_t = PkceChoice::Auto)]
    pub pkce: PkceChoice,
    /// Name of the login form's user name field (LemonLDAP::NG: `user`).
    #[arg(long, default_value = "username")]
    pub username_field: String,
    /// Name of the login form's password field; the form that has it is the login form.
    #[arg(long, default_value = "password")]
    pub password_field: String,
    /// Extra field set in the login form, `name=value` (repeatable).
    #[arg(long = "form-field", value_name = "NAME=VALUE", value_parser = pair)]
    pub form_fields: Vec<(String, String)>,
    /// Extra authorization request parameter, `name=value` (repeatable), e.g. `ui_locales=en`.
    #[arg(long = "authorize-param", value_name = "NAME=VALUE", value_parser = pair)]
    pub authorize_params: Vec<(String, String)>,
    /// A user, `name:password` (repeatable). Users are taken in turn.
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    pub users: Vec<String>,
    /// A file of `name:password` lines (`#` comments and blank lines are skipped).
    #[arg(long)]
    pub users_file: Option<PathBuf>,
    /// User name pattern; `{n}` runs from --users-from over --users numbers.
    #[arg(long, requires = "password")]
    pub user_pattern: Option<String>,
    /// Password for --user-pattern; may contain `{n}` too.
    #[arg(long, env = "OIDC_LOAD_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// How many users --user-pattern yields.
    #[arg(long = "users", default_value_t = 1, value_name = "N")]
    pub user_count: u64,
    /// The first `{n}`.
    #[arg(long, default_value_t = 1)]
    pub users_from: u64,
    /// Simulated browsers working at once.
    #[arg(long, short = 'c', default_value_t = 32)]
    pub concurrency: usize,
    /// How long to measure (`30s`, `500ms`, `2m`, or seconds) when --requests is not given.
    #[arg(long, short = 'd', value_parser = parse_duration, default_value = "10s", conflicts_with = "requests")]
    pub duration: Duration,
    /// Measure exactly this many iterations instead of a duration.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,
    /// Run this long before measuring (connections, caches, JIT of the provider).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// `login`: complete logins; `refresh`: refresh-token grants (one login per browser first).
    #[arg(long, value_enum, default_value_t = Mode::Login)]
    pub mode: Mode,
    /// Timeout of each HTTP request.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub timeout: Duration,
    /// Accept any TLS certificate (a throwaway local provider only).
    #[arg(long)]
    pub insecure: bool,
    /// PEM file of CA certificates to trust in addition to the system's.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Connect to ADDRESS for HOST instead of asking DNS (repeatable), e.g.
    /// `auth.example.com=127.0.0.1`: a provider's configured name served on this machine.
    #[arg(long, value_name = "HOST=ADDRESS", value_parser = parse_resolve)]
    pub resolve: Vec<(String, SocketAddr)>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit with status 1 when more than this share of iterations failed.
    #[arg(long, default_value_t = 0.0)]
    pub max_error_ratio: f64,
}

fn pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

/// `host=address`. The port always comes from the URL.
pub fn parse_resolve(s: &str) -> Result<(String, SocketAddr), String> {
    let usage = || format!("{s:?} is not HOST=ADDRESS");
    let (host, address) = s.split_once('=').ok_or_else(usage)?;
    if host.is_empty() || host.contains(':') {
        return Err(usage());
    }
    let ip: IpAddr = address
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| usage())?;
    Ok((host.to_owned(), SocketAddr::new(ip, 0)))
}

/// `250ms`, `1.5s`, `2m`, `10` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 10s or 2m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

impl Cli {
    /// The run's configuration; reads the users file.
    pub fn into_config(self) -> Result<LoadConfig, LoadError> {
        let mut users = Vec::new();
        for spec in &self.users {
            users.push(Credentials::parse(spec)?);
        }
        if let Some(path) = &self.users_file {
            let text = std::fs::read_to_string(path).map_err(|source| LoadError::UsersFile {
                path: path.clone(),
                source,
            })?;
            users.extend(parse_users_file(&text)?);
        }
        if let Some(pattern) = &self.user_pattern {
            let password = self.password.as_deref().unwrap_or_default();
            users.extend(pattern_users(
                pattern,
                password,
                self.users_from,
                self.user_count,
            )?);
        }
        if !(0.0..=1.0).contains(&self.max_error_ratio) {
            return Err(LoadError::Usage(
                "--max-error-ratio must be between 0 and 1".into(),
            ));
        }
        let limit = match self.requests {
            Some(n) => Limit::Requests(n),
            None => Limit::Duration(self.duration),
        };
        let mut config = LoadConfig::new(self.issuer, self.client_id, self.redirect_uri, users);
        config.client_secret = self.client_secret;
        config.client_auth = self.client_auth;
        config.scope = self.scope;
        config.pkce = self.pkce;
        config.username_field = self.username_field;
        config.password_field = self.password_field;
        config.form_fields = self.form_fields;
        config.authorize_params = self.authorize_params;
        config.concurrency = self.concurrency;
        config.limit = limit;
        config.warmup = self.warmup;
        config.mode = self.mode;
        config.timeout = self.timeout;
        config.insecure = self.insecure;
        config.ca_file = self.ca_file;
        config.resolve = self.resolve;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn resolve_entries() {
        assert_eq!(
            parse_resolve("auth.example.com=127.0.0.1"),
            Ok((
                "auth.example.com".into(),
                "127.0.0.1:0".parse().expect("addr")
            ))
        );
        assert_eq!(
            parse_resolve("h=[::1]"),
            Ok(("h".into(), "[::1]:0".parse().expect("addr")))
        );
        assert!(parse_resolve("h").is_err());
        assert!(parse_resolve("h:80=127.0.0.1").is_err());
        assert!(parse_resolve("=127.0.0.1").is_err());
        assert!(parse_resolve("h=not-an-ip").is_err());
    }

    #[test]
    fn command_line_to_config() {
        let cli = Cli::try_parse_from([
            "oidc-load",
            "--issuer",
            "http://127.0.0.1:8080",
            "--client-id",
            "bench",
            "--redirect-uri",
            "http://127.0.0.1/cb",
            "--user",
            "jana@talsi:pw",
            "--user-pattern",
            "u{n}@talsi",
            "--password",
            "P-{n}",
            "--users",
            "2",
            "--form-field",
            "lmAuth=1_LDAP",
            "--requests",
            "20",
            "--mode",
            "refresh",
            "--username-field",
            "user",
        ])
        .expect("parses");
        let config = cli.into_config().expect("config");
        assert_eq!(config.users.len(), 3);
        assert_eq!(config.users[2], Credentials::new("u2@talsi", "P-2"));
        assert_eq!(config.limit, Limit::Requests(20));
        assert_eq!(config.mode, Mode::Refresh);
        assert_eq!(config.concurrency, 32);
        assert_eq!(config.username_field, "user");
        assert_eq!(config.password_field, "password");
        assert_eq!(config.form_fields, vec![("lmAuth".into(), "1_LDAP".into())]);

        let both = Cli::try_parse_from([
            "oidc-load",
            "--issuer",
            "http://i",
            "--client-id",
            "c",
            "--redirect-uri",
            "http://127.0.0.1/cb",
            "--requests",
            "1",
            "--duration",
            "1s",
        ]);
        assert!(
            both.is_err(),
            "--requests and --duration exclude each other"
        );
    }
}
