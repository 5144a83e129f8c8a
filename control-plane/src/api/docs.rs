//! `/openapi.json` and a readable `/docs` page rendered from it on the server (no scripts, no
//! external assets: it works offline and inside clusters without egress).

use super::AppState;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use utoipa::openapi::path::{Operation, PathItem};

pub(super) fn routes(doc: Arc<utoipa::openapi::OpenApi>) -> Router<AppState> {
    let json = Arc::new(doc.to_pretty_json().unwrap_or_default());
    let html = Arc::new(render(&doc));
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let json = json.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        (*json).clone(),
                    )
                }
            }),
        )
        .route(
            "/docs",
            get(move || {
                let html = html.clone();
                async move { Html((*html).clone()) }
            }),
        )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn operations(item: &PathItem) -> Vec<(&'static str, &Operation)> {
    [
        ("GET", &item.get),
        ("POST", &item.post),
        ("PUT", &item.put),
        ("PATCH", &item.patch),
        ("DELETE", &item.delete),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_ref().map(|o| (m, o)))
    .collect()
}

fn render(doc: &utoipa::openapi::OpenApi) -> String {
    let mut out = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>hookmesh API</title><style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}code,pre{background:#f4f4f4;padding:.1rem .3rem}h2{border-bottom:1px solid #ddd;margin-top:2rem}.m{display:inline-block;min-width:4rem;font-weight:bold}</style></head><body>");
    out.push_str(&format!(
        "<h1>{}</h1><p>{}</p>",
        escape(&doc.info.title),
        escape(doc.info.description.as_deref().unwrap_or(""))
    ));
    out.push_str("<p>Authenticate with <code>Authorization: Bearer &lt;API key&gt;</code>. The machine-readable document is <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3.1).</p>");
    for (path, item) in &doc.paths.paths {
        for (method, op) in operations(item) {
            out.push_str(&format!(
                "<h2><span class=\"m\">{method}</span> <code>{}</code></h2>",
                escape(path)
            ));
            if let Some(s) = &op.summary {
                out.push_str(&format!("<p><b>{}</b></p>", escape(s)));
            }
            if let Some(d) = &op.description {
                out.push_str(&format!("<p>{}</p>", escape(d)));
            }
            if let Some(params) = &op.parameters {
                out.push_str("<ul>");
                for p in params {
                    out.push_str(&format!(
                        "<li><code>{}</code> — {}</li>",
                        escape(&p.name),
                        escape(p.description.as_deref().unwrap_or(""))
                    ));
                }
                out.push_str("</ul>");
            }
            let statuses: Vec<String> = op.responses.responses.keys().map(|s| escape(s)).collect();
            out.push_str(&format!("<p>Responses: {}</p>", statuses.join(", ")));
        }
    }
    out.push_str("</body></html>");
    out
}
