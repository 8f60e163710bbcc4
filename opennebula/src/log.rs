//! What a driver action prints for oned (`DriverExecHelper#get_info_from_execution`):
//! `INFO: msg` / `ERROR: msg` lines on stderr become log entries; any other stderr
//! line is the failure message oned shows the user, so it is exactly one line.

/// Writes an `INFO:` log line.
pub fn info(msg: &str) {
    eprintln!("INFO: {}", one_line(msg));
}

/// Writes an `ERROR:` log line and then the one-line failure message.
pub fn fail(msg: impl std::fmt::Display) {
    eprint!("{}", failure(&msg.to_string()));
}

/// What [`fail`] writes for `msg`: the `ERROR:` line oned logs, then the line
/// it shows as the action's error.
pub fn failure(msg: &str) -> String {
    let m = one_line(msg);
    format!("ERROR: {m}\n{m}\n")
}

/// Joins a multi-line message into one line.
pub fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}
