//! The address `sp-hub serve` announces as its first line on stdout, read
//! by the scale benches and by the load benchmark in `bench/` (which
//! includes this file by path).

use std::io::{BufRead, BufReader};
use std::process::ChildStdout;
use std::time::Duration;

/// Waits up to `timeout` for the server's first line and returns the base
/// URL it names. A thread drains the rest, so the server can never block
/// on a full pipe.
pub fn base_url(stdout: ChildStdout, timeout: Duration) -> Result<String, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next().and_then(Result::ok));
        for _ in lines.by_ref() {}
    });
    let line = rx.recv_timeout(timeout).ok().flatten().unwrap_or_default();
    line.strip_prefix("sp-hub listening on ")
        .map(|base| base.trim().to_string())
        .ok_or_else(|| format!("sp-hub did not announce its address (got '{line}')"))
}
