//! `watchtrail`: the command line. Everything lives in [`watchtrail_query::cli`].

fn main() -> std::process::ExitCode {
    watchtrail_query::cli::main()
}
