//! How console pages get their data: each call is a request to the same router that serves
//! `/v1`, carrying the signed-in user's token as `Authorization: Bearer`, the console
//! request's client address and request id. Authentication, permissions, network rules, rate
//! limits and audit entries apply exactly as for any other client; console code never reads
//! the store.

use super::Console;
use super::session::SESSION_COOKIE;
use aero_shared::client_ip::ClientAddr;
use aero_shared::page::MAX_LIMIT;
use aero_shared::pipeline::REQUEST_ID_HEADER;
use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::convert::Infallible;
use tower::ServiceExt;

/// Most bytes of an API answer the console reads.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// The API, as seen from one console request.
pub struct Api {
    router: axum::Router,
    client: Option<ClientAddr>,
    request_id: Option<HeaderValue>,
}

impl FromRequestParts<Console> for Api {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Infallible> {
        Ok(Self {
            router: console.api.clone(),
            client: parts.extensions.get::<ClientAddr>().copied(),
            request_id: parts.headers.get(REQUEST_ID_HEADER).cloned(),
        })
    }
}

/// Why an API call did not give the console what it asked for.
#[derive(Debug)]
pub enum ApiFailure {
    /// The token expired or was revoked: sign in again.
    SignedOut,
    /// The API refused the request; its problem's words, to show the user.
    Refused {
        status: StatusCode,
        detail: String,
        errors: Vec<FieldError>,
    },
}

#[derive(Debug, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Deserialize)]
struct Problem {
    #[serde(default)]
    title: String,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    errors: Vec<FieldError>,
}

impl ApiFailure {
    /// The failure as one sentence for the page.
    pub fn message(&self) -> String {
        match self {
            Self::SignedOut => "Your session has ended; sign in again.".into(),
            Self::Refused { detail, errors, .. } => {
                let mut text = detail.clone();
                for error in errors {
                    text.push_str(&format!(" {}: {}.", error.field, error.message));
                }
                text
            }
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::SignedOut => StatusCode::UNAUTHORIZED,
            Self::Refused { status, .. } => *status,
        }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        match self {
            Self::SignedOut => signed_out(),
            refused => super::layout::error_page(refused.status(), &refused.message()),
        }
    }
}

/// Back to the login page, the dead session cookie cleared.
pub fn signed_out() -> Response {
    let mut response = Redirect::to("/console/login").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"
    )) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

impl Api {
    /// Sends one request to the API and reads its whole answer.
    pub async fn send(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (StatusCode, Bytes) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(id) = &self.request_id {
            request = request.header(REQUEST_ID_HEADER, id.clone());
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let mut request = request.body(body).expect("a well-formed internal request");
        if let Some(client) = self.client {
            request.extensions_mut().insert(client);
        }
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = match http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(err) => {
                tracing::warn!(error = %err, "could not read an API answer for the console");
                return (StatusCode::BAD_GATEWAY, Bytes::new());
            }
        };
        (status, bytes)
    }

    /// A call whose successful answer is JSON of type `T`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ApiFailure> {
        let (status, bytes) = self.send(token, method, path, body).await;
        check(status, &bytes)?;
        serde_json::from_slice(&bytes).map_err(|err| {
            tracing::warn!(error = %err, path, "the console could not read an API answer");
            ApiFailure::Refused {
                status: StatusCode::BAD_GATEWAY,
                detail: "The answer from the API could not be read.".into(),
                errors: Vec::new(),
            }
        })
    }

    /// `GET path` as the signed-in user.
    pub async fn get<T: DeserializeOwned>(&self, token: &str, path: &str) -> Result<T, ApiFailure> {
        self.json(Some(token), Method::GET, path, None).await
    }

    /// Every row of the paged list at `path` (a path without a query), read in pages of the
    /// largest size; `split` takes a page apart into its rows and the cursor of the next.
    pub async fn every<P: DeserializeOwned, T>(
        &self,
        token: &str,
        path: &str,
        split: impl Fn(P) -> (Vec<T>, Option<String>),
    ) -> Result<Vec<T>, ApiFailure> {
        let limit = MAX_LIMIT.to_string();
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![("limit", limit.as_str())];
            query.extend(after.as_deref().map(|after| ("after", after)));
            let page: P = self
                .get(token, &format!("{path}?{}", query_string(&query)))
                .await?;
            let (rows, next) = split(page);
            all.extend(rows);
            match next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// A call whose answer body does not matter (e.g. `DELETE` answering 204).
    pub async fn act(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(), ApiFailure> {
        let (status, bytes) = self.send(Some(token), method, path, body).await;
        check(status, &bytes)
    }
}

/// `name=value` pairs as a URL's query, each part escaped.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).expect("text pairs always encode")
}

fn check(status: StatusCode, bytes: &[u8]) -> Result<(), ApiFailure> {
    if status.is_success() {
        return Ok(());
    }
    if status == StatusCode::UNAUTHORIZED {
        return Err(ApiFailure::SignedOut);
    }
    let problem: Option<Problem> = serde_json::from_slice(bytes).ok();
    let (detail, errors) = match problem {
        Some(p) => (p.detail.unwrap_or(p.title), p.errors),
        None => (
            status
                .canonical_reason()
                .unwrap_or("The request failed")
                .to_string(),
            Vec::new(),
        ),
    };
    Err(ApiFailure::Refused {
        status,
        detail,
        errors,
    })
}
