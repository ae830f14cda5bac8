//! The `novads` command: CLI wiring only. Each subcommand calls into the library crates.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use novads_api::config::{self, ConfigErrors, Mode};
use novads_api::dev;
use novads_api::server::{ServeError, Server, shutdown_signal};

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
    },
    /// Serve the admin API, federation endpoints and metrics as the configuration file says.
    Serve {
        /// The YAML configuration file (see docs/configuration.md).
        #[arg(long, short = 'c', env = "NOVADS_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
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
}

impl CliError {
    /// 2 for problems with what the user gave us, 1 for failures at run time.
    fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 2,
            Self::Serve(_) | Self::DataDir(..) | Self::Runtime(_) => 1,
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
        Command::Dev { data_dir, listen } => run_dev(data_dir, listen).await,
        Command::Serve { config } => {
            let config = config::load(&config, Mode::Production).map_err(CliError::Config)?;
            let server = Server::bind(config).await.map_err(CliError::Serve)?;
            server.run(shutdown_signal()).await.map_err(CliError::Serve)
        }
    }
}

async fn run_dev(data_dir: PathBuf, listen: SocketAddr) -> Result<(), CliError> {
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
    let banner = dev::banner(server.state().config(), &data_dir);
    let mut stdout = std::io::stdout().lock();
    // The banner is a convenience: a closed stdout must not stop the server.
    let _ = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush());
    drop(stdout);
    server.run(shutdown_signal()).await.map_err(CliError::Serve)
}
