//! When to try again: a pure schedule, so it is tested without a clock.

use crate::api::RetryPolicy;
use std::time::Duration;

/// The default policy: delays of 5 s growing ×3 up to 12 h, 15 attempts over about three
/// days (the last one 3.1 days after the first), and never past 3.5 days.
pub fn default_policy() -> RetryPolicy {
    RetryPolicy::Exponential {
        initial_secs: 5,
        multiplier: 3.0,
        max_secs: 12 * 3600,
        max_attempts: 15,
        max_age_secs: Some(84 * 3600),
    }
}

/// `Retry-After` is honoured within these bounds: a receiver cannot stall a delivery for days,
/// nor make us hammer it.
pub const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
/// See [`RETRY_AFTER_MIN`].
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(6 * 3600);

/// The delay before the next attempt after `attempts` attempts failed, or `None` to
/// dead-letter. `jitter` (0.8 to 1.2 in practice) spreads retries of many deliveries apart;
/// a `retry_after` from the receiver replaces the computed delay (clamped).
pub fn next_delay(
    policy: &RetryPolicy,
    attempts: u32,
    age: Duration,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Option<Duration> {
    let (computed, max_age) = match policy {
        RetryPolicy::Exponential {
            initial_secs,
            multiplier,
            max_secs,
            max_attempts,
            max_age_secs,
        } => {
            if attempts >= *max_attempts {
                return None;
            }
            let exp = multiplier.powi(attempts.saturating_sub(1).min(64) as i32);
            let secs = (*initial_secs as f64 * exp).min(*max_secs as f64);
            (
                Duration::from_secs_f64(secs * jitter),
                max_age_secs.map(Duration::from_secs),
            )
        }
        RetryPolicy::Schedule { delays_secs } => {
            let secs = *delays_secs.get(attempts.saturating_sub(1) as usize)?;
            (Duration::from_secs_f64(secs as f64 * jitter), None)
        }
    };
    let delay = retry_after.map_or(computed, |r| r.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX));
    match max_age {
        Some(max) if age + delay > max => None,
        _ => Some(delay),
    }
}

/// Parses `Retry-After`: delta seconds, or an HTTP date relative to `now_unix`.
pub fn parse_retry_after(value: &str, now_unix: i64) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let fmt = time::format_description::parse_borrowed::<2>(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT",
    )
    .ok()?;
    let at = time::PrimitiveDateTime::parse(v, &fmt)
        .ok()?
        .assume_utc()
        .unix_timestamp();
    Some(Duration::from_secs(
        at.saturating_sub(now_unix).max(0) as u64
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_spans_about_three_days() {
        let p = default_policy();
        let mut total = Duration::ZERO;
        let mut attempts = 1;
        while let Some(d) = next_delay(&p, attempts, total, None, 1.0) {
            total += d;
            attempts += 1;
        }
        assert_eq!(attempts, 15);
        assert!(
            total > Duration::from_secs(3 * 24 * 3600) && total < Duration::from_secs(84 * 3600),
            "{total:?}"
        );
        assert_eq!(
            next_delay(&p, 1, Duration::ZERO, None, 1.0),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            next_delay(&p, 2, Duration::ZERO, None, 1.0),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            next_delay(&p, 1, Duration::ZERO, None, 1.2),
            Some(Duration::from_secs(6))
        );
    }

    #[test]
    fn retry_after_replaces_the_delay_within_bounds() {
        let p = default_policy();
        assert_eq!(
            next_delay(&p, 1, Duration::ZERO, Some(Duration::from_secs(120)), 1.0),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            next_delay(&p, 1, Duration::ZERO, Some(Duration::ZERO), 1.0),
            Some(RETRY_AFTER_MIN)
        );
        assert_eq!(
            next_delay(
                &p,
                1,
                Duration::ZERO,
                Some(Duration::from_secs(10 * 86400)),
                1.0
            ),
            Some(RETRY_AFTER_MAX)
        );
        assert_eq!(parse_retry_after("30", 0), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111717),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }

    #[test]
    fn explicit_schedules_and_max_age_dead_letter() {
        let p = RetryPolicy::Schedule {
            delays_secs: vec![1, 10],
        };
        assert_eq!(
            next_delay(&p, 1, Duration::ZERO, None, 1.0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            next_delay(&p, 2, Duration::ZERO, None, 1.0),
            Some(Duration::from_secs(10))
        );
        assert_eq!(next_delay(&p, 3, Duration::ZERO, None, 1.0), None);
        let p = RetryPolicy::Exponential {
            initial_secs: 60,
            multiplier: 1.0,
            max_secs: 60,
            max_attempts: 100,
            max_age_secs: Some(100),
        };
        assert!(next_delay(&p, 1, Duration::from_secs(30), None, 1.0).is_some());
        assert_eq!(next_delay(&p, 2, Duration::from_secs(50), None, 1.0), None);
    }
}
