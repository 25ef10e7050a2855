//! `mrfsynth`: the command-line tool. Parsing and reporting only; the work is in the library.

mod cli;

/// Large buffers are reused between evaluations instead of being mapped afresh each time.
#[global_allocator]
static ALLOC: mrfsynth::cpu::block_cache::BlockCache = mrfsynth::cpu::block_cache::BlockCache;

use clap::Parser;

fn main() {
    let parsed = match cli::args::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print normally; bad flags are usage errors (exit 2), said in
            // one line: clap's first paragraph, without its usage block.
            if !e.use_stderr() {
                let _ = e.print();
                std::process::exit(0);
            }
            let text = e.render().to_string();
            let first: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty())
                .collect();
            let line = first.join(" ");
            eprintln!(
                "mrfsynth: {}",
                line.strip_prefix("error: ")
                    .map(|l| format!("error: {l}"))
                    .unwrap_or(line)
            );
            std::process::exit(cli::exit::USAGE);
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
