//! The `tradeql` command; everything it does lives in the library.

fn main() -> std::process::ExitCode {
    // Rust ignores SIGPIPE, so printing to a closed pipe (`tradeql explain q | head`)
    // would panic; a command-line tool should end quietly instead, as cat does.
    // SAFETY: called first, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tradeql::cli::main()
}
