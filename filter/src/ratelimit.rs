//! Token-bucket arithmetic and its 16-byte state encoding, free of any host so it is tested
//! natively. The filter stores the state in Envoy's shared data (one entry per key) and
//! updates it with compare-and-swap; see `host.rs`.

use std::collections::HashMap;

/// Bucket state: tokens left and when they were counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketState {
    /// Tokens available at `at_ns`.
    pub tokens: f64,
    /// Time of the last update, unix nanoseconds.
    pub at_ns: u64,
}

impl BucketState {
    /// Encoded size in bytes.
    pub const LEN: usize = 16;

    /// Little-endian `tokens` (f64 bits) then `at_ns`.
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.tokens.to_bits().to_le_bytes());
        out[8..].copy_from_slice(&self.at_ns.to_le_bytes());
        out
    }

    /// Decodes [`BucketState::encode`]'s output; anything else (a foreign or corrupted
    /// value) is `None` and treated as a fresh bucket.
    pub fn decode(b: &[u8]) -> Option<BucketState> {
        let b: &[u8; 16] = b.try_into().ok()?;
        let tokens = f64::from_bits(u64::from_le_bytes(b[..8].try_into().ok()?));
        let at_ns = u64::from_le_bytes(b[8..].try_into().ok()?);
        (tokens.is_finite() && tokens >= 0.0).then_some(BucketState { tokens, at_ns })
    }
}

/// The outcome of taking one token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Take {
    /// Allowed; store the new state.
    Allowed(BucketState),
    /// Refused; the caller may retry after this many whole seconds (at least 1).
    Limited {
        /// Seconds until one token is available.
        retry_after_secs: u64,
    },
}

/// Token-bucket parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
}

impl TokenBucket {
    /// A bucket refilling at `rate_per_sec` up to `burst` tokens.
    ///
    /// # Errors
    /// When the rate is not a positive finite number or the burst is zero.
    pub fn new(rate_per_sec: f64, burst: u32) -> Result<TokenBucket, &'static str> {
        if !(rate_per_sec.is_finite() && rate_per_sec > 0.0) {
            return Err("rate_per_sec must be a positive number");
        }
        if burst == 0 {
            return Err("burst must be at least 1");
        }
        Ok(TokenBucket {
            rate_per_sec,
            burst: f64::from(burst),
        })
    }

    fn refill(&self, state: Option<BucketState>, now_ns: u64) -> BucketState {
        match state {
            None => BucketState {
                tokens: self.burst,
                at_ns: now_ns,
            },
            Some(s) => {
                // A clock that steps back refills nothing rather than draining the bucket.
                let elapsed = now_ns.saturating_sub(s.at_ns) as f64 / 1e9;
                BucketState {
                    tokens: (s.tokens + elapsed * self.rate_per_sec).min(self.burst),
                    at_ns: now_ns.max(s.at_ns),
                }
            }
        }
    }

    /// Takes one token at `now_ns`.
    pub fn take(&self, state: Option<BucketState>, now_ns: u64) -> Take {
        let mut s = self.refill(state, now_ns);
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            Take::Allowed(s)
        } else {
            let wait = (1.0 - s.tokens) / self.rate_per_sec;
            Take::Limited {
                retry_after_secs: (wait.ceil() as u64).max(1),
            }
        }
    }

    /// Whether the state has refilled completely, i.e. is equivalent to no entry and may be
    /// swept.
    pub fn is_full(&self, state: BucketState, now_ns: u64) -> bool {
        self.refill(Some(state), now_ns).tokens >= self.burst
    }
}

/// Where bucket states live: Envoy's shared data in the filter, a map natively.
pub trait RateLimitStore {
    /// Takes a token from the bucket `key` with parameters `bucket`.
    ///
    /// # Errors
    /// `Err(retry_after_secs)` when the bucket is empty.
    fn take(&mut self, key: &str, bucket: &TokenBucket, now_ns: u64) -> Result<(), u64>;
}

/// An in-process store, for native callers and tests.
#[derive(Debug, Default)]
pub struct LocalRateLimitStore {
    buckets: HashMap<String, BucketState>,
}

impl RateLimitStore for LocalRateLimitStore {
    fn take(&mut self, key: &str, bucket: &TokenBucket, now_ns: u64) -> Result<(), u64> {
        match bucket.take(self.buckets.get(key).copied(), now_ns) {
            Take::Allowed(s) => {
                self.buckets.insert(key.to_owned(), s);
                Ok(())
            }
            Take::Limited { retry_after_secs } => Err(retry_after_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn burst_then_refill_at_rate() {
        let b = TokenBucket::new(2.0, 3).unwrap();
        let mut store = LocalRateLimitStore::default();
        for _ in 0..3 {
            assert_eq!(store.take("k", &b, 10 * S), Ok(()));
        }
        assert_eq!(store.take("k", &b, 10 * S), Err(1));
        // Half a second at 2/s refills one token.
        assert_eq!(store.take("k", &b, 10 * S + S / 2), Ok(()));
        assert_eq!(store.take("k", &b, 10 * S + S / 2), Err(1));
        // Other keys have their own bucket.
        assert_eq!(store.take("other", &b, 10 * S), Ok(()));
    }

    #[test]
    fn retry_after_reflects_slow_rates() {
        let b = TokenBucket::new(0.1, 1).unwrap();
        let s = match b.take(None, 0) {
            Take::Allowed(s) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            b.take(Some(s), 0),
            Take::Limited {
                retry_after_secs: 10
            }
        );
        assert_eq!(
            b.take(Some(s), 4 * S),
            Take::Limited {
                retry_after_secs: 6
            }
        );
        assert!(matches!(b.take(Some(s), 10 * S), Take::Allowed(_)));
    }

    #[test]
    fn clock_steps_back_and_bad_params() {
        let b = TokenBucket::new(1.0, 1).unwrap();
        let Take::Allowed(s) = b.take(None, 100 * S) else {
            panic!()
        };
        assert!(matches!(b.take(Some(s), 50 * S), Take::Limited { .. }));
        assert!(TokenBucket::new(0.0, 1).is_err());
        assert!(TokenBucket::new(f64::NAN, 1).is_err());
        assert!(TokenBucket::new(1.0, 0).is_err());
    }

    #[test]
    fn full_buckets_can_be_swept() {
        let b = TokenBucket::new(1.0, 2).unwrap();
        let Take::Allowed(s) = b.take(None, 0) else {
            panic!()
        };
        assert!(!b.is_full(s, 0));
        assert!(b.is_full(s, S));
    }

    proptest! {
        #[test]
        fn encoding_round_trips(tokens in 0.0f64..1e9, at in any::<u64>()) {
            let s = BucketState { tokens, at_ns: at };
            prop_assert_eq!(BucketState::decode(&s.encode()), Some(s));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = BucketState::decode(&bytes);
        }

        #[test]
        fn never_more_than_burst_plus_rate_times_elapsed(rate in 0.5f64..100.0, burst in 1u32..50, steps in proptest::collection::vec(0u64..200_000_000, 1..200)) {
            let b = TokenBucket::new(rate, burst).unwrap();
            let mut store = LocalRateLimitStore::default();
            let mut now = 0u64;
            let mut allowed = 0u64;
            for step in &steps {
                now += step;
                if store.take("k", &b, now).is_ok() { allowed += 1; }
            }
            let bound = f64::from(burst) + rate * now as f64 / 1e9 + 1e-6;
            prop_assert!(allowed as f64 <= bound, "{} > {}", allowed, bound);
        }
    }
}
