//! Routes SQLite's own allocations through mimalloc, like the rest of the
//! binary.
//!
//! Every write runs in a SAVEPOINT, and each one fills and then truncates
//! SQLite's in-memory sub-journal: page-sized buffers allocated and freed
//! per request. musl's allocator (the static build) hands such memory back
//! to the kernel at once, so every callback paid page faults and TLB
//! shootdowns for it; mimalloc keeps and reuses it.

use std::os::raw::{c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

unsafe extern "C" fn x_malloc(n: c_int) -> *mut c_void {
    // SAFETY: plain allocation; SQLite never asks for a negative size.
    unsafe { libmimalloc_sys::mi_malloc(n.max(0) as usize) }
}

unsafe extern "C" fn x_free(p: *mut c_void) {
    // SAFETY: SQLite frees only what x_malloc/x_realloc returned.
    unsafe { libmimalloc_sys::mi_free(p) }
}

unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    // SAFETY: `p` came from x_malloc/x_realloc.
    unsafe { libmimalloc_sys::mi_realloc(p, n.max(0) as usize) }
}

unsafe extern "C" fn x_size(p: *mut c_void) -> c_int {
    // SAFETY: `p` came from x_malloc/x_realloc; SQLite's blocks are < 2 GiB.
    unsafe { libmimalloc_sys::mi_usable_size(p) as c_int }
}

unsafe extern "C" fn x_roundup(n: c_int) -> c_int {
    // SAFETY: a pure size computation.
    let good = unsafe { libmimalloc_sys::mi_good_size(n.max(0) as usize) };
    c_int::try_from(good).unwrap_or(n)
}

unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shutdown(_: *mut c_void) {}

/// Returns the connection's unused page cache and then its thread's free
/// allocator pages to the system (run on the connection's own thread:
/// mimalloc's heaps are per thread).
pub(super) fn release(c: &rusqlite::Connection) {
    let _ = c.execute_batch("PRAGMA shrink_memory");
    // SAFETY: collects the calling thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Installs mimalloc as SQLite's allocator. Must run before the first
/// connection opens; later calls do nothing. Returns whether SQLite took it.
pub fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(x_malloc),
            xFree: Some(x_free),
            xRealloc: Some(x_realloc),
            xSize: Some(x_size),
            xRoundup: Some(x_roundup),
            xInit: Some(x_init),
            xShutdown: Some(x_shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: SQLite copies the struct; it fails with SQLITE_MISUSE
        // (and changes nothing) once a connection has initialised it.
        let rc = unsafe {
            ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_MALLOC,
                &methods as *const ffi::sqlite3_mem_methods,
            )
        };
        rc == ffi::SQLITE_OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_allocates_from_mimalloc() {
        // Every connection in this test binary opens after install().
        assert!(install(), "installed before SQLite initialised");
        assert!(install(), "idempotent");
        // SAFETY: a plain allocation through SQLite, freed right after.
        unsafe {
            let p = ffi::sqlite3_malloc(4096);
            assert!(!p.is_null());
            assert!(libmimalloc_sys::mi_is_in_heap_region(p));
            assert!(ffi::sqlite3_msize(p) >= 4096);
            ffi::sqlite3_free(p);
        }
        // And SQLite still works on top of it.
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t(x); BEGIN; SAVEPOINT a; INSERT INTO t VALUES (randomblob(9000)); RELEASE a; COMMIT;")
            .unwrap();
        let n: i64 = c
            .query_row("SELECT length(x) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 9000);
    }
}
