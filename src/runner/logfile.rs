//! A job's captured output on disk, bounded: `trainer.log` plus the
//! previous `trainer.log.1`; when the current file reaches half the budget it
//! becomes `.1` and a new one starts, so the pair never exceeds the budget
//! and memory use never depends on log volume.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use super::LogStream;

/// Current log file name.
pub const CURRENT: &str = "trainer.log";
/// Previous log file name.
pub const PREVIOUS: &str = "trainer.log.1";

/// Appends output, rotating at half of `max_bytes`.
pub struct RotatingWriter {
    dir: PathBuf,
    half: u64,
    file: File,
    size: u64,
}

impl RotatingWriter {
    /// Opens (appending to) the current file in `dir`.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(CURRENT))?;
        let size = file.metadata()?.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            half: (max_bytes / 2).max(4096),
            file,
            size,
        })
    }

    /// Appends `buf`, rotating first when it would overflow the current half.
    pub fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + buf.len() as u64 > self.half {
            std::fs::rename(self.dir.join(CURRENT), self.dir.join(PREVIOUS))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(CURRENT))?;
            self.size = 0;
        }
        // A single write larger than the budget keeps only its end.
        let buf = if buf.len() as u64 > self.half {
            &buf[buf.len() - self.half as usize..]
        } else {
            buf
        };
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }
}

/// Appends one line from the platform itself (not the trainer) to the
/// current file, on a line of its own. The supervisor keeps writing the
/// trainer's output beside it: both append (`O_APPEND`), so neither
/// overwrites the other.
pub fn append_note(dir: &Path, line: &str) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(dir.join(CURRENT))?;
    let len = file.metadata()?.len();
    let mut last = [b'\n'];
    if len > 0 {
        file.read_exact_at(&mut last, len - 1)?;
    }
    let sep = if last[0] == b'\n' { "" } else { "\n" };
    file.write_all(format!("{sep}{line}\n").as_bytes())
}

/// Deletes the captured output in `dir` (after it was archived).
pub fn remove(dir: &Path) {
    for name in [PREVIOUS, CURRENT] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// Whether `dir` holds any captured output.
pub fn exists(dir: &Path) -> bool {
    dir.join(CURRENT).exists() || dir.join(PREVIOUS).exists()
}

/// Where a read stopped in the current file: (inode, offset).
type Position = (u64, u64);

/// Everything captured, oldest first.
pub fn read_all(dir: &Path) -> std::io::Result<Vec<u8>> {
    read_all_at(dir).map(|(all, _)| all)
}

/// Everything captured, oldest first, and where the read stopped in the
/// current file (inode, offset) so a follower continues exactly there.
fn read_all_at(dir: &Path) -> std::io::Result<(Vec<u8>, Option<Position>)> {
    let mut out = Vec::new();
    let mut position = None;
    for name in [PREVIOUS, CURRENT] {
        match File::open(dir.join(name)) {
            Ok(mut f) => {
                let n = f.read_to_end(&mut out)?;
                if name == CURRENT {
                    position = Some((f.metadata()?.ino(), n as u64));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok((out, position))
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &[u8], n: usize) -> Vec<u8> {
    let trimmed = text.strip_suffix(b"\n").unwrap_or(text);
    let mut count = 0;
    for (i, b) in trimmed.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return text[i + 1..].to_vec();
            }
        }
    }
    text.to_vec()
}

/// The last `n` lines of the captured output, as text (read off the
/// async runtime: the files may hold up to the whole log budget).
pub async fn tail(dir: PathBuf, n: usize) -> String {
    blocking(move || read_all(&dir))
        .await
        .map(|all| {
            String::from_utf8_lossy(&last_lines(&all, n))
                .trim_end()
                .to_string()
        })
        .unwrap_or_default()
}

/// Runs file I/O on the blocking pool.
async fn blocking<T, F>(f: F) -> std::io::Result<T>
where
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

/// Streams the captured output; with `follow`, keeps streaming new output
/// (across rotations) until `finished()` is true and nothing is left.
/// Every read (and `finished`, which may look at files) runs on the
/// blocking pool.
pub fn stream<F>(dir: PathBuf, tail_lines: Option<usize>, follow: bool, finished: F) -> LogStream
where
    F: Fn() -> bool + Send + Sync + 'static,
{
    struct Reader<F> {
        dir: PathBuf,
        /// Where the last read stopped in the current file (inode, offset);
        /// `None` before the first read.
        pos: Option<Option<Position>>,
        tail_lines: Option<usize>,
        follow: bool,
        done: bool,
        finished: std::sync::Arc<F>,
    }
    let reader = Reader {
        dir,
        pos: None,
        tail_lines,
        follow,
        done: false,
        finished: std::sync::Arc::new(finished),
    };
    Box::pin(futures::stream::unfold(reader, |mut r| async move {
        if r.done {
            return None;
        }
        loop {
            let (dir, tail, finished) = (r.dir.clone(), r.tail_lines, r.finished.clone());
            let read = match r.pos {
                None => blocking(move || initial(&dir, tail).map(|(b, p)| (b, p, false))).await,
                Some(pos) => {
                    blocking(move || {
                        let was_finished = finished();
                        let mut pos = pos;
                        read_new(&dir, &mut pos).map(|chunk| (chunk, pos, was_finished))
                    })
                    .await
                }
            };
            let first = r.pos.is_none();
            match read {
                Err(e) => {
                    r.done = true;
                    return Some((Err(e), r));
                }
                Ok((chunk, pos, was_finished)) => {
                    r.pos = Some(pos);
                    if first {
                        r.done = !r.follow;
                        return Some((Ok(Bytes::from(chunk)), r));
                    }
                    if !chunk.is_empty() {
                        return Some((Ok(Bytes::from(chunk)), r));
                    }
                    if was_finished {
                        r.done = true;
                        return Some((Ok(Bytes::new()), r));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }))
}

/// The first read of a stream: everything (or its last lines), and where
/// the current file ended.
fn initial(dir: &Path, tail_lines: Option<usize>) -> std::io::Result<(Vec<u8>, Option<Position>)> {
    let (all, position) = read_all_at(dir)?;
    let bytes = match tail_lines {
        Some(n) => last_lines(&all, n),
        None => all,
    };
    Ok((bytes, position))
}

/// Reads what was appended since `pos` (inode, offset), following a rotation
/// by finishing the rotated file first.
fn read_new(dir: &Path, pos: &mut Option<Position>) -> std::io::Result<Vec<u8>> {
    let current = match std::fs::metadata(dir.join(CURRENT)) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let offset = match *pos {
        Some((ino, off)) if ino == current.ino() => off,
        Some((ino, off)) => {
            // Rotated: the file we were reading is now `.1`.
            if let Ok(prev) = std::fs::metadata(dir.join(PREVIOUS)) {
                if prev.ino() == ino {
                    out.extend(read_from(&dir.join(PREVIOUS), off)?);
                }
            }
            0
        }
        None => 0,
    };
    let chunk = read_from(&dir.join(CURRENT), offset)?;
    *pos = Some((current.ino(), offset + chunk.len() as u64));
    out.extend(chunk);
    Ok(out)
}

fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    // Cap one read so a huge backlog streams in pieces.
    f.take(1 << 20).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_budget_and_keeps_the_newest_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RotatingWriter::open(dir.path(), 64 * 1024).unwrap();
        for i in 0..10_000 {
            w.write(format!("line {i}\n").as_bytes()).unwrap();
        }
        let all = read_all(dir.path()).unwrap();
        assert!(all.len() <= 64 * 1024, "{} bytes", all.len());
        assert!(String::from_utf8_lossy(&all).ends_with("line 9999\n"));
    }

    #[tokio::test]
    async fn tail_reads_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RotatingWriter::open(dir.path(), 64 * 1024).unwrap();
        for i in 0..100 {
            w.write(format!("line {i}\n").as_bytes()).unwrap();
        }
        assert_eq!(tail(dir.path().to_path_buf(), 2).await, "line 98\nline 99");
    }

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 5), b"a\nb\nc");
    }
}
