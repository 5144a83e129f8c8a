//! Keyed MACs, constant-time comparison and signature decoding shared by every scheme.

use crate::config::HmacAlgorithm;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

/// An HMAC already keyed: cloning it skips re-deriving the inner and outer pads per request.
#[derive(Clone)]
pub(crate) enum HmacKey {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Hmac<sha2::Sha512>),
}

impl HmacKey {
    pub(crate) fn new(alg: HmacAlgorithm, key: &[u8]) -> HmacKey {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
        match alg {
            HmacAlgorithm::Sha1 => HmacKey::Sha1(keyed(key)),
            HmacAlgorithm::Sha256 => HmacKey::Sha256(keyed(key)),
            HmacAlgorithm::Sha512 => HmacKey::Sha512(keyed(key)),
        }
    }

    pub(crate) fn sha256(key: &[u8]) -> HmacKey {
        HmacKey::new(HmacAlgorithm::Sha256, key)
    }

    /// MAC over the concatenation of `parts`, without concatenating them.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> Tag {
        let mut tag = Tag {
            bytes: [0; 64],
            len: 0,
        };
        match self.clone() {
            HmacKey::Sha1(m) => tag.fill(&finish(m, parts)),
            HmacKey::Sha256(m) => tag.fill(&finish(m, parts)),
            HmacKey::Sha512(m) => tag.fill(&finish(m, parts)),
        }
        tag
    }
}

fn keyed<M: Mac + hmac::digest::KeyInit>(key: &[u8]) -> M {
    <M as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes keys of any size"))
}

fn finish<M: Mac>(mut m: M, parts: &[&[u8]]) -> hmac::digest::Output<M> {
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes()
}

/// A MAC output of up to 64 bytes.
pub(crate) struct Tag {
    bytes: [u8; 64],
    len: usize,
}

impl Tag {
    fn fill(&mut self, b: &[u8]) {
        self.bytes[..b.len()].copy_from_slice(b);
        self.len = b.len();
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Constant-time equality with a decoded signature.
    pub(crate) fn matches(&self, candidate: &[u8]) -> bool {
        ct_eq(self.as_bytes(), candidate)
    }

    pub(crate) fn hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    pub(crate) fn base64(&self) -> String {
        STANDARD.encode(self.as_bytes())
    }

    pub(crate) fn base64_into(&self, out: &mut String) {
        STANDARD.encode_string(self.as_bytes(), out);
    }
}

/// Constant-time comparison; only the lengths (public) may leak.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s.trim()).ok()
}

/// Standard base64, with or without padding.
pub(crate) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    STANDARD
        .decode(s)
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .ok()
}

pub(crate) fn decode_base64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

pub(crate) fn encode_base64(b: &[u8]) -> String {
    STANDARD.encode(b)
}

pub(crate) fn encode_base64_into(b: &[u8], out: &mut String) {
    STANDARD.encode_string(b, out);
}

pub(crate) fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_over_parts_equals_mac_over_concatenation() {
        let k = HmacKey::sha256(b"key");
        assert_eq!(
            k.mac(&[b"ab", b"", b"cd"]).as_bytes(),
            k.mac(&[b"abcd"]).as_bytes()
        );
        // RFC 4231 test case 2.
        let k = HmacKey::sha256(b"Jefe");
        assert_eq!(
            k.mac(&[b"what do ya want for nothing?"]).hex(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn ct_eq_needs_equal_length_and_bytes() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn base64_accepts_missing_padding() {
        assert_eq!(decode_base64("YQ==").unwrap(), b"a");
        assert_eq!(decode_base64("YQ").unwrap(), b"a");
        assert!(decode_base64("!!").is_none());
    }
}
