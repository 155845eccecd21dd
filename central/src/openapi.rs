//! The OpenAPI 3.1 document served at `/openapi.json`, generated from one table of operations.

use serde_json::{Map, Value, json};

/// (method, path, summary, how it authenticates, success status)
const OPERATIONS: &[(&str, &str, &str, Auth, u16)] = &[
    (
        "post",
        "/v1/auth/login",
        "Log in as HQ staff; returns a Bearer JWT",
        Auth::None,
        200,
    ),
    (
        "get",
        "/v1/sites",
        "List the sites the caller can see",
        Auth::Staff,
        200,
    ),
    (
        "post",
        "/v1/sites",
        "Create a site (name, timezone, allowed networks)",
        Auth::Staff,
        201,
    ),
    (
        "get",
        "/v1/sites/{site_id}",
        "Get one site",
        Auth::Staff,
        200,
    ),
    (
        "patch",
        "/v1/sites/{site_id}",
        "Change a site's name, timezone or allowed networks",
        Auth::Staff,
        200,
    ),
    (
        "post",
        "/v1/sites/{site_id}/enrollment-tokens",
        "Issue a one-time edge enrollment token",
        Auth::Staff,
        201,
    ),
    (
        "get",
        "/v1/sites/{site_id}/sync",
        "A venue's sync health: last push/pull, acked seq, lag",
        Auth::Staff,
        200,
    ),
    (
        "get",
        "/v1/sites/{site_id}/dead-letters",
        "Ops central refused for good from a venue, newest first, with the venue's resolution",
        Auth::Staff,
        200,
    ),
    (
        "get",
        "/v1/sites/{site_id}/devices",
        "List a site's devices",
        Auth::Staff,
        200,
    ),
    (
        "post",
        "/v1/sites/{site_id}/devices",
        "Register a device; its API key is shown once",
        Auth::Staff,
        201,
    ),
    (
        "delete",
        "/v1/devices/{id}",
        "Revoke a device's API key",
        Auth::Staff,
        204,
    ),
    ("get", "/v1/users", "List staff users", Auth::Staff, 200),
    ("post", "/v1/users", "Create a staff user", Auth::Staff, 201),
    (
        "get",
        "/v1/users/{id}",
        "Read a staff user",
        Auth::Staff,
        200,
    ),
    (
        "patch",
        "/v1/users/{id}",
        "Change a staff user's role, sites, password or disabled state; earlier tokens are refused",
        Auth::Staff,
        200,
    ),
    (
        "delete",
        "/v1/users/{id}",
        "Disable a staff user (login refused; the record stays)",
        Auth::Staff,
        204,
    ),
    ("get", "/v1/products", "List products", Auth::Any, 200),
    ("post", "/v1/products", "Create a product", Auth::Staff, 201),
    (
        "post",
        "/v1/products/{id}/retire",
        "Retire a product: no longer sold, still listed with active false",
        Auth::Staff,
        200,
    ),
    ("get", "/v1/games", "List games", Auth::Any, 200),
    ("post", "/v1/games", "Create a game", Auth::Staff, 201),
    (
        "get",
        "/v1/sites/{site_id}/plugs",
        "List a site's smart plugs",
        Auth::Staff,
        200,
    ),
    (
        "post",
        "/v1/sites/{site_id}/plugs",
        "Register a smart plug",
        Auth::Staff,
        201,
    ),
    (
        "get",
        "/v1/plugs/{id}/schedules",
        "List a plug's schedules",
        Auth::Staff,
        200,
    ),
    (
        "post",
        "/v1/plugs/{id}/schedules",
        "Add a cron schedule (site timezone) for a plug",
        Auth::Staff,
        201,
    ),
    (
        "get",
        "/v1/audit",
        "The audit log, newest first",
        Auth::Staff,
        200,
    ),
    (
        "get",
        "/v1/reports/daily",
        "A site's local day (?site_id=&date=): orders, gross sales, refunds, revenue, check-ins, new customers",
        Auth::Staff,
        200,
    ),
    (
        "get",
        "/v1/reports/sales-by-product",
        "A site's local day (?site_id=&date=): quantity and sales per product, by SKU",
        Auth::Staff,
        200,
    ),
    (
        "get",
        "/v1/reports/checkins-by-hour",
        "A site's local day (?site_id=&date=): check-ins per local hour (23 or 25 on DST days)",
        Auth::Staff,
        200,
    ),
    (
        "get",
        "/v1/reports/negative-balances",
        "Every customer balance below zero, chain-wide",
        Auth::Staff,
        200,
    ),
    (
        "get",
        "/v1/leaderboards/{game_id}",
        "Best score per customer, top 20 (?period=today|week|all&site_id=)",
        Auth::Any,
        200,
    ),
    (
        "get",
        "/v1/customers",
        "Chain-wide customer lookup (?phone=|email=|name=) with balances",
        Auth::Staff,
        200,
    ),
    (
        "post",
        "/v1/edge/enroll",
        "Trade an enrollment token for the edge's site credential",
        Auth::None,
        200,
    ),
    (
        "post",
        "/v1/sync/push",
        "Push a batch of outbox ops (idempotent by site and seq)",
        Auth::Machine,
        200,
    ),
    (
        "get",
        "/v1/sync/pull",
        "Pull the site's change feed after a cursor",
        Auth::Machine,
        200,
    ),
    (
        "get",
        "/v1/sync/notify",
        "Websocket: change-feed head hints",
        Auth::Machine,
        101,
    ),
    ("get", "/healthz", "Liveness", Auth::None, 200),
    (
        "get",
        "/readyz",
        "Readiness (database reachable)",
        Auth::None,
        200,
    ),
    ("get", "/metrics", "Prometheus metrics", Auth::None, 200),
];

/// Query parameters: (method, path, name, description, schema).
const QUERY_PARAMETERS: &[(&str, &str, &str, &str, QuerySchema)] = &[(
    "get",
    "/v1/sites/{site_id}/dead-letters",
    "state",
    "open (default): not yet retried or discarded at the venue; resolved: retried or \
     discarded there, with the resolution; all: both",
    QuerySchema::Enum(&["open", "resolved", "all"]),
)];

#[derive(Clone, Copy)]
enum QuerySchema {
    Enum(&'static [&'static str]),
}

impl QuerySchema {
    fn json(self) -> Value {
        match self {
            Self::Enum(values) => json!({ "type": "string", "enum": values }),
        }
    }
}

#[derive(Clone, Copy)]
enum Auth {
    None,
    Staff,
    Machine,
    Any,
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, auth, status) in OPERATIONS {
        let security = match auth {
            Auth::None => json!([]),
            Auth::Staff => json!([{ "bearer": [] }]),
            Auth::Machine => json!([{ "apiKey": [] }]),
            Auth::Any => json!([{ "bearer": [] }, { "apiKey": [] }]),
        };
        let mut parameters: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({ "name": name, "in": "path", "required": true,
                        "schema": { "type": "string", "format": "uuid" } })
            })
            .collect();
        parameters.extend(
            QUERY_PARAMETERS
                .iter()
                .filter(|(m, p, ..)| m == method && p == path)
                .map(|(_, _, name, description, schema)| {
                    json!({ "name": name, "in": "query", "required": false,
                            "description": description, "schema": schema.json() })
                }),
        );
        let mut responses = Map::new();
        responses.insert(status.to_string(), json!({ "description": "Success" }));
        responses.insert(
            "default".into(),
            json!({ "description": "An error",
                    "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } } }),
        );
        let operation = json!({
            "summary": summary,
            "security": security,
            "parameters": parameters,
            "responses": responses,
        });
        paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path items are objects")
            .insert(method.to_string(), operation);
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "AeroSports central API", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "apiKey": { "type": "apiKey", "in": "header", "name": "X-Api-Key" }
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": { "type": "string" }, "title": { "type": "string" },
                        "status": { "type": "integer" }, "detail": { "type": "string" },
                        "errors": { "type": "array", "items": { "type": "object",
                            "properties": { "field": { "type": "string" }, "message": { "type": "string" } } } }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_parameter_belongs_to_a_documented_operation() {
        for (method, path, name, ..) in QUERY_PARAMETERS {
            assert!(
                OPERATIONS.iter().any(|(m, p, ..)| m == method && p == path),
                "{method} {path} ({name}) is not an operation"
            );
        }
        let doc = document();
        let parameters = &doc["paths"]["/v1/sites/{site_id}/dead-letters"]["get"]["parameters"];
        let state = parameters
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "state"))
            .expect("the state parameter");
        assert_eq!(state["in"], "query");
        assert_eq!(state["schema"]["enum"], json!(["open", "resolved", "all"]));
    }
}
