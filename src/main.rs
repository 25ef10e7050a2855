//! `mrfsynth`: the command-line tool. Parsing and reporting only; the work is in the library.

mod cli;

use clap::Parser;

fn main() {
    let parsed = match cli::args::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print normally; bad flags are usage errors (exit 2).
            let code = if e.use_stderr() { cli::exit::USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let interrupted = cli::install_interrupt_handler();
    if let Err(e) = cli::run(parsed, interrupted) {
        if e.code != cli::exit::INTERRUPTED {
            eprintln!("mrfsynth: error: {}", e.message);
        }
        std::process::exit(e.code);
    }
}
