//! The `novads` command: CLI wiring only. Each subcommand calls into the library crates.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use novads_api::commands::{self, CommandError};
use novads_api::config::{self, ConfigErrors, Mode};
use novads_api::dev;
use novads_api::federation::audit::{ChainHead, ExportFilter, ExportFormat};
use novads_api::server::{ServeError, Server, shutdown_signal};
use novads_monitor::metrics::MonitorMetrics;
use novads_monitor::{FactsDocument, Lang, PolicySet, Severity, Source, SourceState};
use novads_operator::monitor::{CollectFederation, FederationCollector};

/// novads — the control plane for shared municipal hosting: tenancies and virtual servers on
/// Kubernetes, single sign-on across municipal directories, and minimum-security monitoring.
#[derive(Debug, Parser)]
#[command(
    name = "novads",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run on embedded defaults with no configuration file: SQLite in a data directory and a
    /// built-in demo realm. Prints the URLs and demo credentials.
    Dev {
        /// Directory for the database and keys; created if missing, reused if present.
        #[arg(long, env = "NOVADS_DATA_DIR", default_value = dev::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, env = config::ENV_LISTEN, default_value = dev::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Also run the operator against the current context of this kubeconfig. Without it,
        /// the operator runs only when KUBECONFIG is set (its first file); `~/.kube/config` is
        /// never used on its own, so `novads dev` cannot change a cluster nobody named.
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
    },
    /// Serve the admin API, federation endpoints and metrics as the configuration file says.
    Serve {
        /// The YAML configuration file (see docs/configuration.md).
        #[arg(long, short = 'c', env = "NOVADS_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// Work with realms (municipal directories).
    Realm {
        #[command(subcommand)]
        command: RealmCommand,
    },
    /// Read and verify the audit trail of sign-in attempts, straight from the database.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage the keys that sign tokens.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run the Kubernetes controllers (in-cluster configuration or KUBECONFIG), with leader
    /// election so that several replicas never act at once.
    Operator(OperatorArgs),
    /// Print every novads CustomResourceDefinition as YAML (for `kubectl apply -f -`).
    Crds,
    /// Check and evaluate the minimum-security policies (see docs/monitor.md).
    Policies {
        #[command(subcommand)]
        command: PoliciesCommand,
    },
    /// Print the objects the operator would apply for the given Municipality (and ServerImage /
    /// VirtualServer) manifests, as YAML — the same functions the controller uses.
    Render {
        /// Manifest files (multi-document YAML), as many as needed after one `-f` or with `-f`
        /// repeated; `-` reads standard input.
        #[arg(
            short = 'f',
            long = "filename",
            value_name = "FILE",
            required = true,
            num_args = 1..
        )]
        files: Vec<PathBuf>,
    },
    /// Print the argon2id hash (PHC string) of a client secret read from standard input, for
    /// `clients[].secret_hash` (prompted without echo on a terminal).
    HashSecret,
    /// Work with the configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script (`novads completions bash > /etc/bash_completion.d/novads`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Read and validate a configuration exactly as `novads serve` would, including the files
    /// and environment variables it references, without starting anything. Exit 2 with one
    /// line per mistake.
    Check {
        #[arg(long, short = 'c', env = "NOVADS_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct OperatorArgs {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8081")]
    metrics_listen: SocketAddr,
    /// Namespace of the leader-election Lease (default: the client's namespace).
    #[arg(long, default_value = "")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "novads-operator")]
    lease_name: String,
    /// How long the Lease is valid without renewal, in seconds (at least 3).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    lease_duration: u64,
    /// Holder identity in the Lease (default: $POD_NAME, else host name and a random suffix).
    #[arg(long)]
    identity: Option<String>,
    /// Municipalities reconciled at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Prefix the kube-apiserver puts before OIDC group names (its --oidc-groups-prefix).
    #[arg(long, default_value = "")]
    oidc_group_prefix: String,
    /// The sign-on service's configuration (as `novads serve` reads it): the security monitor
    /// collects federation facts from its database and directories. Without it, federation
    /// checks are skipped.
    #[arg(long, short = 'c', env = "NOVADS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Policy directory of the security monitor (default: the checks built into novads).
    #[arg(long, value_name = "DIR")]
    policies: Option<PathBuf>,
    /// Seconds between scheduled evaluations of the security monitor.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    monitor_interval: u64,
    /// Language of the security monitor's Reports (titles and messages), read by the
    /// municipalities' security officers.
    #[arg(long, value_enum, default_value_t = EvalLang::Lv)]
    monitor_language: EvalLang,
}

impl OperatorArgs {
    /// The operator's options; a configuration or policy directory that does not load stops
    /// here, before anything runs.
    fn options(self) -> Result<novads_operator::OperatorOptions, CliError> {
        let federation = match &self.config {
            Some(path) => {
                let config = config::load(path, Mode::Production).map_err(CliError::Config)?;
                Some(FederationCollector(std::sync::Arc::new(
                    ConfiguredFederation(config),
                )))
            }
            None => None,
        };
        let policies = match &self.policies {
            Some(dir) => {
                let set = PolicySet::load_dir(dir).map_err(|e| CliError::Input(e.to_string()))?;
                for problem in &set.problems {
                    tracing::warn!(%problem, "policy problem: the check reports errors");
                }
                set
            }
            None => novads_monitor::shipped::policies(),
        };
        Ok(novads_operator::OperatorOptions {
            metrics_listen: self.metrics_listen,
            lease_namespace: self.lease_namespace,
            lease_name: self.lease_name,
            lease_duration: std::time::Duration::from_secs(self.lease_duration),
            identity: self.identity,
            concurrency: self.concurrency,
            tenancy: novads_operator::TenancySettings {
                group_prefix: self.oidc_group_prefix,
            },
            monitor: novads_operator::monitor::MonitorOptions {
                policies: std::sync::Arc::new(policies),
                interval: std::time::Duration::from_secs(self.monitor_interval),
                federation,
                language: self.monitor_language.into(),
                ..novads_operator::monitor::MonitorOptions::default()
            },
        })
    }
}

/// The federation facts of a configuration (database, directories), for the operator's
/// security monitor, which cannot reach them itself.
struct ConfiguredFederation(config::Config);

impl CollectFederation for ConfiguredFederation {
    fn collect(
        &self,
        now: DateTime<Utc>,
        admin_groups: Vec<novads_monitor::facts::AdminGroups>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = FactsDocument> + Send + '_>> {
        Box::pin(async move {
            novads_api::compliance::collect_configured(&self.0, now, &admin_groups).await
        })
    }
}

#[derive(Debug, Subcommand)]
enum PoliciesCommand {
    /// Load a policy directory and report every problem as FILE:LINE: check ID: what. Exit 1
    /// when there is one.
    Check {
        /// The policy directory.
        #[arg(value_name = "DIR", default_value = "policies")]
        dir: PathBuf,
    },
    /// Evaluate the policies over Kubernetes objects (-f), a facts document (--facts) and/or
    /// the federation facts of a configuration (--config). Exit 0 when the evaluation ran, 1
    /// with --fail-on when a failing result reaches that severity.
    Eval(EvalArgs),
}

#[derive(Debug, clap::Args)]
struct EvalArgs {
    /// The policy directory.
    #[arg(long, value_name = "DIR", default_value = "policies")]
    policies: PathBuf,
    /// Kubernetes objects as multi-document YAML (Municipality, VirtualServer, ServerImage,
    /// NetworkPolicy, Service, RoleBinding, ResourceQuota, VirtualMachineSnapshot,
    /// SecurityExemption; other kinds are ignored); `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE", num_args = 1..)]
    files: Vec<PathBuf>,
    /// A facts document (YAML or JSON), combined with the facts of the objects.
    #[arg(long, value_name = "FILE")]
    facts: Option<PathBuf>,
    /// The sign-on configuration (as for `novads serve`): federation facts are collected from
    /// its database (read only) and its realms' settings.
    #[arg(short = 'c', long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The evaluation time (RFC 3339 or YYYY-MM-DD, UTC); now by default.
    #[arg(long, value_parser = commands::parse_time)]
    now: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value_t = EvalFormat::Table)]
    format: EvalFormat,
    #[arg(long, value_enum, default_value_t = EvalLang::En)]
    lang: EvalLang,
    /// Exit 1 when a fail or error result has this severity or higher (info, low, medium,
    /// high, critical).
    #[arg(long, value_name = "SEVERITY", value_parser = parse_severity)]
    fail_on: Option<Severity>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EvalFormat {
    /// Results and summary as JSON.
    Json,
    /// One line per result, then a summary per municipality.
    Table,
    /// One self-contained, printable page for a security officer or an auditor.
    Html,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EvalLang {
    Lv,
    En,
}

impl From<EvalLang> for Lang {
    fn from(lang: EvalLang) -> Self {
        match lang {
            EvalLang::Lv => Lang::Lv,
            EvalLang::En => Lang::En,
        }
    }
}

fn parse_severity(text: &str) -> Result<Severity, String> {
    text.parse()
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Rotate the signing keys with overlap: the next key (published since the last rotation)
    /// becomes active, the active key stays published until its tokens expire, and a new next
    /// key is published. Running replicas pick the change up within a minute. Prints JSON.
    Rotate {
        #[arg(long, short = 'c', env = "NOVADS_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// Rotate even if the next key was published less than a day ago (key compromise).
        #[arg(long)]
        now: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RealmCommand {
    /// Sign a user in through exactly the production path and print who they are (JSON), or
    /// the audited reason they were refused. The password is read from standard input. The
    /// attempt is audited and counts towards lockout like any other.
    Test {
        #[arg(long, short = 'c', env = "NOVADS_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// The user, as typed at the login form: `jana@talsi` or `TALSI\jana`.
        #[arg(value_name = "USER@REALM")]
        user: String,
        /// Also decide access to this application (applies trusts).
        #[arg(long, value_name = "CLIENT_ID")]
        client: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print audit rows in id order.
    Export {
        #[arg(long, short = 'c', env = "NOVADS_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// Only rows at or after this time (RFC 3339 or YYYY-MM-DD, UTC).
        #[arg(long, value_parser = commands::parse_time)]
        since: Option<DateTime<Utc>>,
        /// Only rows before this time.
        #[arg(long, value_parser = commands::parse_time)]
        until: Option<DateTime<Utc>>,
        /// Only rows of this realm.
        #[arg(long)]
        realm: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
    },
    /// Recompute the keyed hash chain and print its head (ID:HASH); exit 1 and name the first
    /// broken row if it was tampered with.
    Verify {
        #[arg(long, short = 'c', env = "NOVADS_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// A head printed by an earlier verify or logged by the server (ID:HASH): the chain
        /// must still pass through it, so rows cut off the end or rewritten are named.
        #[arg(long, value_name = "ID:HASH")]
        expect_head: Option<ChainHead>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header row.
    Csv,
}

/// Everything that can end a command unsuccessfully; each prints as one line per problem.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Config(ConfigErrors),
    #[error("{0}")]
    Serve(ServeError),
    #[error("data directory {path}: {source}", path = .0.display(), source = .1)]
    DataDir(PathBuf, std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("{0}")]
    Io(String),
    #[error("operator: {0}")]
    Operator(String),
    /// Input the user gave is unreadable or invalid.
    #[error("{0}")]
    Input(String),
    /// The command ran and its answer is "no" (refused sign-in, broken chain).
    #[error("{0}")]
    Negative(String),
}

impl CliError {
    /// 2 for problems with what the user gave us, 1 for failures at run time.
    fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Command(CommandError::Config(_)) => 2,
            Self::Command(CommandError::Usage(_)) | Self::Input(_) => 2,
            Self::Serve(_)
            | Self::DataDir(..)
            | Self::Runtime(_)
            | Self::Command(_)
            | Self::Io(_)
            | Self::Operator(_)
            | Self::Negative(_) => 1,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    novads_api::telemetry::init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
        .and_then(|runtime| runtime.block_on(run(cli.command)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            for line in error.to_string().lines() {
                eprintln!("novads: error: {line}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}

async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Dev {
            data_dir,
            listen,
            kubeconfig,
        } => run_dev(data_dir, listen, kubeconfig.or_else(kubeconfig_from_env)).await,
        Command::Serve { config } => {
            let shutdown = shutdown_signal();
            let config = config::load(&config, Mode::Production).map_err(CliError::Config)?;
            let server = Server::bind(config).await.map_err(CliError::Serve)?;
            // The admin API's cluster resources need the Kubernetes API: in a Pod or with
            // KUBECONFIG. A cluster that is named but unusable stops the start.
            if let Some(client) = novads_api::admin::cluster::client_from_environment()
                .await
                .map_err(|e| CliError::Io(e.to_string()))?
            {
                server.state().set_cluster(client);
            }
            server.run(shutdown).await.map_err(CliError::Serve)
        }
        Command::Realm {
            command:
                RealmCommand::Test {
                    config,
                    user,
                    client,
                },
        } => {
            let password = read_password(&user)?;
            let (report, signed_in) =
                commands::realm_test(&config, &user, client.as_deref(), &password).await?;
            println!("{report:#}");
            if signed_in {
                Ok(())
            } else {
                Err(CliError::Negative(format!(
                    "{user} was refused: {}",
                    report["reason"].as_str().unwrap_or("unknown")
                )))
            }
        }
        Command::Audit {
            command:
                AuditCommand::Export {
                    config,
                    since,
                    until,
                    realm,
                    format,
                },
        } => {
            let filter = ExportFilter {
                since,
                until,
                realm,
            };
            let format = match format {
                Format::Jsonl => ExportFormat::Jsonl,
                Format::Csv => ExportFormat::Csv,
            };
            // Buffered: the export flushes it when done.
            let mut stdout = std::io::BufWriter::new(std::io::stdout());
            commands::audit_export(&config, &filter, format, &mut stdout).await?;
            Ok(())
        }
        Command::Operator(args) => {
            let shutdown = shutdown_signal();
            novads_operator::run(args.options()?, shutdown)
                .await
                .map_err(|e| CliError::Operator(e.to_string()))
        }
        Command::Crds => {
            print!("{}", novads_crds::crds_yaml());
            Ok(())
        }
        Command::Render { files } => {
            let documents = read_documents(&files)?;
            let rendered =
                novads_operator::render(&documents).map_err(|e| CliError::Input(e.to_string()))?;
            print!("{rendered}");
            Ok(())
        }
        Command::Policies {
            command: PoliciesCommand::Check { dir },
        } => {
            let set = PolicySet::load_dir(&dir).map_err(|e| CliError::Input(e.to_string()))?;
            if set.problems.is_empty() {
                println!(
                    "{}: {} checks, no problems",
                    dir.display(),
                    set.checks.len()
                );
                Ok(())
            } else {
                let lines: Vec<String> = set.problems.iter().map(ToString::to_string).collect();
                Err(CliError::Negative(lines.join("\n")))
            }
        }
        Command::Policies {
            command: PoliciesCommand::Eval(args),
        } => policies_eval(args).await,
        Command::Keys {
            command: KeysCommand::Rotate { config, now },
        } => {
            let report = commands::keys_rotate(&config, now).await?;
            println!("{report:#}");
            Ok(())
        }
        Command::HashSecret => {
            let secret = read_secret()?;
            let hash = novads_api::oidc::secrets::hash_secret(&secret)
                .map_err(|e| CliError::Input(format!("cannot hash the secret: {e}")))?;
            println!("{hash}");
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { config: path },
        } => {
            let config = config::load(&path, Mode::Production).map_err(CliError::Config)?;
            println!(
                "{}: valid ({} realms, {} clients, {} trusts)",
                path.display(),
                config.realms.len(),
                config.clients.len(),
                config.trusts.len()
            );
            Ok(())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut stdout = std::io::stdout().lock();
            clap_complete::generate(shell, &mut Cli::command(), "novads", &mut stdout);
            Ok(())
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    config,
                    expect_head,
                },
        } => {
            let verification = commands::audit_verify(&config, expect_head).await?;
            match verification.first_broken {
                None => {
                    println!(
                        "audit trail intact: {} rows verified",
                        verification.rows_checked
                    );
                    if let Some(head) = verification.head {
                        println!("head: {head}");
                    }
                    Ok(())
                }
                Some(broken) => Err(CliError::Negative(format!(
                    "audit trail broken at row {}: {} ({} rows before it verified)",
                    broken.id, broken.problem, verification.rows_checked
                ))),
            }
        }
    }
}

/// `novads policies eval`: reads the inputs, collects the cluster facts of the objects and,
/// with `--config`, the federation facts, and prints the evaluation. Problems in the policies
/// are printed as warnings: the checks they break report `error` results.
async fn policies_eval(args: EvalArgs) -> Result<(), CliError> {
    let set = PolicySet::load_dir(&args.policies).map_err(|e| CliError::Input(e.to_string()))?;
    for problem in &set.problems {
        eprintln!("novads: warning: {problem}");
    }
    if args.files.is_empty() && args.facts.is_none() && args.config.is_none() {
        return Err(CliError::Input(
            "nothing to evaluate: give Kubernetes objects with -f, facts with --facts or a \
             configuration with --config"
                .into(),
        ));
    }
    // A configuration that does not load stops here; a database that cannot be read does not:
    // its checks become `error` results with the reason.
    let config = match &args.config {
        Some(path) => Some(config::load(path, Mode::Production).map_err(CliError::Config)?),
        None => None,
    };
    let now = args.now.unwrap_or_else(Utc::now);
    let mut facts = FactsDocument::default();
    let mut exemptions = Vec::new();
    let mut admin_groups = Vec::new();
    if !args.files.is_empty() {
        let documents = read_documents(&args.files)?;
        let objects = novads_operator::compliance::ClusterObjects::from_yaml(&documents)
            .map_err(|e| CliError::Input(e.to_string()))?;
        facts = novads_operator::compliance::cluster_facts(&objects, now);
        exemptions = novads_operator::compliance::exemptions(&objects).map_err(CliError::Input)?;
        admin_groups = novads_operator::compliance::admin_groups(&objects);
    }
    if let Some(path) = &args.facts {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
        let document = FactsDocument::from_text(&text).map_err(|problems| {
            CliError::Input(
                problems
                    .iter()
                    .map(|p| format!("{}: {p}", path.display()))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?;
        facts.merge(document);
    }
    if let Some(config) = &config {
        facts.merge(novads_api::compliance::collect_configured(config, now, &admin_groups).await);
    }
    facts.sources.entry(Source::Federation).or_insert_with(|| {
        SourceState::NotCollected("federation facts not collected (no --config)".into())
    });
    let evaluation = novads_monitor::evaluate(&set, &facts, &exemptions, now);
    let lang = Lang::from(args.lang);
    let output = match args.format {
        EvalFormat::Json => format!("{:#}\n", evaluation.to_json(lang)),
        EvalFormat::Table => novads_monitor::output::table(&evaluation, lang),
        EvalFormat::Html => novads_monitor::html::render(&evaluation, lang)
            .map_err(|e| CliError::Io(format!("cannot render the HTML report: {e}")))?,
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Io(format!("cannot write the output: {e}")))?;
    match args.fail_on {
        Some(severity) if evaluation.fails_at(severity) => Err(CliError::Negative(format!(
            "results fail at severity {} or higher",
            severity.as_str()
        ))),
        _ => Ok(()),
    }
}

/// The files after `-f` as one YAML stream; `-` is standard input.
fn read_documents(files: &[PathBuf]) -> Result<String, CliError> {
    let mut documents = String::new();
    for file in files {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(file)
        }
        .map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?;
        if !documents.is_empty() && !documents.ends_with('\n') {
            documents.push('\n');
        }
        if !documents.is_empty() {
            documents.push_str("---\n");
        }
        documents.push_str(&text);
    }
    Ok(documents)
}

/// The password for `realm test`: prompted without echo on a terminal, otherwise the first
/// line of standard input.
fn read_password(user: &str) -> Result<String, CliError> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("Password for {user}: "))
            .map_err(|e| CliError::Io(format!("cannot read the password: {e}")));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Io(format!("cannot read the password from standard input: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The secret for `hash-secret`: prompted twice without echo on a terminal, otherwise standard
/// input with its final line break removed (`printf %s "$secret" | novads hash-secret` and
/// `echo "$secret" | novads hash-secret` hash the same secret).
fn read_secret() -> Result<String, CliError> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let prompt = |text: &str| {
            rpassword::prompt_password(text)
                .map_err(|e| CliError::Io(format!("cannot read the secret: {e}")))
        };
        let first = prompt("Client secret: ")?;
        if prompt("Again: ")? != first {
            return Err(CliError::Input("the two secrets differ".into()));
        }
        return Ok(first);
    }
    let text = std::io::read_to_string(std::io::stdin())
        .map_err(|e| CliError::Io(format!("cannot read the secret from standard input: {e}")))?;
    let secret = text
        .strip_suffix('\n')
        .map_or(text.as_str(), |s| s.strip_suffix('\r').unwrap_or(s));
    if secret.is_empty() {
        return Err(CliError::Input(
            "no secret on standard input (printf %s \"$secret\" | novads hash-secret)".into(),
        ));
    }
    Ok(secret.to_owned())
}

/// How often `novads dev` evaluates the federation checks over its own data.
const DEV_MONITOR_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

async fn run_dev(
    data_dir: PathBuf,
    listen: SocketAddr,
    kubeconfig: Option<PathBuf>,
) -> Result<(), CliError> {
    let shutdown = shutdown_signal();
    let data_dir =
        dev::prepare_data_dir(&data_dir).map_err(|e| CliError::DataDir(data_dir.clone(), e))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| {
            CliError::Serve(ServeError::Listen {
                addr: listen,
                source,
            })
        })?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::Serve(e.into()))?;
    let config = dev::config(&data_dir, bound);
    let server = Server::from_listener(config, listener)
        .await
        .map_err(CliError::Serve)?;
    // The demo application exists in dev only.
    let routes =
        novads_api::server::router_with(server.state().clone(), novads_api::dev::demo::routes());
    let server = server.with_router(routes);
    let mut banner = dev::banner(server.state().config(), &data_dir);
    // The security monitor's federation checks over dev's own data, shown on its /metrics.
    let monitor_metrics = MonitorMetrics::register(server.state().metrics().registry(), true)
        .map_err(|e| CliError::Io(format!("cannot register the monitor's metrics: {e}")))?;
    let monitor = tokio::spawn(novads_api::compliance::own::evaluate_periodically(
        server.state().clone(),
        std::sync::Arc::new(novads_monitor::shipped::policies()),
        monitor_metrics,
        DEV_MONITOR_INTERVAL,
    ));
    banner.push_str(&format!(
        "  security monitor federation checks every {} s, on /metrics\n",
        DEV_MONITOR_INTERVAL.as_secs()
    ));
    // The operator joins in when a cluster is configured; otherwise say so plainly.
    // The cluster is resolved before anything is served, so a broken kubeconfig fails clearly.
    let cluster = match &kubeconfig {
        Some(path) => Some(
            novads_operator::client_from_kubeconfig(path)
                .await
                .map_err(|e| CliError::Input(e.to_string()))?,
        ),
        None => None,
    };
    let (operator_stop, operator) = match (cluster, kubeconfig) {
        (Some((client, target)), Some(path)) => {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let options = novads_operator::OperatorOptions {
                metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..novads_operator::OperatorOptions::default()
            };
            let task = tokio::spawn(async move {
                let stopped = async move {
                    let _ = stopped.await;
                };
                if let Err(e) = novads_operator::run_with_client(client, options, stopped).await {
                    tracing::error!(error = %e, "the operator stopped");
                }
            });
            banner.push_str(&format!(
                "  operator        running against {} (context {}, from {})\n",
                target.server,
                target.context.as_deref().unwrap_or("none"),
                path.display()
            ));
            (Some(stop), Some(task))
        }
        _ => {
            banner.push_str(
                "  operator        not started: no kubeconfig (set KUBECONFIG or pass --kubeconfig to run it against a cluster)\n",
            );
            (None, None)
        }
    };
    banner.push_str("Press Ctrl-C to stop.\n");
    let mut stdout = std::io::stdout().lock();
    // The banner is a convenience: a closed stdout must not stop the server.
    let _ = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush());
    drop(stdout);
    let served = server.run(shutdown).await.map_err(CliError::Serve);
    monitor.abort();
    if let (Some(stop), Some(task)) = (operator_stop, operator) {
        let _ = stop.send(());
        let _ = task.await;
    }
    served
}

/// The kubeconfig `novads dev` uses when none is passed: the first file of `$KUBECONFIG`.
fn kubeconfig_from_env() -> Option<PathBuf> {
    std::env::var_os("KUBECONFIG")
        .and_then(|v| std::env::split_paths(&v).next())
        .filter(|p| !p.as_os_str().is_empty())
}
