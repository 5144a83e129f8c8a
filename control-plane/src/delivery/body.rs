//! What a receiver gets as the request body: the event's JSON payload as it is, form-encoded,
//! converted to XML, or rendered by the endpoint's template; and, for batching endpoints, a
//! JSON array of event envelopes. The signature covers the body exactly as sent.

use serde_json::Value;

/// An endpoint's body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The payload as published (`application/json`).
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`: one field per top-level member.
    Form,
    /// `application/xml`.
    Xml,
}

impl Format {
    /// The `format` field's value; `None` for an unknown name.
    pub fn parse(name: Option<&str>) -> Option<Format> {
        match name {
            None | Some("json") => Some(Format::Json),
            Some("form") => Some(Format::Form),
            Some("xml") => Some(Format::Xml),
            Some(_) => None,
        }
    }

    /// The request's `content-type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Form => "application/x-www-form-urlencoded",
            Format::Xml => "application/xml",
        }
    }
}

/// The event a body is made from.
pub struct EventView<'a> {
    /// Event id.
    pub id: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Unix ms.
    pub created_at: i64,
    /// The JSON payload as text.
    pub payload: &'a str,
}

/// Template execution budget: enough for any reasonable reshaping, not for a runaway loop.
const TEMPLATE_FUEL: u64 = 100_000;

/// Checks a payload template; the error says what is wrong and where.
///
/// # Errors
/// A syntax error.
pub fn check_template(source: &str) -> Result<(), String> {
    environment()
        .template_from_str(source)
        .map(|_| ())
        .map_err(|e| describe(&e))
}

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    // A missing field is an error, not an empty string sent to a receiver.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env
}

fn describe(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!("{} (line {line})", e),
        None => e.to_string(),
    }
}

/// Renders a template over `context` into a JSON document (inbound transformations).
///
/// # Errors
/// The template failed, or its output is not JSON.
pub fn render_json(source: &str, context: &Value) -> Result<Value, String> {
    let out = environment()
        .render_str(source, minijinja::value::Serde(context))
        .map_err(|e| format!("the template failed: {}", describe(&e)))?;
    serde_json::from_str(&out).map_err(|e| format!("the template did not produce JSON: {e}"))
}

/// Renders the body of one event for an endpoint.
///
/// # Errors
/// The template failed, or its output is not valid JSON for a JSON endpoint.
pub fn render(format: Format, template: Option<&str>, event: &EventView) -> Result<String, String> {
    if let Some(source) = template {
        let payload: Value = serde_json::from_str(event.payload).map_err(|e| e.to_string())?;
        let context = serde_json::json!({
            "event": {
                "id": event.id,
                "type": event.event_type,
                "created_at": crate::ids::rfc3339(event.created_at),
            },
            "payload": payload,
        });
        let out = environment()
            .render_str(source, minijinja::value::Serde(&context))
            .map_err(|e| format!("the payload template failed: {}", describe(&e)))?;
        if format == Format::Json {
            serde_json::from_str::<Value>(&out)
                .map_err(|e| format!("the payload template did not produce JSON: {e}"))?;
        }
        return Ok(out);
    }
    Ok(match format {
        Format::Json => event.payload.to_owned(),
        Format::Form => form(event.payload),
        Format::Xml => xml(event),
    })
}

/// A JSON payload as `application/x-www-form-urlencoded`: one field per top-level member
/// (strings as they are, other values as JSON text); a payload that is not an object becomes
/// the single field `payload`.
pub fn form(payload: &str) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::Object(members)) => {
            for (name, value) in &members {
                match value {
                    Value::String(s) => form.append_pair(name, s),
                    other => form.append_pair(name, &other.to_string()),
                };
            }
        }
        _ => {
            form.append_pair("payload", payload);
        }
    }
    form.finish()
}

/// A JSON payload as XML: `<event id=… type=… created_at=…>`, one element per member, arrays as
/// repeated `<item>`, `null` as an empty element with `nil="true"`. Member names that are not
/// XML names become `<field name="…">`.
pub fn xml(event: &EventView) -> String {
    let mut out = String::with_capacity(event.payload.len() * 2 + 128);
    out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    out.push_str("<event id=\"");
    escape_into(&mut out, event.id);
    out.push_str("\" type=\"");
    escape_into(&mut out, event.event_type);
    out.push_str("\" created_at=\"");
    out.push_str(&crate::ids::rfc3339(event.created_at));
    out.push_str("\">");
    match serde_json::from_str::<Value>(event.payload) {
        Ok(Value::Object(members)) => {
            for (name, value) in &members {
                element(&mut out, name, value);
            }
        }
        Ok(other) => element(&mut out, "payload", &other),
        Err(_) => element(
            &mut out,
            "payload",
            &Value::String(event.payload.to_owned()),
        ),
    }
    out.push_str("</event>");
    out
}

fn element(out: &mut String, name: &str, value: &Value) {
    let (open, close) = if is_xml_name(name) {
        (format!("<{name}"), format!("</{name}>"))
    } else {
        let mut open = String::from("<field name=\"");
        escape_into(&mut open, name);
        open.push('"');
        (open, "</field>".to_owned())
    };
    out.push_str(&open);
    match value {
        Value::Null => {
            out.push_str(" nil=\"true\"/>");
            return;
        }
        _ => out.push('>'),
    }
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => escape_into(out, s),
        Value::Array(items) => {
            for item in items {
                element(out, "item", item);
            }
        }
        Value::Object(members) => {
            for (k, v) in members {
                element(out, k, v);
            }
        }
    }
    out.push_str(&close);
}

/// A conservative XML name: ASCII letters, digits, `_`, `-`, `.`; not starting with a digit,
/// `-`, `.` or the reserved `xml`.
fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.to_ascii_lowercase().starts_with("xml")
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all are dropped rather than sent invalid.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
}

/// The body of a batch: a JSON array of envelopes, oldest event first.
pub fn batch(events: &[EventView]) -> String {
    let mut out = String::from("[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let data: Value = serde_json::from_str(e.payload).unwrap_or(Value::Null);
        out.push_str(
            &serde_json::json!({
                "id": e.id,
                "type": e.event_type,
                "created_at": crate::ids::rfc3339(e.created_at),
                "data": data,
            })
            .to_string(),
        );
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: &str) -> EventView<'_> {
        EventView {
            id: "evt_1",
            event_type: "invoice.paid",
            created_at: 0,
            payload,
        }
    }

    #[test]
    fn payloads_that_are_not_objects_travel_whole_in_one_form_field() {
        assert_eq!(form("[1,2]"), "payload=%5B1%2C2%5D");
        assert_eq!(form("\"a b\""), "payload=%22a+b%22");
        assert_eq!(form(r#"{"a":null,"b":"x y"}"#), "a=null&b=x+y");
    }

    #[test]
    fn xml_escapes_text_and_names_and_keeps_structure() {
        let out = xml(&event(
            r#"{"amount":12.5,"note":"<b> & \"q\"","lines":[1,{"sku":"a"}],"gone":null,"1st":true,"bad name":"x"}"#,
        ));
        assert!(out.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><event id="evt_1" type="invoice.paid" created_at="1970-01-01T00:00:00Z">"#), "{out}");
        assert!(out.contains("<amount>12.5</amount>"));
        assert!(out.contains("<note>&lt;b&gt; &amp; &quot;q&quot;</note>"));
        assert!(out.contains("<lines><item>1</item><item><sku>a</sku></item></lines>"));
        assert!(out.contains(r#"<gone nil="true"/>"#));
        assert!(out.contains(r#"<field name="1st">true</field>"#));
        assert!(out.contains(r#"<field name="bad name">x</field>"#));
        assert!(out.ends_with("</event>"));
    }

    #[test]
    fn templates_reshape_payloads_and_fail_precisely() {
        let t = r#"{"text": {{ ("Invoice " ~ payload.id ~ " paid") | tojson }}, "kind": {{ event.type | tojson }}}"#;
        let out = render(Format::Json, Some(t), &event(r#"{"id":"in_1"}"#)).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap(),
            serde_json::json!({"text": "Invoice in_1 paid", "kind": "invoice.paid"})
        );
        let missing = render(Format::Json, Some("{{ payload.nope }}"), &event("{}")).unwrap_err();
        assert!(missing.contains("payload template failed"), "{missing}");
        let not_json = render(Format::Json, Some("hello"), &event("{}")).unwrap_err();
        assert!(not_json.contains("did not produce JSON"), "{not_json}");
        assert!(
            render(
                Format::Xml,
                Some("<a>{{ payload.id }}</a>"),
                &event(r#"{"id":"x"}"#)
            )
            .unwrap()
                == "<a>x</a>"
        );
        assert!(check_template("{% for x in %}")
            .unwrap_err()
            .contains("line 1"));
        let runaway =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        assert!(render(Format::Xml, Some(runaway), &event("{}")).is_err());
    }

    #[test]
    fn batches_are_arrays_of_envelopes() {
        let a = event(r#"{"n":1}"#);
        let b = EventView {
            id: "evt_2",
            ..event(r#"{"n":2}"#)
        };
        let v: Value = serde_json::from_str(&batch(&[a, b])).unwrap();
        assert_eq!(v[0]["id"], "evt_1");
        assert_eq!(v[1]["data"]["n"], 2);
        assert_eq!(v[1]["type"], "invoice.paid");
    }
}
