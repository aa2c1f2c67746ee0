//! Gives memory back once the daemon goes quiet.
//!
//! Most of an idle daemon's resident memory is not its data: it is the
//! pages of its own executable that start-up and the last requests ran
//! (the kernel maps code 64 KiB around each page first touched, so a
//! 30 MiB text segment ends up two-thirds resident after start-up). Those
//! pages are clean copies of the file. Once the daemon has used almost no
//! CPU for a while, this drops its mappings of the executable's read-only
//! segments (`MADV_DONTNEED`, which for a private file mapping only
//! unmaps: the pages stay in the page cache, and the next call into that
//! code maps them back without reading the disk), and asks the databases
//! and the allocator to return what they no longer use.
//!
//! Never the writable segment (relocated data, statics: dropping it would
//! lose their contents), and never anything but this process's own
//! executable.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::Db;

/// How often activity is looked at.
const TICK: Duration = Duration::from_secs(2);
/// Below this much CPU in a tick (1 % of it), the daemon counts as quiet.
const QUIET_CPU: Duration = Duration::from_millis(20);
/// It trims again only after this much CPU since the last trim: an idle
/// daemon is not trimmed over and over.
const WORKED_CPU: Duration = Duration::from_millis(50);

/// Trims after start-up and whenever the daemon goes quiet after work,
/// until `shutdown`.
pub(super) async fn run(db: std::sync::Arc<Db>, shutdown: CancellationToken) {
    // The first look a tick from now: start-up is still running code.
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = cpu();
    // Start-up counts as work.
    let mut since_trim = WORKED_CPU;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = cpu();
        let used = now.saturating_sub(last);
        last = now;
        since_trim += used;
        if used < QUIET_CPU && since_trim >= WORKED_CPU {
            db.release_memory().await;
            let _ = tokio::task::spawn_blocking(trim).await;
            since_trim = Duration::ZERO;
            // The trim's own CPU is not work.
            last = cpu();
        }
    }
}

/// The process's CPU time so far (user and system).
fn cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::from_secs(tv.tv_sec().max(0) as u64)
                    + Duration::from_micros(tv.tv_usec().max(0) as u64)
            };
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => Duration::MAX,
    }
}

/// Unmaps the executable's read-only segments and returns the calling
/// thread's free allocator pages.
fn trim() {
    // SAFETY: collects this thread's own heap; no pointer is handed over.
    unsafe { libmimalloc_sys::mi_collect(true) };
    let Ok(exe) = std::fs::metadata("/proc/self/exe") else {
        return;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, len) in read_only_segments(&smaps, exe_id(&exe)) {
        let Some(addr) = std::ptr::NonNull::new(start as *mut std::ffi::c_void) else {
            continue;
        };
        // SAFETY: the range is a read-only private mapping of the
        // executable file (never written, so never a private copy):
        // MADV_DONTNEED only drops its page table entries, and the next
        // access maps the file's page again. No Rust reference covers it
        // as mutable.
        let _ = unsafe {
            nix::sys::mman::madvise(addr, len, nix::sys::mman::MmapAdvise::MADV_DONTNEED)
        };
    }
}

/// The device and inode that name a file in `/proc/self/maps`.
fn exe_id(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// The start and length of each mapping in `smaps` (the text of
/// `/proc/self/smaps`) of the file `id` that is neither writable nor
/// shared and holds no private copy of a page (`Anonymous: 0 kB`): the
/// relocated data that is made read-only after start (RELRO) looks
/// read-only but differs from the file.
fn read_only_segments(smaps: &str, id: (u64, u64)) -> Vec<(usize, usize)> {
    let mut picked = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(anon) = line.strip_prefix("Anonymous:") {
            let untouched = anon.trim().strip_suffix("kB").map(str::trim) == Some("0");
            if let Some(m) = current.take().filter(|_| untouched) {
                picked.push(m);
            }
            continue;
        }
        if let Some(m) = Mapping::parse(line) {
            current = m.read_only_of(id).then_some((m.start, m.len));
        }
    }
    picked
}

/// A mapping's header line in smaps.
struct Mapping<'a> {
    start: usize,
    len: usize,
    perms: &'a str,
    dev: &'a str,
    inode: &'a str,
}

impl<'a> Mapping<'a> {
    /// `None` for the lines that are not a mapping's header.
    fn parse(line: &'a str) -> Option<Mapping<'a>> {
        let mut f = line.split_ascii_whitespace();
        let (start, end) = f.next()?.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        let (perms, _offset, dev, inode) = (f.next()?, f.next()?, f.next()?, f.next()?);
        (perms.len() == 4 && end > start).then_some(Mapping {
            start,
            len: end - start,
            perms,
            dev,
            inode,
        })
    }

    /// A private, read-only mapping of the file `id`.
    fn read_only_of(&self, id: (u64, u64)) -> bool {
        !self.perms.contains('w')
            && self.perms.ends_with('p')
            && self.inode.parse::<u64>().ok() == Some(id.1)
            && same_device(self.dev, id.0)
    }
}

/// Whether `maps_dev` (`major:minor` in hex) is the device `dev` (as
/// `stat` encodes it).
fn same_device(maps_dev: &str, dev: u64) -> bool {
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    let named = maps_dev
        .split_once(':')
        .and_then(|(major, minor)| Some(nix::sys::stat::makedev(hex(major)?, hex(minor)?)));
    named == Some(dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_untouched_read_only_private_mappings_of_the_file_are_picked() {
        let dev = (0xfd << 8) | 0x01; // 253:1 as stat encodes it
        let smaps = "\
55d0a0000000-55d0a0143000 r--p 00000000 fd:01 4242 /usr/bin/platform
Rss:                 100 kB
Anonymous:             0 kB
55d0a0143000-55d0a1e49000 r-xp 00143000 fd:01 4242 /usr/bin/platform
Anonymous:             0 kB
55d0a1e49000-55d0a27df000 r--p 01e49000 fd:01 4242 /usr/bin/platform
Anonymous:             0 kB
55d0a27df000-55d0a28c0000 r--p 027df000 fd:01 4242 /usr/bin/platform
Anonymous:           900 kB
55d0a28c0000-55d0a28d4000 rw-p 028c0000 fd:01 4242 /usr/bin/platform
Anonymous:             0 kB
7f0000000000-7f0000001000 r--s 00000000 fd:01 4242 /usr/bin/platform
Anonymous:             0 kB
7f0000002000-7f0000003000 r--p 00000000 fd:01 4243 /usr/lib/other
Anonymous:             0 kB
7f0000004000-7f0000005000 r--p 00000000 fd:02 4242 /mnt/same-inode
Anonymous:             0 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Anonymous:           132 kB
";
        let picked = read_only_segments(smaps, (dev, 4242));
        assert_eq!(
            picked,
            vec![
                (0x55d0a0000000, 0x143000),
                (0x55d0a0143000, 0x1d06000),
                (0x55d0a1e49000, 0x996000),
            ]
        );
    }

    #[test]
    fn trimming_this_process_keeps_its_code_running() {
        let exe = std::fs::metadata("/proc/self/exe").unwrap();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        assert!(
            !read_only_segments(&smaps, exe_id(&exe)).is_empty(),
            "the test binary's own segments are found"
        );
        let rss = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status
                .lines()
                .find(|l| l.starts_with("RssFile:"))
                .unwrap()
                .to_string();
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        let before = rss();
        trim();
        let after = rss();
        assert!(after < before, "file-backed RSS {before} kB -> {after} kB");
        // Code and constants come back on use.
        let v: Vec<String> = (0..100).map(|i| format!("{i:>4}")).collect();
        assert_eq!(v.join("").len(), 400);
    }
}
