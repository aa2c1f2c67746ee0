//! On x86_64 musl, this crate's functions must be the ones every caller in
//! the static binary reaches through the C symbols: if musl's own were
//! linked instead (or a build skipped the crate), the speed-up would be
//! silently gone. CI runs this test for the musl target.

#[cfg(all(target_env = "musl", target_arch = "x86_64"))]
#[test]
fn the_c_symbols_are_this_crates_functions() {
    extern "C" {
        #[link_name = "memcpy"]
        fn c_memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8;
        #[link_name = "memmove"]
        fn c_memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8;
        #[link_name = "memcmp"]
        fn c_memcmp(a: *const u8, b: *const u8, n: usize) -> i32;
        #[link_name = "bcmp"]
        fn c_bcmp(a: *const u8, b: *const u8, n: usize) -> i32;
    }
    assert_eq!(c_memcpy as *const (), fastmem::memcpy as *const ());
    assert_eq!(c_memmove as *const (), fastmem::memmove as *const ());
    assert_eq!(c_memcmp as *const (), fastmem::memcmp as *const ());
    assert_eq!(c_bcmp as *const (), fastmem::bcmp as *const ());
}

#[cfg(all(target_arch = "x86_64", not(target_env = "musl")))]
#[test]
fn elsewhere_the_c_library_keeps_its_own() {
    extern "C" {
        #[link_name = "memcpy"]
        fn c_memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8;
    }
    assert_ne!(c_memcpy as *const (), fastmem::memcpy as *const ());
}
