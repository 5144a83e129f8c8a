//! How many attempts may be in flight at once. Little's law: throughput is the number in
//! flight divided by the time each takes. Fast receivers need few attempts in flight, and more
//! only add memory and scheduling work (measured on loopback: 64 in flight delivered more than
//! 256, in less memory). Slow receivers need many. So the limit starts low, doubles while every
//! slot is busy and attempts are slow, and shrinks back after a calm second. It never leaves
//! the operator's bounds.

/// What the dispatcher saw during one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// It had to wait for a free slot.
    pub saturated: bool,
    /// Attempts that finished.
    pub completed: u64,
    /// Their total duration, in ms.
    pub latency_ms: u64,
}

/// Attempts slower than this on average, with every slot busy, mean more should be in flight.
const SLOW_MS: u64 = 10;
/// Windows without waiting for a slot before the limit shrinks.
const CALM_WINDOWS: u32 = 5;

/// The limit's state.
#[derive(Debug, Clone)]
pub struct Controller {
    min: usize,
    max: usize,
    limit: usize,
    calm: u32,
}

impl Controller {
    /// Starts at the lower bound.
    pub fn new(min: usize, max: usize) -> Controller {
        let max = max.max(1);
        let min = min.clamp(1, max);
        Controller {
            min,
            max,
            limit: min,
            calm: 0,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The limit for the next window.
    pub fn next(&mut self, w: &Window) -> usize {
        let slow = w.completed > 0 && w.latency_ms / w.completed >= SLOW_MS;
        if w.saturated {
            self.calm = 0;
            if slow {
                self.limit = (self.limit * 2).min(self.max);
            }
        } else {
            self.calm += 1;
            if self.calm >= CALM_WINDOWS {
                self.calm = 0;
                self.limit = (self.limit * 3 / 4).max(self.min);
            }
        }
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: Window = Window {
        saturated: true,
        completed: 100,
        latency_ms: 100 * 200,
    };
    const FAST: Window = Window {
        saturated: true,
        completed: 10_000,
        latency_ms: 10_000 * 2,
    };

    #[test]
    fn slow_saturated_windows_double_the_limit_up_to_the_bound() {
        let mut c = Controller::new(64, 256);
        assert_eq!(c.limit(), 64);
        assert_eq!(c.next(&SLOW), 128);
        assert_eq!(c.next(&SLOW), 256);
        assert_eq!(c.next(&SLOW), 256);
    }

    #[test]
    fn fast_attempts_do_not_grow_it_even_when_every_slot_is_busy() {
        let mut c = Controller::new(64, 256);
        for _ in 0..20 {
            assert_eq!(c.next(&FAST), 64);
        }
    }

    #[test]
    fn a_calm_second_shrinks_it_back_towards_the_lower_bound() {
        let mut c = Controller::new(64, 256);
        c.next(&SLOW);
        c.next(&SLOW);
        let calm = Window::default();
        for _ in 0..4 {
            assert_eq!(c.next(&calm), 256);
        }
        assert_eq!(c.next(&calm), 192);
        for _ in 0..50 {
            c.next(&calm);
        }
        assert_eq!(c.limit(), 64);
        // A busy window resets the calm count.
        c.next(&SLOW);
        for _ in 0..4 {
            c.next(&calm);
        }
        c.next(&FAST);
        assert_eq!(c.next(&calm), 128);
    }

    #[test]
    fn bounds_below_the_start_are_respected() {
        let mut c = Controller::new(64, 16);
        assert_eq!(c.limit(), 16);
        assert_eq!(c.next(&SLOW), 16);
        let mut c = Controller::new(0, 0);
        assert_eq!(c.next(&SLOW), 1);
    }
}
