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
    problems_of_update(object, None)
}

/// As [`problems`], for an update of `old` (transition rules compare with it).
fn problems_of_update(object: &Value, old: Option<&Value>) -> Vec<String> {
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
        kube::core::cel::Validator::new().validate(&cel_compatible(schema), object, old)
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

/// Every object of a kustomization (resources, recursively, and generated ConfigMaps and
/// Secrets), with the namespace it sets.
fn kustomization(dir: &std::path::Path) -> (Option<String>, Vec<Value>) {
    let file = dir.join("kustomization.yaml");
    let k: Value = serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut objects = Vec::new();
    for r in k["resources"].as_array().into_iter().flatten() {
        let path = dir.join(r.as_str().unwrap());
        if path.is_dir() {
            objects.extend(kustomization(&path).1);
        } else {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{} lists {}: {e}", file.display(), path.display()));
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            objects.extend(docs.into_iter().filter(|d| !d.is_null()));
        }
    }
    for (generator, kind) in [
        ("configMapGenerator", "ConfigMap"),
        ("secretGenerator", "Secret"),
    ] {
        for g in k[generator].as_array().into_iter().flatten() {
            for f in g["files"].as_array().into_iter().flatten() {
                let path = dir.join(f.as_str().unwrap());
                assert!(
                    path.is_file(),
                    "{} generates from missing {}",
                    file.display(),
                    path.display()
                );
            }
            objects.push(json_object(kind, g["name"].as_str().unwrap()));
        }
    }
    (k["namespace"].as_str().map(str::to_owned), objects)
}

fn json_object(kind: &str, name: &str) -> Value {
    serde_json::json!({"kind": kind, "metadata": {"name": name}})
}

/// What a manifest refers to by name must be in the same kustomization: service accounts,
/// ConfigMaps, Secrets (and their keys), roles, the pods a Service selects and their ports,
/// the namespace, and the custom resources the RBAC rules name.
fn check_references(dir: &str) -> Vec<Value> {
    let (namespace, objects) = kustomization(&k8s_dir().join(dir));
    let has = |kind: &str, name: &str| {
        objects
            .iter()
            .any(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    };
    let mut missing = Vec::new();
    if let Some(ns) = &namespace {
        if !has("Namespace", ns) {
            missing.push(format!("Namespace {ns}"));
        }
    }
    let pods: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .map(|d| &d["spec"]["template"])
        .collect();
    for d in objects.iter().filter(|o| o["kind"] == "Deployment") {
        let name = d["metadata"]["name"].as_str().unwrap();
        let pod = &d["spec"]["template"];
        for (k, v) in d["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(
                &pod["metadata"]["labels"][k], v,
                "Deployment {name} selects its own pods"
            );
        }
        if let Some(sa) = pod["spec"]["serviceAccountName"].as_str() {
            if !has("ServiceAccount", sa) {
                missing.push(format!("ServiceAccount {sa} (Deployment {name})"));
            }
        }
        for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                if !has("ConfigMap", cm) {
                    missing.push(format!("ConfigMap {cm} (Deployment {name})"));
                }
            }
            if let Some(s) = v["secret"]["secretName"].as_str() {
                if !has("Secret", s) {
                    missing.push(format!("Secret {s} (Deployment {name})"));
                }
            }
        }
        let containers = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .chain(pod["spec"]["initContainers"].as_array())
            .flatten();
        for c in containers {
            let ports: Vec<&str> = c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                let port = &c[probe]["httpGet"]["port"];
                let port = if port.is_null() {
                    &c[probe]["tcpSocket"]["port"]
                } else {
                    port
                };
                if let Some(p) = port.as_str() {
                    assert!(
                        ports.contains(&p),
                        "{name}/{}: {probe} names port {p}",
                        c["name"]
                    );
                }
            }
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let volume = m["name"].as_str().unwrap();
                assert!(
                    pod["spec"]["volumes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|v| v["name"] == volume),
                    "{name}/{}: mounts undeclared volume {volume}",
                    c["name"]
                );
            }
            for e in c["env"].as_array().into_iter().flatten() {
                let r = &e["valueFrom"]["secretKeyRef"];
                if let Some(s) = r["name"].as_str() {
                    let key = r["key"].as_str().unwrap();
                    let secret = objects
                        .iter()
                        .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == s);
                    match secret {
                        None => missing.push(format!("Secret {s} (Deployment {name})")),
                        Some(sec) => assert!(
                            !sec["stringData"][key].is_null() || !sec["data"][key].is_null(),
                            "Secret {s} has no key {key} (Deployment {name})"
                        ),
                    }
                }
            }
        }
    }
    for s in objects.iter().filter(|o| o["kind"] == "Service") {
        let name = s["metadata"]["name"].as_str().unwrap();
        let selector = s["spec"]["selector"].as_object().unwrap();
        let pod = pods
            .iter()
            .find(|p| {
                selector
                    .iter()
                    .all(|(k, v)| &p["metadata"]["labels"][k] == v)
            })
            .unwrap_or_else(|| panic!("Service {name} selects no pod of the kustomization"));
        let ports: Vec<&Value> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .collect();
        for p in s["spec"]["ports"].as_array().unwrap() {
            let target = &p["targetPort"];
            assert!(
                ports
                    .iter()
                    .any(|cp| cp["name"] == *target || cp["containerPort"] == *target),
                "Service {name} targets port {target} that its pods do not have"
            );
        }
    }
    for b in objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
    {
        let role = &b["roleRef"];
        if !has(
            role["kind"].as_str().unwrap(),
            role["name"].as_str().unwrap(),
        ) {
            missing.push(format!("{} {}", role["kind"], role["name"]));
        }
        for s in b["subjects"].as_array().unwrap() {
            if !has(s["kind"].as_str().unwrap(), s["name"].as_str().unwrap()) {
                missing.push(format!("{} {}", s["kind"], s["name"]));
            }
            assert_eq!(
                s["namespace"].as_str(),
                namespace.as_deref(),
                "the subject's namespace"
            );
        }
    }
    for role in objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        for rule in role["rules"].as_array().unwrap() {
            if rule["apiGroups"] != serde_json::json!(["hookmesh.dev"]) {
                continue;
            }
            for r in rule["resources"].as_array().unwrap() {
                let plural = r.as_str().unwrap().split('/').next().unwrap();
                if !has(
                    "CustomResourceDefinition",
                    &format!("{plural}.hookmesh.dev"),
                ) {
                    missing.push(format!("CustomResourceDefinition {plural}.hookmesh.dev"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "k8s/{dir} refers to objects it does not define: {missing:#?}"
    );
    objects
}

#[test]
fn the_deployment_manifests_are_complete() {
    let objects = check_references("deploy");
    let kinds: std::collections::BTreeSet<&str> =
        objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Secret",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(kind), "k8s/deploy has no {kind}");
    }
    // Every CRD is installed with it.
    for crd in crds() {
        assert!(objects
            .iter()
            .any(|o| o["kind"] == "CustomResourceDefinition"
                && o["metadata"]["name"] == crd.name_any().as_str()));
    }
    // The controller never creates or deletes Kubernetes objects.
    for role in objects.iter().filter(|o| o["kind"] == "ClusterRole") {
        for rule in role["rules"].as_array().unwrap() {
            let verbs = rule["verbs"].as_array().unwrap();
            assert!(
                !verbs.contains(&"delete".into()) && !verbs.contains(&"*".into()),
                "{rule}"
            );
            if rule["apiGroups"] != serde_json::json!(["events.k8s.io"]) {
                assert!(!verbs.contains(&"create".into()), "{rule}");
            }
        }
    }
}

#[test]
fn the_sample_sidecar_is_the_envoy_template_and_loads_the_module_the_control_plane_names() {
    let objects = check_references("deploy/sidecar");
    let template = std::fs::read_to_string(k8s_dir().join("../envoy/sidecar.yaml.in")).unwrap();
    let mut rendered = template;
    for (name, value) in [
        ("NODE_ID", "sidecar"),
        ("NODE_CLUSTER", "webhook-app"),
        ("NODE_TENANT", ""),
        ("ADMIN_PORT", "9901"),
        ("LISTEN_ADDRESS", "0.0.0.0"),
        ("LISTEN_PORT", "10000"),
        ("TRUSTED_HOPS", "0"),
        ("APP_PORT", "8080"),
        ("INGEST_CLUSTER_TYPE", "STRICT_DNS"),
        (
            "INGEST_ADDRESS",
            "{socket_address: {address: hookmesh.hookmesh-system.svc.cluster.local, port_value: 8081}}",
        ),
        ("XDS_HOST", "hookmesh.hookmesh-system.svc.cluster.local"),
        ("XDS_PORT", "18000"),
    ] {
        rendered = rendered.replace(&format!("@{name}@"), value);
    }
    let committed = std::fs::read_to_string(k8s_dir().join("deploy/sidecar/envoy.yaml")).unwrap();
    assert!(
        committed == rendered,
        "k8s/deploy/sidecar/envoy.yaml differs from envoy/sidecar.yaml.in rendered (scripts/render-envoy.py)"
    );
    // The control plane tells Envoys to load the module from where the init container puts it.
    let (_, control_plane) = kustomization(&k8s_dir().join("deploy"));
    let serve = control_plane
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    let args = serve["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    let module = args
        .iter()
        .find_map(|a| a.as_str().and_then(|a| a.strip_prefix("--wasm-module=")))
        .expect("--wasm-module");
    let pod =
        &objects.iter().find(|o| o["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"];
    let copy = pod["initContainers"][0]["command"].as_array().unwrap();
    let envoy = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "envoy")
        .unwrap();
    let mounted = envoy["volumeMounts"].as_array().unwrap().iter().any(|m| {
        m["name"] == "filter-module" && module.starts_with(m["mountPath"].as_str().unwrap())
    });
    assert!(mounted, "Envoy does not mount {module}");
    assert!(
        copy.iter()
            .any(|a| module.starts_with(a.as_str().unwrap().trim_end_matches('/'))),
        "{copy:?}"
    );
    // The xDS and ingest addresses are the control plane's Service.
    let service = control_plane
        .iter()
        .find(|o| o["kind"] == "Service")
        .unwrap();
    assert!(rendered.contains(&format!(
        "{}.hookmesh-system.svc",
        service["metadata"]["name"].as_str().unwrap()
    )));
}

/// What identifies a resource in the control plane cannot change under it.
#[test]
fn tenants_and_event_type_versions_are_immutable() {
    let old = sample("github-push");
    let mut new = old.clone();
    new["spec"]["description"] = "a push, described better".into();
    assert!(problems_of_update(&new, Some(&old)).is_empty());
    new["spec"]["version"] = 2.into();
    let p = problems_of_update(&new, Some(&old));
    assert!(p.iter().any(|m| m.contains("immutable")), "{p:#?}");
    let mut old = sample("stripe");
    old["spec"]["tenant"] = "billing".into();
    let mut moved = old.clone();
    moved["spec"]["tenant"] = "other".into();
    let p = problems_of_update(&moved, Some(&old));
    assert!(
        p.iter().any(|m| m.contains("tenant is immutable")),
        "{p:#?}"
    );
}
