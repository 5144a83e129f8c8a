//! A read-only view of request headers with strict lookups.
//!
//! Security headers (signatures, timestamps, credentials) must appear exactly once: a proxy or
//! framework that reads "the first value" while another reads "the last" is a classic signature
//! bypass, so [`Headers::unique`] refuses repeats instead of picking one.

/// A header that was expected once but appeared several times.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header `{0}` appears more than once")]
pub struct DuplicateHeader(pub String);

/// Request headers as (lower-case name, value) pairs, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    /// Wraps header pairs; names are lower-cased (Envoy already delivers them lower-case).
    pub fn new(mut entries: Vec<(String, String)>) -> Headers {
        for (name, _) in &mut entries {
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                name.make_ascii_lowercase();
            }
        }
        Headers { entries }
    }

    /// Builds headers from `Name: value` strings as a user would type them.
    ///
    /// # Errors
    /// The first line without a colon.
    pub fn parse_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Headers, String> {
        let mut entries = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("header `{line}` has no `:` between name and value"))?;
            entries.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        Ok(Headers::new(entries))
    }

    /// The value of a header that must not repeat; `Ok(None)` when absent.
    ///
    /// # Errors
    /// [`DuplicateHeader`] when the name appears more than once.
    pub fn unique(&self, name: &str) -> Result<Option<&str>, DuplicateHeader> {
        let mut found = None;
        for (n, v) in &self.entries {
            if n == name {
                if found.is_some() {
                    return Err(DuplicateHeader(name.to_owned()));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found)
    }

    /// The first value of a header, for headers where repeats are harmless.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_refuses_repeats_and_first_does_not() {
        let h = Headers::new(vec![
            ("X-Sig".into(), "a".into()),
            ("x-sig".into(), "b".into()),
            ("x-one".into(), "1".into()),
        ]);
        assert_eq!(h.unique("x-sig"), Err(DuplicateHeader("x-sig".into())));
        assert_eq!(h.first("x-sig"), Some("a"));
        assert_eq!(h.unique("x-one"), Ok(Some("1")));
        assert_eq!(h.unique("x-none"), Ok(None));
        assert_eq!(h.all("x-sig").collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn parse_lines_reports_the_bad_line() {
        let h = Headers::parse_lines(["Webhook-Id: msg_1", "A:b:c"]).unwrap();
        assert_eq!(h.unique("webhook-id"), Ok(Some("msg_1")));
        assert_eq!(h.unique("a"), Ok(Some("b:c")));
        assert!(Headers::parse_lines(["nocolon"])
            .unwrap_err()
            .contains("nocolon"));
    }
}
