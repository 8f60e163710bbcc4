//! What a driver action prints for oned (`DriverExecHelper#get_info_from_execution`):
//! `INFO: msg` / `ERROR: msg` lines on stderr become log entries; any other stderr
//! line is the failure message oned shows the user, so it is exactly one line.

/// Writes an `INFO:` log line.
pub fn info(msg: &str) {
    eprintln!("INFO: {}", one_line(msg));
}

/// Writes an `ERROR:` log line and then the one-line failure message.
pub fn fail(msg: impl std::fmt::Display) {
    let m = one_line(&msg.to_string());
    eprintln!("ERROR: {m}");
    eprintln!("{m}");
}

/// Joins a multi-line message into one line.
pub fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}
