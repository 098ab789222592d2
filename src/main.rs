//! `greentrainer`: the desktop app with no arguments, the headless engine with a subcommand.

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    let result = if std::env::args_os().len() <= 1 {
        greentrainer::app::run()
    } else {
        greentrainer::cli::run(greentrainer::cli::Cli::parse())
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
