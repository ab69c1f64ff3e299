use clap::Parser;

fn main() {
    sg2::util::tune_allocators();
    // Die quietly on a closed pipe (`sg2 info ... | head`) like other command-line tools.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = sg2::cli::Cli::parse();
    // What no check caught (libtorch out of memory inside a forward pass, a bug) still ends in one line and exit
    // status 1; SG2_BACKTRACE=1 keeps Rust's full report.
    if std::env::var_os("SG2_BACKTRACE").is_none() {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("panic");
            let line = sg2::util::panic_line(msg);
            // libtorch's messages say what failed; tch's source line would not help.
            let at = match info.location() {
                Some(l) if !line.starts_with("libtorch: ") => format!(" (at {}:{})", l.file(), l.line()),
                _ => String::new(),
            };
            eprintln!("error: {line}{at}");
        }));
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sg2::cli::run(cli))) {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            // One line per cause: "error: <what> : <why>".
            let mut msg = format!("error: {err}");
            for cause in err.chain().skip(1) {
                msg.push_str(&format!(": {cause}"));
            }
            eprintln!("{msg}");
            std::process::exit(1);
        }
        Err(_) => std::process::exit(1),
    }
}
