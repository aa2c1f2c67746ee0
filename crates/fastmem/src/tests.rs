//! Every length up to well past the 64-byte and `rep movsb` switches, at
//! every alignment of both ends, and every overlap in both directions,
//! against a byte-by-byte reference.
//!
//! The buffers are filled and checked one byte at a time (never with a
//! copy), so that on musl, where these functions are the system's, the
//! reference does not depend on the code it checks.

use super::{bcmp, memcmp, memcpy, memmove};

/// A byte that differs from its neighbours and between the two buffers.
fn byte(i: usize, salt: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 8) ^ salt) as u8
}

fn filled(len: usize, salt: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for (i, b) in v.iter_mut().enumerate() {
        *b = byte(i, salt);
    }
    v
}

fn lengths() -> impl Iterator<Item = usize> {
    (0..=300).chain([
        511, 512, 513, 1000, 2047, 2048, 2049, 4095, 4096, 10_000, 70_001,
    ])
}

#[test]
fn memcpy_copies_every_length_at_every_alignment_and_nothing_else() {
    for n in lengths() {
        let offsets: &[usize] = if n <= 300 {
            &[0, 1, 3, 7, 8, 15, 16, 31, 33]
        } else {
            &[0, 5, 16]
        };
        for &so in offsets {
            for &d in offsets {
                let src = filled(n + 64, 0x5a);
                let mut dst = filled(n + 128, 0xc3);
                // SAFETY: both ranges lie inside their buffers and are distinct.
                let ret = unsafe { memcpy(dst.as_mut_ptr().add(d + 32), src.as_ptr().add(so), n) };
                assert_eq!(ret, dst.as_mut_ptr().wrapping_add(d + 32));
                for (i, &b) in dst.iter().enumerate() {
                    let want = if (d + 32..d + 32 + n).contains(&i) {
                        byte(i - d - 32 + so, 0x5a)
                    } else {
                        byte(i, 0xc3)
                    };
                    assert_eq!(b, want, "n={n} src+{so} dst+{d}: byte {i}");
                }
            }
        }
    }
}

#[test]
fn memmove_handles_every_overlap_in_both_directions() {
    for n in lengths().filter(|&n| n <= 4096) {
        let shifts =
            (-(n as isize) - 2..=n as isize + 2).filter(|s| s.unsigned_abs() <= 140 || s % 61 == 0);
        for shift in shifts {
            for base in [0usize, 1, 9] {
                let margin = n + 16;
                let mut buf = filled(n + 2 * margin, 0x77);
                let from = margin + base;
                let to = from.wrapping_add_signed(shift);
                // SAFETY: `from..from + n` and `to..to + n` lie inside `buf`
                // (|shift| <= n + 2, base < 14).
                unsafe { memmove(buf.as_mut_ptr().add(to), buf.as_ptr().add(from), n) };
                for (i, &b) in buf.iter().enumerate() {
                    let want = if (to..to + n).contains(&i) {
                        byte(i - to + from, 0x77)
                    } else {
                        byte(i, 0x77)
                    };
                    assert_eq!(b, want, "n={n} shift={shift} base={base}: byte {i}");
                }
            }
        }
    }
}

#[test]
fn memcmp_finds_the_first_difference_at_every_position_with_either_sign() {
    for n in (0..=80).chain([127, 128, 129, 1000]) {
        let whole = filled(n + 9, 0x3c);
        for shift in [0, 1, 7, 9] {
            let a = &whole[shift..][..n];
            let mut b = vec![0u8; n];
            for (i, x) in b.iter_mut().enumerate() {
                *x = a[i];
            }
            let cmp = |b: &[u8]| {
                // SAFETY: both ranges are `n` bytes of live buffers.
                unsafe {
                    (
                        memcmp(a.as_ptr(), b.as_ptr(), n),
                        bcmp(a.as_ptr(), b.as_ptr(), n),
                    )
                }
            };
            assert_eq!(cmp(&b), (0, 0), "n={n}: equal");
            for at in 0..n {
                // Either sign, and as a wrapped byte too (unsigned order).
                for bump in [1u8, 128, 255] {
                    b[at] = a[at].wrapping_add(bump);
                    // A later difference of the other sign must not count.
                    let later = (at + 1 < n).then(|| at + 1 + (at * 7) % (n - at - 1));
                    if let Some(j) = later {
                        b[j] = a[j].wrapping_sub(bump);
                    }
                    let want = (i32::from(a[at]) - i32::from(b[at])).signum();
                    let (got, equal) = cmp(&b);
                    assert_eq!(
                        got.signum(),
                        want,
                        "n={n} shift={shift} at={at} bump={bump}"
                    );
                    assert_ne!(equal, 0, "n={n} shift={shift} at={at} bump={bump}");
                    b[at] = a[at];
                    if let Some(j) = later {
                        b[j] = a[j];
                    }
                }
            }
        }
    }
}
