//! `watchtrail`: the command line. Everything lives in [`watchtrail_cli`].

fn main() -> std::process::ExitCode {
    watchtrail_cli::main()
}
