//! Request bodies into one JSON document, whatever the provider sent: JSON, forms, multipart
//! forms and XML. The document is what validation, transformation and routing see.

use base64::Engine as _;
use serde_json::{Map, Value};

/// Parses `body` by its `content-type`.
///
/// - JSON (`application/json`, `*/*+json`, or no type and a body that starts like JSON).
/// - `application/x-www-form-urlencoded`: an object; a repeated field becomes an array.
/// - `multipart/form-data`: an object of fields; a file part becomes
///   `{filename, content_type, size, text | base64}`.
/// - XML (`application/xml`, `text/xml`, `*/*+xml`): `{root: {...}}`, attributes as `@name`,
///   text beside children as `#text`, repeated children as arrays.
/// - Anything else: the body as a string (UTF-8), or `{"base64": …}`.
///
/// # Errors
/// A body that is not what its content type says.
pub async fn document(content_type: Option<&str>, body: &[u8]) -> Result<Value, String> {
    let ct = content_type.unwrap_or("").trim();
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let sniff_json = mime.is_empty()
        && body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{' || *b == b'[');
    if mime == "application/json" || mime.ends_with("+json") || sniff_json {
        return serde_json::from_slice(body)
            .map_err(|e| format!("the body is not valid JSON: {e}"));
    }
    if mime == "application/x-www-form-urlencoded" {
        return Ok(form(body));
    }
    if mime == "multipart/form-data" {
        let boundary = multer::parse_boundary(ct)
            .map_err(|e| format!("multipart/form-data without a usable boundary: {e}"))?;
        return multipart(body, boundary).await;
    }
    if mime == "application/xml" || mime == "text/xml" || mime.ends_with("+xml") {
        return xml(body);
    }
    Ok(raw(body))
}

fn raw(body: &[u8]) -> Value {
    match std::str::from_utf8(body) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => {
            serde_json::json!({"base64": base64::engine::general_purpose::STANDARD.encode(body)})
        }
    }
}

fn insert_repeated(map: &mut Map<String, Value>, key: String, value: Value) {
    match map.get_mut(&key) {
        None => {
            map.insert(key, value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
}

fn form(body: &[u8]) -> Value {
    let mut map = Map::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        insert_repeated(&mut map, k.into_owned(), Value::String(v.into_owned()));
    }
    Value::Object(map)
}

async fn multipart(body: &[u8], boundary: String) -> Result<Value, String> {
    let stream = tokio_stream::once(Ok::<_, std::convert::Infallible>(
        bytes::Bytes::copy_from_slice(body),
    ));
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut map = Map::new();
    let bad = |e: multer::Error| format!("malformed multipart/form-data: {e}");
    while let Some(field) = parts.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_owned();
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(ToString::to_string);
        let data = field.bytes().await.map_err(bad)?;
        let value = match filename {
            None => match std::str::from_utf8(&data) {
                Ok(s) => Value::String(s.to_owned()),
                Err(_) => raw(&data),
            },
            Some(filename) => {
                let mut file = serde_json::json!({
                    "filename": filename,
                    "content_type": content_type,
                    "size": data.len(),
                });
                match std::str::from_utf8(&data) {
                    Ok(s) => file["text"] = Value::String(s.to_owned()),
                    Err(_) => {
                        file["base64"] =
                            Value::String(base64::engine::general_purpose::STANDARD.encode(&data))
                    }
                }
                file
            }
        };
        insert_repeated(&mut map, name, value);
    }
    Ok(Value::Object(map))
}

/// An element being built: its name, attributes and children so far, and its text.
struct Element {
    name: String,
    map: Map<String, Value>,
    text: String,
}

impl Element {
    fn finish(self) -> Value {
        let text = self.text.trim();
        if self.map.is_empty() {
            return Value::String(text.to_owned());
        }
        let mut map = self.map;
        if !text.is_empty() {
            map.insert("#text".into(), Value::String(text.to_owned()));
        }
        Value::Object(map)
    }
}

fn xml(body: &[u8]) -> Result<Value, String> {
    use quick_xml::events::Event;
    let bad = |e: &dyn std::fmt::Display| format!("the body is not well-formed XML: {e}");
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    let mut buf = Vec::new();
    let open = |e: &quick_xml::events::BytesStart| -> Result<Element, String> {
        let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
        let mut map = Map::new();
        for a in e.attributes() {
            let a = a.map_err(|e| bad(&e))?;
            let value = a.unescape_value().map_err(|e| bad(&e))?;
            map.insert(
                format!("@{}", String::from_utf8_lossy(a.key.as_ref())),
                Value::String(value.into_owned()),
            );
        }
        Ok(Element {
            name,
            map,
            text: String::new(),
        })
    };
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| bad(&e))?;
        let closed = match event {
            Event::Start(e) => {
                if stack.len() >= 64 {
                    return Err("the XML nests deeper than 64 elements".into());
                }
                stack.push(open(&e)?);
                None
            }
            Event::Empty(e) => Some(open(&e)?),
            Event::End(_) => stack.pop(),
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.decode().map_err(|e| bad(&e))?);
                }
                None
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
                None
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    let name = String::from_utf8_lossy(&r).into_owned();
                    let resolved = match name.as_str() {
                        "amp" => "&".to_owned(),
                        "lt" => "<".to_owned(),
                        "gt" => ">".to_owned(),
                        "quot" => "\"".to_owned(),
                        "apos" => "'".to_owned(),
                        _ => match r.resolve_char_ref() {
                            Ok(Some(c)) => c.to_string(),
                            _ => return Err(bad(&format!("unknown entity `&{name};`"))),
                        },
                    };
                    top.text.push_str(&resolved);
                }
                None
            }
            Event::Eof => break,
            _ => None,
        };
        if let Some(el) = closed {
            let name = el.name.clone();
            let value = el.finish();
            match stack.last_mut() {
                Some(parent) => insert_repeated(&mut parent.map, name, value),
                None if root.is_none() => root = Some((name, value)),
                None => return Err(bad(&"more than one root element")),
            }
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(bad(&"unclosed elements at the end"));
    }
    let (name, value) = root.ok_or_else(|| bad(&"no root element"))?;
    let mut map = Map::new();
    map.insert(name, value);
    Ok(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::document;
    use serde_json::json;

    #[tokio::test]
    async fn json_and_sniffed_json() {
        let d = document(Some("application/json; charset=utf-8"), br#"{"a":1}"#).await;
        assert_eq!(d, Ok(json!({"a": 1})));
        assert_eq!(document(None, b" [1,2]").await, Ok(json!([1, 2])));
        let e = document(Some("application/json"), b"{nope")
            .await
            .unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
    }

    #[tokio::test]
    async fn forms_repeat_into_arrays() {
        let d = document(
            Some("application/x-www-form-urlencoded"),
            b"payload=%7B%22x%22%3A1%7D&tag=a&tag=b&tag=c",
        )
        .await;
        assert_eq!(
            d,
            Ok(json!({"payload": "{\"x\":1}", "tag": ["a", "b", "c"]}))
        );
    }

    #[tokio::test]
    async fn multipart_fields_and_files() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"event\"\r\n\r\norder.created\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
                    --XyZ--\r\n";
        let d = document(Some("multipart/form-data; boundary=XyZ"), body.as_bytes()).await;
        assert_eq!(
            d,
            Ok(
                json!({"event": "order.created", "doc": {"filename": "a.txt", "content_type": "text/plain", "size": 5, "text": "hello"}})
            )
        );
        let e = document(Some("multipart/form-data"), b"x")
            .await
            .unwrap_err();
        assert!(e.contains("boundary"), "{e}");
    }

    #[tokio::test]
    async fn xml_elements_attributes_and_repeats() {
        let body = br#"<?xml version="1.0"?><order id="7"><item>a &amp; b</item><item>c</item><note/><total currency="EUR">12.50</total></order>"#;
        let d = document(Some("application/xml"), body).await;
        assert_eq!(
            d,
            Ok(
                json!({"order": {"@id": "7", "item": ["a & b", "c"], "note": "", "total": {"@currency": "EUR", "#text": "12.50"}}})
            )
        );
        assert!(document(Some("text/xml"), b"<a><b></a>").await.is_err());
        assert!(document(Some("text/xml"), b"<a/><b/>").await.is_err());
    }

    #[tokio::test]
    async fn other_bodies_are_strings_or_base64() {
        assert_eq!(document(Some("text/plain"), b"hi").await, Ok(json!("hi")));
        assert_eq!(
            document(Some("application/octet-stream"), &[0xff, 0x00]).await,
            Ok(json!({"base64": "/wA="}))
        );
    }
}
