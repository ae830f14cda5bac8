//! `oidc-load`: see the library's documentation and docs/benchmarks.md.

use std::process::ExitCode;

use clap::Parser;
use novads_oidc_load::cli::Cli;
use novads_oidc_load::{LoadError, Report, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let max_error_ratio = cli.max_error_ratio;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadError::Worker(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| {
            runtime.block_on(async {
                let config = cli.into_config()?;
                run(&config).await
            })
        });
    match result {
        Ok(report) => {
            print_report(&report, json);
            if report.exceeds_error_ratio(max_error_ratio) {
                eprintln!(
                    "oidc-load: error ratio {:.4} exceeds --max-error-ratio {max_error_ratio} ({} completed, {} failed)",
                    report.error_ratio, report.completed, report.failed
                );
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("oidc-load: error: {error}");
            ExitCode::from(2)
        }
    }
}

fn print_report(report: &Report, json: bool) {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("oidc-load: cannot serialise the report: {e}"),
        }
    } else {
        print!("{}", report.to_text());
    }
}
