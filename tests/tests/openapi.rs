//! The OpenAPI documents central and the edge serve match the routes they serve: every
//! documented operation answers (no 404/405 from the router), no other method or deeper path is
//! served, every route is registered through `routes!` (so it cannot miss the document), and
//! `/docs` renders the document.

use aero_tests::{TestCentral, TestEdge, expect_status};
use reqwest::{Client, Method};
use serde_json::{Value, json};
use std::path::Path;
use uuid::Uuid;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// A documented path with each `{parameter}` filled with a fresh UUID.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closing brace") + start;
        out.push_str(&Uuid::new_v4().to_string());
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Whether `path` is an instance of the documented `template`.
fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
}

async fn send(client: &Client, base: &str, method: &str, path: &str) -> (u16, String) {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
    let mut request = client.request(method.clone(), format!("{base}{path}"));
    if method != Method::GET && method != Method::DELETE {
        request = request.json(&json!({}));
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Probes the service at `base` against its own document and returns the document.
async fn assert_document_matches_routes(base: &str) -> Value {
    let client = Client::new();
    let response = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("openapi.json");
    let doc = expect_status(response, 200).await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() > 5, "{doc}");
    let mut failures = Vec::new();
    for (path, item) in paths {
        let url = concrete(path);
        for method in METHODS {
            let documented = item.get(method).is_some();
            let (status, body) = send(&client, base, method, &url).await;
            if documented && (status == 404 || status == 405) {
                failures.push(format!(
                    "{method} {path} is documented but not served: {status} {body}"
                ));
            }
            if !documented && status != 405 {
                failures.push(format!(
                    "{method} {path} is served ({status}) but not documented"
                ));
            }
        }
        let deeper = format!("{url}/undocumented");
        if !paths.keys().any(|template| matches(template, &deeper)) {
            let (status, _) = send(&client, base, "get", &deeper).await;
            if status != 404 {
                failures.push(format!("GET {deeper} answered {status}, not 404"));
            }
        }
        for (method, operation) in item.as_object().expect("path item") {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let responses = operation["responses"].as_object().expect("responses");
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let problem = &response["content"]["application/problem+json"];
                    let described = problem.is_object()
                        || (path.ends_with("healthz") || path.ends_with("readyz"));
                    if !described {
                        failures.push(format!("{method} {path}: {status} is not problem+json"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    doc
}

async fn assert_docs_page(base: &str) {
    let response = Client::new()
        .get(format!("{base}/docs"))
        .send()
        .await
        .expect("docs");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    assert!(page.contains("fetch(\"openapi.json\")"), "{page}");
    assert!(
        !page.contains("https://"),
        "the page loads nothing from elsewhere"
    );
}

/// Security and schemas: operations that need credentials say which, public ones say none.
fn assert_security(doc: &Value, secured: &[(&str, &str, &[&str])], public: &[(&str, &str)]) {
    for (path, method, schemes) in secured {
        let security = doc["paths"][path][method]["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} has no security"));
        let names: Vec<&str> = security
            .iter()
            .flat_map(|s| s.as_object().unwrap().keys().map(String::as_str))
            .collect();
        assert_eq!(&names, schemes, "{method} {path}");
        assert!(
            doc["paths"][path][method]["responses"]["401"].is_object(),
            "{method} {path} documents 401"
        );
    }
    for (path, method) in public {
        assert!(
            doc["paths"][path][method]["security"].is_null(),
            "{method} {path} is public"
        );
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["apiKey"]["in"], "header", "{schemes}");
    assert!(
        schemes["apiKey"]["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case("X-Api-Key")),
        "{schemes}"
    );
    let problem = &doc["components"]["schemas"]["Problem"];
    assert!(problem["properties"]["type"].is_object(), "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn central_serves_exactly_the_documented_operations() {
    let central = TestCentral::start().await;
    let doc = assert_document_matches_routes(&central.url("")).await;
    assert_docs_page(&central.url("")).await;
    assert_security(
        &doc,
        &[
            ("/v1/sites", "post", &["bearer"]),
            ("/v1/sync/push", "post", &["apiKey"]),
            ("/v1/products", "get", &["bearer", "apiKey"]),
        ],
        &[
            ("/v1/auth/login", "post"),
            ("/v1/edge/enroll", "post"),
            ("/healthz", "get"),
            ("/openapi.json", "get"),
        ],
    );
    let create_site = &doc["paths"]["/v1/sites"]["post"];
    assert!(create_site["requestBody"].is_object(), "{create_site}");
    assert!(
        create_site["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .is_some_and(|r| r.ends_with("/SiteRecord")),
        "{create_site}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edge_serves_exactly_the_documented_operations() {
    let central = TestCentral::start().await;
    let owner = central.owner_token().await;
    let site = central.create_site(&owner, "Docs").await;
    let token = central.enrollment_token(&owner, site).await;
    let edge = TestEdge::start(&central, &token).await;
    let doc = assert_document_matches_routes(&edge.url("")).await;
    assert_docs_page(&edge.url("")).await;
    assert_security(
        &doc,
        &[
            ("/v1/orders", "post", &["bearer", "apiKey"]),
            ("/v1/dead-letters", "get", &["bearer"]),
        ],
        &[("/v1/auth/login", "post"), ("/readyz", "get")],
    );
    let lookup = &doc["paths"]["/v1/customers"]["get"]["parameters"];
    assert!(
        lookup
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["in"] == "query")),
        "{lookup}"
    );
}

/// The probes above only find routes under documented paths; this finds the rest: a route
/// registered any other way than `OpenApiRouter::routes(routes!(..))` could be served without
/// being documented.
#[test]
fn every_route_is_registered_with_its_operation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    for crate_dir in ["central/src", "edge/src", "shared/src"] {
        visit(&root.join(crate_dir), &mut |file, text| {
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                let plain_route = [
                    ".route(",
                    ".route_service(",
                    ".nest(",
                    ".nest_service(",
                    ".fallback(",
                ]
                .iter()
                .any(|call| code.contains(call));
                if plain_route && !in_test_module(text, n) && !console_page_route(file, text, n) {
                    offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        });
    }
    assert!(
        offenders.is_empty(),
        "routes registered outside routes!():\n{}",
        offenders.join("\n")
    );
}

/// The HQ console's HTML pages are not JSON API operations, so they are not in the OpenAPI
/// document: its one router (`central/src/console/mod.rs`) may register plain routes, and only
/// under `/console`.
fn console_page_route(file: &Path, text: &str, line: usize) -> bool {
    // rustfmt may put the path on the line after `.route(`.
    let call: String = text.lines().skip(line).take(2).map(str::trim).collect();
    file.ends_with("central/src/console/mod.rs") && call.starts_with(".route(\"/console")
}

fn visit(dir: &Path, check: &mut dyn FnMut(&Path, &str)) {
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            visit(&path, check);
        } else if path.extension().is_some_and(|e| e == "rs") {
            check(&path, &std::fs::read_to_string(&path).expect("source"));
        }
    }
}

/// Unit tests build throwaway routers of their own.
fn in_test_module(text: &str, line: usize) -> bool {
    text.lines()
        .take(line)
        .any(|l| l.trim_start().starts_with("#[cfg(test)]"))
}
