//! Processes as `/proc` shows them: whether a recorded process is still
//! the one we started (pid plus start time, against pid reuse), and every
//! descendant of a process, whatever session or process group it moved to.
//!
//! The supervisor uses the descendants to stop a trainer's whole tree: a
//! child that called `setsid` (or `setpgid`) left the trainer's process
//! group, so signalling the group misses it, but as long as the supervisor
//! is a child subreaper it stays the supervisor's descendant.

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// One process: its id, parent, process group and whether it is a zombie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Process group id.
    pub pgrp: u32,
    /// Exited and not yet reaped (or being reaped).
    pub zombie: bool,
}

/// The fields of `/proc/<pid>/stat` after the command name, which may
/// itself contain spaces and parentheses: split after the last ')'.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// Reads one process (`None` when it is gone).
pub fn read(pid: u32) -> Option<Proc> {
    let f = stat_fields(pid)?;
    // After the name: state (3), ppid (4), pgrp (5), … starttime (22).
    Some(Proc {
        pid,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        zombie: matches!(f.first().map(String::as_str), Some("Z") | Some("X")),
    })
}

/// A process's start time in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), or `None` when there is no such process.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Whether `pid` is the same live process that started at `start`
/// (zombies count as gone).
pub fn alive(pid: u32, start: u64) -> bool {
    let Some(f) = stat_fields(pid) else {
        return false;
    };
    let state = f.first().map(String::as_str).unwrap_or("");
    let started = f.get(19).and_then(|s| s.parse::<u64>().ok());
    state != "Z" && state != "X" && started == Some(start)
}

/// Every process below `root` in the process tree (children, their
/// children, …), zombies included, `root` excluded.
pub fn descendants(root: u32) -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let all: Vec<Proc> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read)
        .collect();
    let mut found = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for p in all.iter().filter(|p| p.ppid == parent) {
            // A pid seen twice (it exited and was reused mid-scan) is skipped.
            if p.pid != root && !found.iter().any(|f: &Proc| f.pid == p.pid) {
                found.push(*p);
                parents.push(p.pid);
            }
        }
    }
    found
}

/// Whether anything is left of the process group led by `(leader, start)`.
pub fn group_alive(leader: u32, start: u64) -> bool {
    alive(leader, start) || killpg(Pid::from_raw(leader as i32), None).is_ok()
}

/// Sends `sig` to the process group of `(leader, start)` if the leader is
/// still the process we started (pid reuse guard), or, once it is gone, to
/// members it left (the group id cannot be reused while any member lives).
/// Returns whether anything was signalled.
pub fn signal_group(leader: u32, start: u64, sig: Signal) -> bool {
    let pgid = Pid::from_raw(leader as i32);
    if alive(leader, start) {
        return killpg(pgid, sig).is_ok();
    }
    killpg(pgid, None).is_ok() && killpg(pgid, sig).is_ok()
}

/// Sends `sig` to each of `procs`; returns how many were signalled.
pub fn signal_all(procs: &[Proc], sig: Signal) -> usize {
    procs
        .iter()
        .filter(|p| kill(Pid::from_raw(p.pid as i32), sig).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_identifies_this_process() {
        let me = std::process::id();
        let t = start_time(me).expect("own start time");
        assert!(alive(me, t));
        assert!(!alive(me, t + 1));
        assert!(start_time(u32::MAX).is_none());
    }

    #[test]
    fn descendants_include_children_that_left_the_group() {
        use std::os::unix::process::CommandExt;
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let found = descendants(me);
        let entry = found.iter().find(|p| p.pid == child.id()).copied();
        child.kill().unwrap();
        child.wait().unwrap();
        let entry = entry.expect("the child is a descendant");
        assert_eq!(entry.ppid, me);
        assert_eq!(entry.pgrp, child.id(), "in its own group");
        assert!(!found.iter().any(|p| p.pid == me));
        let own = read(me).unwrap();
        assert!(!own.zombie);
    }
}
