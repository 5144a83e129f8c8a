//! The committed definitions, the samples and the schemas' structure, checked against the types.

use super::*;
use kube::ResourceExt;
use serde_json::Value;
use std::path::PathBuf;

fn k8s_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../k8s")
}

fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("a schema");
    serde_json::to_value(schema).expect("schema as JSON")
}

#[test]
fn committed_crds_match_the_types() {
    for crd in crds() {
        let path = k8s_dir().join(format!("crds/{}.yaml", crd.name_any()));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == crd_yaml(&crd).unwrap(),
            "{} is out of date: run `hookmesh crds --out-dir k8s/crds` (or `make crds`)",
            path.display()
        );
    }
}

/// Kubernetes refuses a CRD whose schema is not structural: every node typed (or explicitly
/// left open), no unions or references.
#[test]
fn schemas_are_structural() {
    fn walk(node: &Value, path: &str, problems: &mut Vec<String>) {
        let Some(obj) = node.as_object() else { return };
        for keyword in ["oneOf", "anyOf", "allOf", "not", "$ref", "const"] {
            if obj.contains_key(keyword) {
                problems.push(format!("{path}: {keyword}"));
            }
        }
        let open = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if !obj.contains_key("type") && !open {
            problems.push(format!("{path}: no type"));
        }
        if obj.get("type") == Some(&Value::from("array")) && !obj.contains_key("items") {
            problems.push(format!("{path}: an array without items"));
        }
        if let Some(Value::Object(props)) = obj.get("properties") {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), problems);
            }
        }
        if let Some(items) = obj.get("items") {
            walk(items, &format!("{path}[]"), problems);
        }
        if let Some(v @ Value::Object(_)) = obj.get("additionalProperties") {
            walk(v, &format!("{path}{{}}"), problems);
        }
    }
    let mut problems = Vec::new();
    for crd in crds() {
        walk(&schema_of(&crd), &crd.name_any(), &mut problems);
    }
    assert!(problems.is_empty(), "not structural: {problems:#?}");
}

fn crd_for(kind: &str) -> CustomResourceDefinition {
    crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for kind {kind}"))
}

/// What is wrong with `object` by the CRD's schema and its CEL rules, as the API server would
/// say it.
fn problems(object: &Value) -> Vec<String> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let schema = schema_of(&crd_for(kind));
    let mut out: Vec<String> = Vec::new();
    let validator = jsonschema::draft4::new(&schema).expect("the schema compiles");
    out.extend(
        validator
            .iter_errors(object)
            .map(|e| format!("{}: {e}", e.instance_path)),
    );
    if let Err(errors) =
        kube::core::cel::Validator::new().validate(&cel_compatible(schema), object, None)
    {
        out.extend(
            errors
                .as_slice()
                .iter()
                .map(|e| format!("{}: {}", e.field_path, e.message)),
        );
    }
    out
}

/// kube-cel 0.8 escapes every `_` in a property name to `__`, where the API server (and the
/// Kubernetes documentation) escapes only `__`: rules naming snake_case fields, correct for the
/// API server, find nothing there. This writes the rules the way kube-cel looks the fields up.
fn cel_compatible(mut schema: Value) -> Value {
    fn rewrite(rule: &str) -> String {
        let mut out = String::new();
        let mut after_dot = false;
        for c in rule.chars() {
            out.push(c);
            if after_dot && c == '_' {
                out.push('_');
            }
            if c == '.' {
                after_dot = true;
            } else if !(c.is_ascii_alphanumeric() || c == '_') {
                after_dot = false;
            }
        }
        out
    }
    fn walk(node: &mut Value) {
        match node {
            Value::Object(map) => {
                if let Some(Value::Array(rules)) = map.get_mut("x-kubernetes-validations") {
                    for r in rules {
                        if let Some(rule) = r["rule"].as_str().map(rewrite) {
                            r["rule"] = rule.into();
                        }
                    }
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut schema);
    schema
}

fn samples() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let dir = k8s_dir().join("samples");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("k8s/samples")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for doc in docs {
            out.push((path.display().to_string(), doc));
        }
    }
    out
}

#[test]
fn every_sample_is_valid() {
    let samples = samples();
    let kinds: std::collections::BTreeSet<&str> = samples
        .iter()
        .filter_map(|(_, s)| s["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["EventType", "WebhookEndpoint", "WebhookSource"],
        "a sample of every kind"
    );
    for (path, sample) in samples {
        assert_eq!(sample["apiVersion"], "hookmesh.dev/v1alpha1", "{path}");
        let p = problems(&sample);
        assert!(p.is_empty(), "{path}: {p:#?}");
        // The controller reads them with these types (unknown fields refused).
        let typed = match sample["kind"].as_str().unwrap() {
            "WebhookSource" => {
                serde_json::from_value::<crd::WebhookSource>(sample.clone()).map(|_| ())
            }
            "WebhookEndpoint" => {
                serde_json::from_value::<crd::WebhookEndpoint>(sample.clone()).map(|_| ())
            }
            _ => serde_json::from_value::<crd::EventType>(sample.clone()).map(|_| ()),
        };
        assert!(typed.is_ok(), "{path}: {typed:?}");
    }
}

fn sample(name: &str) -> Value {
    samples()
        .into_iter()
        .map(|(_, s)| s)
        .find(|s| s["metadata"]["name"] == name)
        .unwrap()
}

/// The schemas refuse what the API server must refuse: these would be accepted by a schema
/// that checked nothing.
#[test]
fn invalid_resources_are_refused_with_the_field() {
    let refused = |mut object: Value, change: &dyn Fn(&mut Value), expect: &str| {
        change(&mut object);
        let p = problems(&object);
        assert!(
            p.iter().any(|m| m.contains(expect)),
            "expected a problem mentioning {expect:?}, got {p:#?}"
        );
    };
    let source = sample("stripe");
    refused(
        source.clone(),
        &|s| {
            s["spec"]["source"]["verify"]["secrets"][0] =
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()
        },
        "does not match",
    );
    refused(
        source.clone(),
        &|s| s["spec"]["source"]["verify"]["scheme"] = "md5".into(),
        "md5",
    );
    refused(
        source.clone(),
        &|s| s["spec"]["ingest"] = serde_json::json!({"routes": []}),
        "ingest settings need source.mode: hub",
    );
    refused(
        source,
        &|s| s["spec"]["source"]["auth"] = serde_json::json!({"type": "basic"}),
        "basic needs users",
    );
    let endpoint = sample("ci-runner");
    refused(
        endpoint.clone(),
        &|e| e["spec"]["url"] = "ftp://x".into(),
        "does not match",
    );
    refused(
        endpoint.clone(),
        &|e| e["spec"]["timeout_secs"] = 301.into(),
        "301",
    );
    refused(
        endpoint.clone(),
        &|e| e["spec"]["method"] = "TRACE".into(),
        "TRACE",
    );
    refused(
        endpoint.clone(),
        &|e| e["spec"]["retry_policy"] = serde_json::json!({"type": "schedule"}),
        "schedule needs delays_secs",
    );
    refused(
        endpoint,
        &|e| {
            e["spec"]["ordered"] = true.into();
            e["spec"]["batch"] = serde_json::json!({"max_events": 10, "max_wait_ms": 100});
        },
        "ordered",
    );
    refused(
        sample("github-push"),
        &|t| t["spec"]["name"] = "bad name".into(),
        "does not match",
    );
}
