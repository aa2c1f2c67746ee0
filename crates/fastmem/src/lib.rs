//! `memcpy`, `memmove`, `memcmp` and `bcmp` for the static build.
//!
//! The binary that `install.sh` ships links musl statically, and musl's
//! x86_64 `memcpy` is `rep movsq` between two byte-at-a-time loops: every
//! call pays the microcoded string instructions' start-up and a few
//! single-byte moves, whatever its size. Most of the daemon's copies are a
//! few to a few hundred bytes (JSON written into buffers, SQLite cells,
//! hyper's frames), so under `GET /jobs` load musl's `memcpy` was 43 % of
//! the static binary's CPU (perf, issue 17). glibc picks a routine per CPU
//! at load time; a static musl binary cannot.
//!
//! musl's `memcmp` (and `bcmp`, which calls it) is a byte-at-a-time C
//! loop; SQLite's b-tree searches and Rust's `==` on strings and slices
//! call it for every key. Here it compares 16 bytes at a time, and short
//! ranges as two overlapping words.
//!
//! This crate copies the way glibc's and LLVM's libc do for small sizes:
//! up to 64 bytes with at most four overlapping loads from each end and no
//! loop, larger copies in 64-byte blocks of SSE2 loads and stores aligned
//! on the destination, and large non-overlapping copies with `rep movsb`,
//! which is fast from a few KiB on CPUs with enhanced `rep movsb` (Intel
//! since Ivy Bridge, AMD since Zen 3).
//!
//! Only an x86_64 musl build exports the functions under their C names, and
//! there they replace musl's for every caller: Rust, SQLite and mimalloc.
//! A static link takes an archive member only for a symbol still undefined,
//! so musl's `memcpy.o` stays out, and so does `memmove.o`, which would
//! pull `memcpy.o` back in for its `__memcpy_fwd`: the two go together.
//! On other targets they are ordinary Rust functions that only the tests
//! call, and the C library's own are used.
//!
//! `no_builtins` keeps LLVM from recognising the block loop as a copy and
//! compiling it back into a call to `memcpy`, which here would be a call
//! to itself.
#![no_builtins]
#![cfg_attr(not(test), no_std)]

#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "x86_64")]
pub use x86_64::{bcmp, memcmp, memcpy, memmove};

#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
