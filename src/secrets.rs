//! Secrets the daemon hands out and checks: fresh random tokens, the hash
//! that is all the database keeps of one, and comparing a presented token
//! without leaking how much of it matched.
//!
//! Tokens are 256 random bits, so a plain SHA-256 is the right hash: there
//! is nothing to brute-force, and checking a callback stays cheap.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// A fresh 256-bit token, hex-encoded.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// Prefix of user API tokens, so secret scanners and people recognise one.
pub const USER_TOKEN_PREFIX: &str = "plt_";

/// A fresh user API token: `plt_` and 43 random base62 characters (256
/// bits).
pub fn new_user_token() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let body: String = (0..43)
        .map(|_| char::from(ALPHABET[rand::Rng::random_range(&mut rng, 0..ALPHABET.len())]))
        .collect();
    format!("{USER_TOKEN_PREFIX}{body}")
}

/// What is stored of `token`: its SHA-256, hex-encoded.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Lowercase hex, by table rather than `format!` per byte: every callback
/// hashes its token.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Whether `presented` is the token whose hash is `stored`.
pub fn token_matches(presented: &str, stored: &str) -> bool {
    constant_time_eq(hash_token(presented).as_bytes(), stored.as_bytes())
}

/// Compares in time that depends only on the lengths, so a caller cannot
/// find a token byte by byte from response times.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_compare_exactly() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(constant_time_eq(a.as_bytes(), a.as_bytes()));
        assert!(!constant_time_eq(a.as_bytes(), b.as_bytes()));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn user_tokens_are_prefixed_base62_with_256_bits() {
        let (a, b) = (new_user_token(), new_user_token());
        assert_ne!(a, b);
        let body = a.strip_prefix("plt_").unwrap();
        assert_eq!(body.len(), 43, "62^43 > 2^256");
        assert!(body.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn only_the_hash_is_kept_and_it_matches_only_its_token() {
        let t = new_token();
        let h = hash_token(&t);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&t));
        assert!(token_matches(&t, &h));
        assert!(!token_matches(&new_token(), &h));
        // The known answer, so the hash cannot silently change between releases.
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
