//! Headers as attempt records keep them: a JSON object, secret-looking values masked.

/// Headers as a JSON object, values of secret-looking headers masked, written directly: this
/// runs for every attempt.
pub(crate) fn to_json<'a, V: AsRef<str>>(
    headers: impl Iterator<Item = (&'a str, V)>,
    mask: bool,
) -> String {
    let mut out = String::with_capacity(256);
    out.push('{');
    for (i, (name, value)) in headers.enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(&mut out, name);
        out.push(':');
        json_string(
            &mut out,
            if mask && is_secret(name) {
                "***"
            } else {
                value.as_ref()
            },
        );
    }
    out.push('}');
    out
}

/// Whether a header's value is masked in attempt records (credentials, tokens, cookies).
pub(crate) fn is_secret(name: &str) -> bool {
    let contains = |part: &str| {
        name.as_bytes()
            .windows(part.len())
            .any(|w| w.eq_ignore_ascii_case(part.as_bytes()))
    };
    [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
    ]
    .iter()
    .any(|s| name.eq_ignore_ascii_case(s))
        || ["secret", "token", "password", "api-key", "apikey"]
            .iter()
            .any(|s| contains(s))
}

/// Copies the runs between escapes whole: header values rarely need any, and this runs for
/// every header of every attempt. Only ASCII bytes are escaped, so each run ends on a char
/// boundary.
fn json_string(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escaped);
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::to_json;

    #[test]
    fn headers_become_json_with_secrets_masked() {
        let h = [
            ("Authorization", "Bearer x"),
            ("x-note", "a \"quoted\" \\ line\n"),
            ("X-Api-Key", "k"),
            ("my-token-header", "t"),
            ("X-Shop-SECRET", "s"),
            ("x-tok", "not a secret"),
        ];
        let masked: serde_json::Value =
            serde_json::from_str(&to_json(h.iter().copied(), true)).unwrap();
        assert_eq!(
            masked,
            serde_json::json!({"Authorization": "***", "x-note": "a \"quoted\" \\ line\n", "X-Api-Key": "***", "my-token-header": "***", "X-Shop-SECRET": "***", "x-tok": "not a secret"})
        );
        let plain: serde_json::Value =
            serde_json::from_str(&to_json(h.iter().copied(), false)).unwrap();
        assert_eq!(plain["Authorization"], "Bearer x");
    }

    #[test]
    fn any_text_survives_the_round_trip() {
        for value in [
            "",
            "plain",
            "caf\u{e9} \u{2713} \u{1f600}",
            "\u{0}\u{1f}\t\r\n\"\\\u{7f}",
            "\u{e9}\"\u{e9}\\\u{e9}\u{1}\u{e9}",
        ] {
            let json = to_json([("h", value)].into_iter(), false);
            let back: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(back["h"], value, "{json}");
        }
    }
}
