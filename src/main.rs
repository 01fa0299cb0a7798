fn main() -> std::process::ExitCode {
    shellyctl::main_entry()
}
