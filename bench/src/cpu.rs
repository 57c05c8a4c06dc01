//! CPU time of server processes, read from `/proc` (Linux).
//!
//! The benchmark runs its load generator on the same machine as the servers
//! it measures, so wall-clock throughput alone mixes the client's cost into
//! the server's. What a process itself spent is in `/proc/PID/stat`: user
//! and system time of all its threads, in clock ticks. Reading it before
//! and after a measured cell and dividing by the operations served gives
//! server CPU per operation, independent of who else used the cores.

use std::time::Duration;

/// Total user + system CPU time consumed so far by the processes `pids`
/// (all their threads, alive or exited). `None` if one cannot be read.
pub(crate) fn cpu_time(pids: &[u32]) -> Option<Duration> {
    let mut ticks = 0u64;
    for &pid in pids {
        ticks += process_ticks(pid)?;
    }
    Some(Duration::from_secs_f64(ticks as f64 / ticks_per_second()))
}

/// utime + stime of one process, in clock ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ticks(&stat)
}

/// Fields 14 (utime) and 15 (stime) of a `/proc/PID/stat` line. Field 2,
/// the command name, is in parentheses and may itself hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): utime is field 14, the 12th here.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `sysconf(_SC_CLK_TCK)`: the unit of `/proc/PID/stat` times (100 on Linux).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant; it has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_after_an_awkward_name() {
        let stat = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0";
        assert_eq!(parse_ticks(stat), Some(287));
    }

    #[test]
    fn reads_its_own_process() {
        assert!(cpu_time(&[std::process::id()]).is_some());
    }
}
