//! The `writ` command line: a thin dispatcher, one file per subcommand under `cmd/`.

fn main() {}
