use clap::Parser;

fn main() {
    sg2::util::tune_malloc();
    // Die quietly on a closed pipe (`sg2 info ... | head`) like other command-line tools.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = sg2::cli::Cli::parse();
    if let Err(err) = sg2::cli::run(cli) {
        // One line per cause: "error: <what> : <why>".
        let mut msg = format!("error: {err}");
        for cause in err.chain().skip(1) {
            msg.push_str(&format!(": {cause}"));
        }
        eprintln!("{msg}");
        std::process::exit(1);
    }
}
