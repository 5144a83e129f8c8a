//! Identifiers, random tokens and time.

/// Crockford base32, as in ULIDs: sortable as text, no ambiguous letters.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new prefixed, time-ordered id (`src_01JD…`): 48 bits of milliseconds then 80 random bits,
/// so ids sort by creation time and serve as stable pagination cursors.
///
/// The random bits come from the thread's CSPRNG (seeded and reseeded from the OS): ids are not
/// secrets, and delivery makes three per event, where a system call each showed in profiles.
/// Keys, secrets and nonces use [`fill_random`].
pub fn new_id(prefix: &str) -> String {
    use rand::RngCore;
    let ms = now_ms().max(0) as u128 & ((1 << 48) - 1);
    let mut rnd = [0u8; 10];
    rand::thread_rng().fill_bytes(&mut rnd);
    let mut value = ms << 80;
    for (i, b) in rnd.iter().enumerate() {
        value |= u128::from(*b) << (8 * (9 - i));
    }
    encode(prefix, value)
}

/// A new id like [`new_id`], greater than every id this function returned before in this
/// process: deliveries that must keep their arrival order (an ordering key) sort by id, and
/// two arrivals within one millisecond would otherwise compare at random.
pub fn new_sequential_id(prefix: &str) -> String {
    static LAST: std::sync::Mutex<u128> = std::sync::Mutex::new(0);
    let fresh = decode(&new_id(prefix)[prefix.len() + 1..]);
    let value = {
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        *last = (*last + 1).max(fresh);
        *last
    };
    encode(prefix, value)
}

/// The least id with `prefix` made at or after `ms` (unix milliseconds): every id made
/// before then sorts below it, so `id < floor_id(..)` selects by age through the id's index.
pub fn floor_id(prefix: &str, ms: i64) -> String {
    encode(prefix, (ms.max(0) as u128 & ((1 << 48) - 1)) << 80)
}

fn encode(prefix: &str, value: u128) -> String {
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    for i in (0..26).rev() {
        out.push(ALPHABET[((value >> (5 * i)) & 31) as usize] as char);
    }
    out
}

fn decode(text: &str) -> u128 {
    text.bytes().fold(0u128, |acc, c| {
        let digit = ALPHABET.iter().position(|a| *a == c).unwrap_or(0) as u128;
        (acc << 5) | digit
    })
}

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Panics
/// If the OS has no randomness to give, which leaves nothing safe to do.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::getrandom(buf).expect("the operating system's random source failed");
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    fill_random(&mut v);
    v
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// RFC 3339 (UTC) for a unix-millisecond time.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Parses RFC 3339 into unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_unique_and_time_ordered() {
        let a = new_id("src");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("src");
        assert!(a.starts_with("src_") && a.len() == 30, "{a}");
        assert!(a < b);
        assert_ne!(new_id("x"), new_id("x"));
    }

    #[test]
    fn sequential_ids_increase_within_a_millisecond() {
        let ids: Vec<String> = (0..1000).map(|_| new_sequential_id("dlv")).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids[0].starts_with("dlv_") && ids[0].len() == 30);
        // Still time-ordered against ids made later by the ordinary generator.
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(ids[999] < new_id("dlv"));
    }

    #[test]
    fn floor_ids_split_ids_by_their_time() {
        let before = new_id("evt");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let cut = floor_id("evt", now_ms());
        let after = new_id("evt");
        assert!(before < cut && cut <= after, "{before} {cut} {after}");
        assert_eq!(cut.len(), before.len());
        assert!(floor_id("evt", -5) < before);
    }

    #[test]
    fn rfc3339_round_trip() {
        let ms = 1_700_000_000_123;
        assert_eq!(rfc3339(ms), "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
