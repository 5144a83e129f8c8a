//! A circuit breaker per endpoint: a pure state machine over explicit times, so it is tested
//! without a clock. After `threshold` consecutive failures it opens; deliveries then wait (they are
//! deferred, not attempted) until the cooldown ends, when one half-open probe goes through: success
//! closes it, failure reopens it with a doubled cooldown (at most ten minutes).

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
    /// When the current run of failures began (unix ms).
    pub failing_since: Option<i64>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed,
            failures: 0,
            reopened: 0,
            failing_since: None,
        }
    }
}

const MAX_COOLDOWN_MS: i64 = 10 * 60 * 1000;

impl Breaker {
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
    pub fn record(
        &mut self,
        ok: bool,
        now: i64,
        threshold: u32,
        cooldown_ms: i64,
    ) -> Option<Transition> {
        if ok {
            let was_closed = self.state == State::Closed;
            *self = Breaker::default();
            return (!was_closed).then_some(Transition::Closed);
        }
        self.failing_since.get_or_insert(now);
        self.failures = self.failures.saturating_add(1);
        let reopen = matches!(self.state, State::HalfOpen { .. })
            || (self.state == State::Closed && self.failures >= threshold);
        if !reopen {
            return None;
        }
        let cooldown = cooldown_ms
            .saturating_mul(1i64 << self.reopened.min(20))
            .min(MAX_COOLDOWN_MS.max(cooldown_ms));
        self.reopened = self.reopened.saturating_add(1);
        self.state = State::Open {
            until: now + cooldown,
        };
        Some(Transition::Opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_probes_once() {
        let mut b = Breaker::default();
        assert_eq!(b.record(false, 0, 3, 1000), None);
        assert_eq!(b.record(false, 1, 3, 1000), None);
        assert_eq!(b.gate(2), Gate::Pass);
        assert_eq!(b.record(false, 2, 3, 1000), Some(Transition::Opened));
        assert_eq!(b.gate(500), Gate::Wait(1002));
        // Cooldown over: one probe, everything else waits for its result.
        assert_eq!(b.gate(1002), Gate::Probe);
        assert!(matches!(b.gate(1003), Gate::Wait(_)));
        // The probe fails: reopened for twice as long.
        assert_eq!(b.record(false, 1010, 3, 1000), Some(Transition::Opened));
        assert_eq!(b.gate(1011), Gate::Wait(3010));
        assert_eq!(b.gate(3010), Gate::Probe);
        assert_eq!(b.record(true, 3020, 3, 1000), Some(Transition::Closed));
        assert_eq!(b.gate(3021), Gate::Pass);
        assert_eq!(b.failing_since, None);
    }

    #[test]
    fn a_success_resets_the_count_and_cooldowns_are_capped() {
        let mut b = Breaker::default();
        b.record(false, 0, 2, 1000);
        assert_eq!(
            b.record(true, 1, 2, 1000),
            None,
            "closed stays closed: nothing to announce"
        );
        assert_eq!(b.record(false, 2, 2, 1000), None);
        assert_eq!(b.failing_since, Some(2));
        let mut b = Breaker::default();
        let mut now = 0;
        for _ in 0..30 {
            b.record(false, now, 1, 30_000);
            if let Gate::Wait(until) = b.gate(now) {
                assert!(until - now <= MAX_COOLDOWN_MS);
                now = until;
            }
            assert_eq!(b.gate(now), Gate::Probe);
        }
    }
}
