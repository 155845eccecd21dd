//! The OpenAPI 3.1 document each service serves at `/openapi.json` and renders at `/docs`:
//! built from the same declarations that register the routes (utoipa-axum's `routes!`), with
//! who may call an operation taken from the permission its route requires.

use crate::auth::extract::{API_KEY_HEADER, require};
use crate::auth::principal::{DeviceKind, Permission, Role};
use crate::problem::{PROBLEM_JSON, Problem};
use axum::Extension;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use std::sync::{Arc, OnceLock};
use utoipa::PartialSchema;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Required};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

/// Security scheme of staff: `Authorization: Bearer <JWT>` from the service's login.
pub const BEARER: &str = "bearer";
/// Security scheme of devices: their API key in the `X-Api-Key` header.
pub const API_KEY: &str = "apiKey";

const ROLES: [Role; 4] = [Role::Owner, Role::Admin, Role::Manager, Role::Staff];
const DEVICE_KINDS: [DeviceKind; 6] = [
    DeviceKind::Kiosk,
    DeviceKind::Pos,
    DeviceKind::Tablet,
    DeviceKind::Game,
    DeviceKind::Scoreboard,
    DeviceKind::Edge,
];

/// Puts a handler's routes behind `permission` and documents it on their operations: the
/// schemes of the callers that can hold it (staff roles, device kinds) and who may call.
pub fn guarded<S>(permission: Permission, routes: UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let roles: Vec<&str> = ROLES
        .iter()
        .filter(|r| r.permissions().contains(&permission))
        .map(|r| r.as_str())
        .collect();
    let kinds: Vec<&str> = DEVICE_KINDS
        .iter()
        .filter(|k| k.permissions().contains(&permission))
        .map(|k| k.as_str())
        .collect();
    let mut security = Vec::new();
    if !roles.is_empty() {
        security.push(SecurityRequirement::new(BEARER, Vec::<String>::new()));
    }
    if !kinds.is_empty() {
        security.push(SecurityRequirement::new(API_KEY, Vec::<String>::new()));
    }
    let mut who = format!("Requires the `{permission:?}` permission");
    if !roles.is_empty() {
        who.push_str(&format!("; staff roles: {}", roles.join(", ")));
    }
    if !kinds.is_empty() {
        who.push_str(&format!("; device kinds: {}", kinds.join(", ")));
    }
    who.push('.');
    let (schemas, mut paths, router) = routes;
    for item in paths.paths.values_mut() {
        for operation in operations_mut(item) {
            operation.security = Some(security.clone());
            operation.description = Some(match operation.description.take() {
                Some(text) if !text.is_empty() => format!("{text}\n\n{who}"),
                _ => who.clone(),
            });
        }
    }
    (schemas, paths, router).map(|router| router.route_layer(require(permission)))
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
        item.head.as_mut(),
        item.options.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The finished document as served; set once the router that it describes is built.
#[derive(Clone, Debug, Default)]
pub struct ServedDocument(Arc<OnceLock<Bytes>>);

/// Adds `/openapi.json` and `/docs` (public) to `router`, answering from `served`.
pub fn document_routes<S>(router: OpenApiRouter<S>, served: &ServedDocument) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let extension = Extension(served.clone());
    router
        .routes(routes!(openapi_json).layer(extension))
        .routes(routes!(docs))
}

/// This service's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
async fn openapi_json(Extension(served): Extension<ServedDocument>) -> Response {
    let body = served
        .0
        .get()
        .cloned()
        .unwrap_or_else(|| Bytes::from_static(b"{}"));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A browsable reference of this service's operations, parameters and schemas.
#[utoipa::path(get, path = "/docs", tag = "meta",
    responses((status = 200, description = "An HTML page rendering `/openapi.json`", content_type = "text/html", body = String)))]
async fn docs() -> Html<&'static str> {
    Html(include_str!("openapi/docs.html"))
}

/// Completes a service's document and stores it in `served`: title, security schemes, the
/// `Problem` schema, the `Idempotency-Key` header of authenticated POSTs, and the
/// problem+json answers every operation can give from the shared pipeline, extractors and
/// layers (each handler's own ones are declared on it).
pub fn finish(
    mut doc: OpenApi,
    title: &str,
    description: &str,
    served: &ServedDocument,
) -> OpenApi {
    doc.info.title = title.to_string();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.info.description = Some(description.to_string());
    doc.info.license = None;
    doc.info.contact = None;
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert("Problem".into(), Problem::schema());
    components
        .schemas
        .insert("FieldError".into(), crate::problem::FieldError::schema());
    components.security_schemes.insert(
        BEARER.into(),
        RefOr::T(SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some("A staff token from this service's login"))
                .build(),
        )),
    );
    components.security_schemes.insert(
        API_KEY.into(),
        RefOr::T(SecurityScheme::ApiKey(ApiKey::Header(
            ApiKeyValue::with_description(
                API_KEY_HEADER.as_str(),
                "A device's API key, shown once when the device is registered",
            ),
        ))),
    );
    for item in doc.paths.paths.values_mut() {
        if let Some(post) = item.post.as_mut() {
            complete_operation(post, true);
        }
        let others = [
            item.get.as_mut(),
            item.put.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ];
        for operation in others.into_iter().flatten() {
            complete_operation(operation, false);
        }
    }
    if let Ok(text) = serde_json::to_vec(&doc) {
        let _ = served.0.set(Bytes::from(text));
    }
    doc
}

fn complete_operation(operation: &mut Operation, is_post: bool) {
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    if !secured {
        // No inherited default: an operation without a scheme is public.
        operation.security = None;
    }
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    let has_in = |place: ParameterIn| {
        parameters.iter().any(|p| match p {
            RefOr::T(p) => p.parameter_in == place,
            RefOr::Ref(_) => false,
        })
    };
    let has_path = has_in(ParameterIn::Path);
    let has_query = has_in(ParameterIn::Query);
    let has_body = operation.request_body.is_some();
    if is_post && secured {
        parameters.push(RefOr::T(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Makes a retry safe: the first answer is stored for 24 h and replayed",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(255))
                        .pattern(Some("^[!-~]+$")),
                ))
                .build(),
        ));
    }
    if parameters.is_empty() {
        operation.parameters = None;
    }
    let mut add = |status: u16, why: &str| {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| problem(why));
    };
    if has_path || has_query || has_body {
        add(400, "Malformed parameters or body");
    }
    if secured {
        add(401, "Missing, unknown, revoked or expired credentials");
        add(
            403,
            "The caller lacks the permission, the site or the network",
        );
        add(429, "Too many failed authentications from this client");
    }
    if has_path {
        add(404, "No such resource");
    }
    if has_body {
        add(413, "The body is larger than this service accepts");
        add(415, "The body is not application/json");
    }
    if has_body || has_query {
        add(422, "A field is invalid");
    }
    if is_post && secured {
        add(
            409,
            "A request with this Idempotency-Key is in progress, or its answer was lost",
        );
        add(422, "The Idempotency-Key was used for another request");
    }
    add(
        503,
        "The request timed out or the service is not ready for it",
    );
}

/// A problem+json answer referring to the `Problem` schema.
pub fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                Content::new(Some(Ref::from_schema_name("Problem"))),
            )
            .build(),
    )
}
