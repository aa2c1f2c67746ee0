//! The read-only connections, sized to the load.
//!
//! WAL mode lets reads run beside the writer, each on a connection with
//! its own thread, schema copy, statement cache and page cache. An idle
//! daemon needs one; a second one pays only when reads overlap. So the
//! first opens with the database and the others when a read finds every
//! open one busy, up to [`READERS`]. They stay open until the database
//! closes: what an idle one holds is bounded by `cache_size`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rusqlite::OpenFlags;
use tokio::sync::OnceCell;

use super::configure;
use crate::db::DbError;

/// Most read-only connections.
pub(super) const READERS: usize = 2;

/// One read-only connection and how many reads are queued on it.
struct Reader {
    conn: tokio_rusqlite::Connection,
    busy: AtomicUsize,
}

/// A read in flight on a [`Reader`]; the reader counts as busy until it
/// is dropped.
pub(super) struct Busy<'a>(&'a Reader);

impl Busy<'_> {
    pub(super) fn conn(&self) -> &tokio_rusqlite::Connection {
        &self.0.conn
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) struct Readers {
    path: PathBuf,
    slots: [OnceCell<Reader>; READERS],
    /// Round-robin among busy readers once all are open.
    next: AtomicUsize,
    /// Set by [`Readers::close`]: no reader opens after it.
    closed: AtomicBool,
}

impl Readers {
    /// The pool over `path`, its first reader open.
    pub(super) async fn open(path: &Path) -> Result<Readers, DbError> {
        let readers = Readers {
            path: path.to_path_buf(),
            slots: Default::default(),
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        };
        readers.slots[0]
            .get_or_try_init(|| connect(&readers.path))
            .await?;
        Ok(readers)
    }

    /// An idle open reader; else a newly opened one while there is room;
    /// else the busy ones in turn.
    pub(super) async fn acquire(&self) -> Result<Busy<'_>, DbError> {
        let mut room = None;
        for slot in &self.slots {
            match slot.get() {
                Some(r) if r.busy.load(Ordering::Relaxed) == 0 => return Ok(self.hold(r)),
                Some(_) => {}
                None => room = room.or(Some(slot)),
            }
        }
        if let Some(slot) = room.filter(|_| !self.closed.load(Ordering::Relaxed)) {
            let r = slot.get_or_try_init(|| connect(&self.path)).await?;
            return Ok(self.hold(r));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..READERS)
            .filter_map(|i| self.slots[(start + i) % READERS].get())
            .next()
            .map(|r| self.hold(r))
            .ok_or(DbError::Closed)
    }

    fn hold<'a>(&self, r: &'a Reader) -> Busy<'a> {
        r.busy.fetch_add(1, Ordering::Relaxed);
        Busy(r)
    }

    /// The readers opened so far.
    pub(super) fn opened(&self) -> impl Iterator<Item = &tokio_rusqlite::Connection> {
        self.slots.iter().filter_map(OnceCell::get).map(|r| &r.conn)
    }

    /// Closes the readers opened so far; later reads fail with `Closed`.
    pub(super) async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        for conn in self.opened() {
            // Closing a clone closes the shared connection.
            if let Err(e) = conn.clone().close().await {
                tracing::warn!(error = %e, "closing a database reader failed");
            }
        }
    }
}

async fn connect(path: &Path) -> Result<Reader, DbError> {
    let conn = tokio_rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .await?;
    conn.call(|c| configure(c)).await?;
    Ok(Reader {
        conn,
        busy: AtomicUsize::new(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Readers {
        fn open_count(&self) -> usize {
            self.slots.iter().filter(|s| s.initialized()).count()
        }
    }

    async fn pool(dir: &tempfile::TempDir) -> Readers {
        super::super::alloc::install();
        let path = dir.path().join("t.db");
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER);")
            .unwrap();
        Readers::open(&path).await.unwrap()
    }

    #[tokio::test]
    async fn a_second_reader_opens_only_when_reads_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let readers = pool(&dir).await;
        assert_eq!(readers.open_count(), 1, "one reader to begin with");
        for _ in 0..3 {
            let r = readers.acquire().await.unwrap();
            r.conn()
                .call(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)))
                .await
                .unwrap();
        }
        assert_eq!(readers.open_count(), 1, "reads one after another share it");

        let first = readers.acquire().await.unwrap();
        let second = readers.acquire().await.unwrap();
        assert_eq!(
            readers.open_count(),
            2,
            "an overlapping read opened another"
        );
        let third = readers.acquire().await.unwrap();
        assert_eq!(readers.open_count(), READERS, "never more than READERS");
        for r in [&first, &second, &third] {
            r.conn()
                .call(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
                .await
                .unwrap();
        }
        drop((first, second, third));

        readers.close().await;
        let read = async {
            let r = readers.acquire().await?;
            r.conn()
                .call(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
                .await
                .map_err(DbError::from)
        };
        assert!(
            read.await.is_err(),
            "no read runs once the readers are closed"
        );
        assert_eq!(readers.open_count(), READERS);
    }

    #[tokio::test]
    async fn no_reader_opens_after_close() {
        let dir = tempfile::tempdir().unwrap();
        let readers = pool(&dir).await;
        let busy = readers.acquire().await.unwrap();
        readers.close().await;
        // The only open reader is busy and closed; no new one opens.
        let next = readers.acquire().await;
        assert_eq!(readers.open_count(), 1);
        drop((busy, next));
    }
}
