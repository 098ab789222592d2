//! `greentrainer`: the desktop app with no arguments, the headless engine with a subcommand.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Our warnings (skipped rows, template fallbacks) reach the user unless RUST_LOG says otherwise.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,wgpu=error,cubecl=error,naga=error"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let result =
        if std::env::args_os().len() <= 1 { greentrainer::app::run() } else { greentrainer::cli::run(greentrainer::cli::Cli::parse()) };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
