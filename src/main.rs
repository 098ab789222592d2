//! `greentrainer`: the desktop app with no arguments, the headless engine with a subcommand.

use std::io::IsTerminal;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let headless = std::env::args_os().len() > 1;
    if headless {
        quiet_vulkan_display_probe();
    }
    // Our warnings (skipped rows, template fallbacks) reach the user unless RUST_LOG says otherwise;
    // colour codes only when a terminal shows them, not in a log file.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,wgpu=error,cubecl=error,naga=error"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).init();
    let result = if headless { greentrainer::cli::run(greentrainer::cli::Cli::parse()) } else { greentrainer::app::run() };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<greentrainer::cli::Cancelled>() => {
            eprintln!("{e}");
            std::process::ExitCode::from(greentrainer::cli::CANCELLED_EXIT)
        }
        Err(e) => {
            eprintln!("error: {}", message(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: our errors already print the OS error they wrap.
fn message(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

/// Mesa's Vulkan device-select layer asks the Wayland server which GPU drives the display, and
/// libwayland prints "XDG_RUNTIME_DIR is invalid" to stderr when there is no session (ssh, a
/// service). Without a session there is no display to match, so the layer is turned off; wgpu
/// still picks the adapter by its power preference.
fn quiet_vulkan_display_probe() {
    let session = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|dir| std::path::Path::new(&dir).is_dir());
    if !session {
        // SAFETY: called first thing in main, before any other thread exists to read the environment.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}
