//! A circuit breaker per endpoint: a pure state machine over explicit times, so it is tested
//! without a clock. It opens after `consecutive` failures in a row, or when at least `ratio` of the
//! last `window` attempts failed (an endpoint that fails every other request never fails five
//! times in a row, yet is as sick). Deliveries then wait (they are deferred, not attempted) until
//! the cooldown ends, when one half-open probe goes through: success closes it, failure reopens it
//! with a doubled cooldown (at most ten minutes).

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Failures in a row that open the circuit (at least 1).
    pub consecutive: u32,
    /// Share of failed attempts in the window that opens it; above 1 turns the rule off.
    pub ratio: f64,
    /// Attempts the ratio is taken over (1 to 64); the rule waits until the window is full so
    /// that a few early failures do not trip it.
    pub window: u32,
    /// First cooldown of an open circuit, in milliseconds.
    pub cooldown_ms: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            consecutive: 5,
            ratio: 0.5,
            window: 20,
            cooldown_ms: 30_000,
        }
    }
}

impl Policy {
    /// The same policy with its fields brought into range.
    #[must_use]
    pub fn normalized(self) -> Policy {
        Policy {
            consecutive: self.consecutive.max(1),
            ratio: if self.ratio.is_nan() { 2.0 } else { self.ratio },
            window: self.window.clamp(1, 64),
            cooldown_ms: self.cooldown_ms.max(0),
        }
    }

    fn window_mask(&self) -> u64 {
        u64::MAX >> (64 - self.window.clamp(1, 64))
    }
}

/// What the dispatcher may do with a delivery to this endpoint now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Closed: attempt it.
    Pass,
    /// Half-open: attempt it as the one probe.
    Probe,
    /// Open, or a probe is in flight: defer it until this time (unix ms).
    Wait(i64),
}

/// A change worth telling operators about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// It opened (or reopened after a failed probe).
    Opened,
    /// A probe succeeded; deliveries flow again.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: i64 },
    HalfOpen { probing: bool },
}

/// One endpoint's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    failures: u32,
    reopened: u32,
    /// The latest attempts' outcomes, newest in bit 0, a set bit for a failure.
    recent: u64,
    /// How many of `recent`'s bits are real attempts.
    samples: u32,
    /// When the current run of failures began (unix ms).
    pub failing_since: Option<i64>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed,
            failures: 0,
            reopened: 0,
            recent: 0,
            samples: 0,
            failing_since: None,
        }
    }
}

const MAX_COOLDOWN_MS: i64 = 10 * 60 * 1000;

impl Breaker {
    /// When an open circuit lets its probe through (unix ms); `None` unless open.
    pub fn open_until(&self) -> Option<i64> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Whether a delivery may be attempted at `now`.
    pub fn gate(&mut self, now: i64) -> Gate {
        match self.state {
            State::Closed => Gate::Pass,
            State::Open { until } if now < until => Gate::Wait(until),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                Gate::Probe
            }
            State::HalfOpen { probing: true } => Gate::Wait(now + 1000),
        }
    }

    /// Records an attempt's outcome at `now`.
    pub fn record(&mut self, ok: bool, now: i64, policy: &Policy) -> Option<Transition> {
        self.recent = ((self.recent << 1) | u64::from(!ok)) & policy.window_mask();
        self.samples = self
            .samples
            .saturating_add(1)
            .min(policy.window.clamp(1, 64));
        if ok {
            if self.state == State::Closed {
                self.failures = 0;
                self.failing_since = None;
                return None;
            }
            // Recovered: the failures before the outage say nothing about the endpoint now.
            *self = Breaker::default();
            return Some(Transition::Closed);
        }
        self.failing_since.get_or_insert(now);
        self.failures = self.failures.saturating_add(1);
        let reopen = match self.state {
            State::HalfOpen { .. } => true,
            State::Closed => self.failures >= policy.consecutive || self.ratio_tripped(policy),
            State::Open { .. } => false,
        };
        if !reopen {
            return None;
        }
        let cooldown_ms = policy.cooldown_ms;
        let cooldown = cooldown_ms
            .saturating_mul(1i64 << self.reopened.min(20))
            .min(MAX_COOLDOWN_MS.max(cooldown_ms));
        self.reopened = self.reopened.saturating_add(1);
        self.state = State::Open {
            until: now + cooldown,
        };
        Some(Transition::Opened)
    }

    fn ratio_tripped(&self, policy: &Policy) -> bool {
        let window = policy.window.clamp(1, 64);
        self.samples >= window
            && f64::from(self.recent.count_ones()) >= policy.ratio * f64::from(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the consecutive-failures rule.
    fn consecutive(n: u32, cooldown_ms: i64) -> Policy {
        Policy {
            consecutive: n,
            ratio: 2.0,
            window: 20,
            cooldown_ms,
        }
    }

    #[test]
    fn alternating_failures_trip_the_ratio_once_the_window_is_full() {
        let p = Policy {
            consecutive: 5,
            ratio: 0.5,
            window: 10,
            cooldown_ms: 1000,
        };
        let mut b = Breaker::default();
        // fail, ok, fail, ok, …: never two failures in a row.
        for i in 0..9 {
            assert_eq!(b.record(i % 2 == 1, i, &p), None, "attempt {i}");
        }
        assert_eq!(
            b.gate(9),
            Gate::Pass,
            "nine samples: the window is not full"
        );
        assert_eq!(
            b.record(true, 9, &p),
            None,
            "5 of 10 failed, but a success never opens"
        );
        assert_eq!(b.record(false, 10, &p), Some(Transition::Opened));
        assert_eq!(b.gate(11), Gate::Wait(1010));
        // A successful probe starts a fresh window: one failure does not reopen it.
        assert_eq!(b.gate(1010), Gate::Probe);
        assert_eq!(b.record(true, 1011, &p), Some(Transition::Closed));
        assert_eq!(b.record(false, 1012, &p), None);
        assert_eq!(b.gate(1013), Gate::Pass);
    }

    #[test]
    fn mostly_healthy_endpoints_stay_closed() {
        let p = Policy::default();
        let mut b = Breaker::default();
        // One failure in five, forever: 20 % < 50 %.
        for i in 0..1000 {
            assert_eq!(b.record(i % 5 != 0, i, &p), None, "attempt {i}");
        }
        assert_eq!(b.gate(1000), Gate::Pass);
    }

    #[test]
    fn normalizing_keeps_the_window_in_a_u64() {
        let p = Policy {
            consecutive: 0,
            ratio: f64::NAN,
            window: 1000,
            cooldown_ms: -5,
        }
        .normalized();
        assert_eq!((p.consecutive, p.window, p.cooldown_ms), (1, 64, 0));
        let p = Policy {
            ratio: f64::NAN,
            window: 1000,
            ..Policy::default()
        }
        .normalized();
        let mut b = Breaker::default();
        for i in 0..100 {
            assert_eq!(
                b.record(i % 2 == 0, i, &p),
                None,
                "NaN ratio turns the rule off"
            );
        }
        let full = Policy {
            consecutive: 100,
            ratio: 1.0,
            window: 64,
            cooldown_ms: 1,
        };
        let mut b = Breaker::default();
        let opened = (0..64).filter_map(|i| b.record(false, i, &full)).count();
        assert_eq!(
            opened, 1,
            "64 failures of 64 trip a ratio of 1.0 exactly once"
        );
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_once() {
        let mut b = Breaker::default();
        assert_eq!(b.record(false, 0, &consecutive(3, 1000)), None);
        assert_eq!(b.record(false, 1, &consecutive(3, 1000)), None);
        assert_eq!(b.gate(2), Gate::Pass);
        assert_eq!(
            b.record(false, 2, &consecutive(3, 1000)),
            Some(Transition::Opened)
        );
        assert_eq!(b.gate(500), Gate::Wait(1002));
        // Cooldown over: one probe, everything else waits for its result.
        assert_eq!(b.gate(1002), Gate::Probe);
        assert!(matches!(b.gate(1003), Gate::Wait(_)));
        // The probe fails: reopened for twice as long.
        assert_eq!(
            b.record(false, 1010, &consecutive(3, 1000)),
            Some(Transition::Opened)
        );
        assert_eq!(b.gate(1011), Gate::Wait(3010));
        assert_eq!(b.gate(3010), Gate::Probe);
        assert_eq!(
            b.record(true, 3020, &consecutive(3, 1000)),
            Some(Transition::Closed)
        );
        assert_eq!(b.gate(3021), Gate::Pass);
        assert_eq!(b.failing_since, None);
    }

    #[test]
    fn a_success_resets_the_count_and_cooldowns_are_capped() {
        let mut b = Breaker::default();
        b.record(false, 0, &consecutive(2, 1000));
        assert_eq!(
            b.record(true, 1, &consecutive(2, 1000)),
            None,
            "closed stays closed: nothing to announce"
        );
        assert_eq!(b.record(false, 2, &consecutive(2, 1000)), None);
        assert_eq!(b.failing_since, Some(2));
        let mut b = Breaker::default();
        let mut now = 0;
        for _ in 0..30 {
            b.record(false, now, &consecutive(1, 30_000));
            if let Gate::Wait(until) = b.gate(now) {
                assert!(until - now <= MAX_COOLDOWN_MS);
                now = until;
            }
            assert_eq!(b.gate(now), Gate::Probe);
        }
    }
}
