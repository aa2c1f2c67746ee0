//! The x86_64 routines: copies and comparisons in SSE2, which every x86_64 CPU has.

use core::arch::x86_64::{
    __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_store_si128, _mm_storeu_si128,
};

/// From this size a non-overlapping copy goes to `rep movsb`; below it the
/// instruction's start-up costs more than the block loop (glibc's default
/// threshold on CPUs with enhanced `rep movsb` is the same).
const REP_MOVSB_FROM: usize = 2048;

/// Copies `n` bytes from `src` to `dest`, which must not overlap.
///
/// # Safety
/// As C's `memcpy`: both ranges valid for `n` bytes.
#[cfg_attr(target_env = "musl", no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; `copy` also allows overlap.
    unsafe { copy(dest, src, n) };
    dest
}

/// Copies `n` bytes from `src` to `dest`, which may overlap.
///
/// # Safety
/// As C's `memmove`: both ranges valid for `n` bytes.
#[cfg_attr(target_env = "musl", no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe { copy(dest, src, n) };
    dest
}

/// Compares `n` bytes: negative, zero or positive as the first byte that
/// differs (unsigned) is smaller in `a`, equal, or larger.
///
/// # Safety
/// As C's `memcmp`: both ranges valid for `n` bytes.
#[cfg_attr(target_env = "musl", no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY (whole body): every load stays inside `a[..n]` and `b[..n]`.
    // Overlapping loads re-compare bytes already found equal, which cannot
    // move the first difference.
    unsafe {
        if n >= 16 {
            let mut at = 0;
            loop {
                let equal =
                    _mm_movemask_epi8(_mm_cmpeq_epi8(load(a.add(at)), load(b.add(at)))) as u32;
                if equal != 0xffff {
                    return byte_diff(a, b, at + (!equal).trailing_zeros() as usize);
                }
                if at + 16 == n {
                    return 0;
                }
                at = (at + 16).min(n - 16);
            }
        }
        if n >= 8 {
            words_diff::<u64>(a, b, n)
        } else if n >= 4 {
            words_diff::<u32>(a, b, n)
        } else {
            for i in 0..n {
                if *a.add(i) != *b.add(i) {
                    return byte_diff(a, b, i);
                }
            }
            0
        }
    }
}

/// Whether `n` bytes are equal (zero) or not: what Rust's `==` on slices
/// and strings calls.
///
/// # Safety
/// As `memcmp`.
#[cfg_attr(target_env = "musl", no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { memcmp(a, b, n) }
}

#[inline(always)]
unsafe fn byte_diff(a: *const u8, b: *const u8, i: usize) -> i32 {
    // SAFETY: the caller's: `i < n`.
    unsafe { i32::from(*a.add(i)) - i32::from(*b.add(i)) }
}

/// `memcmp` of `n` (`size_of::<T>()..=2 * size_of::<T>()`) bytes as a `T`
/// from each end. In a little-endian word the first differing byte in
/// memory is the lowest differing one.
#[inline(always)]
unsafe fn words_diff<T: Word>(a: *const u8, b: *const u8, n: usize) -> i32 {
    let w = core::mem::size_of::<T>();
    // SAFETY: `w <= n`, so both words lie inside the ranges.
    unsafe {
        for at in [0, n - w] {
            let x = a.add(at).cast::<T>().read_unaligned();
            let y = b.add(at).cast::<T>().read_unaligned();
            if x != y {
                return byte_diff(a, b, at + x.first_difference(y));
            }
        }
    }
    0
}

trait Word: Copy + PartialEq {
    /// The index in memory of the first byte that differs.
    fn first_difference(self, other: Self) -> usize;
}

impl Word for u64 {
    fn first_difference(self, other: Self) -> usize {
        ((self ^ other).trailing_zeros() / 8) as usize
    }
}

impl Word for u32 {
    fn first_difference(self, other: Self) -> usize {
        ((self ^ other).trailing_zeros() / 8) as usize
    }
}

/// One routine for both: telling overlap apart costs one comparison, and
/// only copies over 64 bytes need to.
#[inline(always)]
unsafe fn copy(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY (whole body): every load and store below stays inside
    // `src[..n]` and `dest[..n]`, which the caller vouches for.
    unsafe {
        if n <= 16 {
            // Two overlapping loads cover any length between one and two
            // times their width; both loads come before both stores, so an
            // overlap between the ranges cannot corrupt the copy.
            if n >= 8 {
                both_ends::<u64>(dest, src, n);
            } else if n >= 4 {
                both_ends::<u32>(dest, src, n);
            } else if n >= 2 {
                both_ends::<u16>(dest, src, n);
            } else if n == 1 {
                *dest = *src;
            }
        } else if n <= 32 {
            both_ends::<__m128i>(dest, src, n);
        } else if n <= 64 {
            let a = load(src);
            let b = load(src.add(16));
            let c = load(src.add(n - 32));
            let d = load(src.add(n - 16));
            store(dest, a);
            store(dest.add(16), b);
            store(dest.add(n - 32), c);
            store(dest.add(n - 16), d);
        } else if (dest as usize).wrapping_sub(src as usize) >= n {
            // `dest` does not start inside `src[..n]`: front to back is safe.
            if n >= REP_MOVSB_FROM && (src as usize).wrapping_sub(dest as usize) >= n {
                rep_movsb(dest, src, n);
            } else {
                forward(dest, src, n);
            }
        } else {
            backward(dest, src, n);
        }
    }
}

/// Copies `n` (`size_of::<T>()..=2 * size_of::<T>()`) bytes as a `T` from
/// each end.
#[inline(always)]
unsafe fn both_ends<T>(dest: *mut u8, src: *const u8, n: usize) {
    let w = core::mem::size_of::<T>();
    // SAFETY: `w <= n`, so both `T`s lie inside the ranges.
    unsafe {
        let head = src.cast::<T>().read_unaligned();
        let tail = src.add(n - w).cast::<T>().read_unaligned();
        dest.cast::<T>().write_unaligned(head);
        dest.add(n - w).cast::<T>().write_unaligned(tail);
    }
}

#[inline(always)]
unsafe fn load(p: *const u8) -> __m128i {
    // SAFETY: the caller's; SSE2 is part of x86_64.
    unsafe { _mm_loadu_si128(p.cast()) }
}

#[inline(always)]
unsafe fn store(p: *mut u8, v: __m128i) {
    // SAFETY: the caller's.
    unsafe { _mm_storeu_si128(p.cast(), v) }
}

/// A 64-byte block as four values. Nothing larger is ever moved in this
/// file: without optimisation such a move compiles to a call to `memcpy`,
/// which past 64 bytes would come back here and recurse (CI runs the tests
/// unoptimised on musl for that reason). Up to 64 bytes, `copy` serves it
/// without a block.
#[derive(Clone, Copy)]
struct Block(__m128i, __m128i, __m128i, __m128i);

impl Block {
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Block {
        // SAFETY: the caller's: `p` valid for 64 bytes.
        unsafe { Block(load(p), load(p.add(16)), load(p.add(32)), load(p.add(48))) }
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        // SAFETY: the caller's: `p` valid for 64 bytes.
        unsafe {
            store(p, self.0);
            store(p.add(16), self.1);
            store(p.add(32), self.2);
            store(p.add(48), self.3);
        }
    }

    #[inline(always)]
    unsafe fn store_aligned(self, p: *mut u8) {
        // SAFETY: the caller's: `p` 16-byte aligned and valid for 64 bytes.
        unsafe {
            _mm_store_si128(p.cast(), self.0);
            _mm_store_si128(p.add(16).cast(), self.1);
            _mm_store_si128(p.add(32).cast(), self.2);
            _mm_store_si128(p.add(48).cast(), self.3);
        }
    }
}

/// Copies `n > 64` bytes front to back, `dest` not after the start of
/// `src` if they overlap.
///
/// The first 16 and last 64 bytes are read before anything is written and
/// stored last; in between, aligned 64-byte blocks. A block's reads come
/// before its writes, and every write lands below the source bytes still to
/// be read, so an overlap of this direction is safe.
#[inline(never)]
unsafe fn forward(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: offsets stay below `n`; see above for the overlap.
    unsafe {
        let head = load(src);
        let tail = Block::load(src.add(n - 64));
        // 1..=16, so the first block starts 16-byte aligned within the head.
        let mut at = 16 - (dest as usize & 15);
        while at + 64 < n {
            Block::load(src.add(at)).store_aligned(dest.add(at));
            at += 64;
        }
        store(dest, head);
        tail.store(dest.add(n - 64));
    }
}

/// Copies `n > 64` bytes back to front, for `dest` inside `src[..n]`: the
/// mirror image of [`forward`], with the first 64 and the last 16 bytes
/// read first.
#[inline(never)]
unsafe fn backward(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: offsets stay below `n`; every write lands above the source
    // bytes still to be read.
    unsafe {
        let head = Block::load(src);
        let tail = load(src.add(n - 16));
        // The end of the last aligned block: 0..=15 bytes below the end.
        let mut at = n - ((dest as usize + n) & 15);
        while at > 64 + 64 {
            at -= 64;
            Block::load(src.add(at)).store_aligned(dest.add(at));
        }
        // What is left between byte 64 and `at` (1..=64 bytes): one
        // unaligned block ending at `at`, which may overlap the head.
        if at > 64 {
            Block::load(src.add(at - 64)).store(dest.add(at - 64));
        }
        store(dest.add(n - 16), tail);
        head.store(dest);
    }
}

#[inline(always)]
unsafe fn rep_movsb(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the ranges are valid and do not overlap; the ABI keeps the
    // direction flag clear, so the move runs upwards.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
}
