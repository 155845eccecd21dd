//! Signing in and out. The form posts to the console, which logs in at `POST /v1/auth/login`
//! like any client (so its throttle and lockout apply) and keeps the access token in the
//! session cookie; the token never reaches a script.

use super::Console;
use super::api::Api;
use super::layout::{self, Section};
use super::session::{CSRF_FIELD, LOGIN_CSRF_COOKIE, SESSION_COOKIE, Session, cookie, set_cookie};
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Credentials {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
}

/// `GET /console/login`: the form, with a fresh double-submit token in a cookie and a field.
pub async fn form(State(console): State<Console>) -> Response {
    render(&console, StatusCode::OK, "", None)
}

fn render(console: &Console, status: StatusCode, username: &str, error: Option<&str>) -> Response {
    let nonce = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let content = html! {
        h1 { "Sign in" }
        p { "HQ staff and venue managers sign in with their central account." }
        (layout::notice(error, None))
        form.stack method="post" action="/console/login" {
            input type="hidden" name=(CSRF_FIELD) value=(nonce);
            label for="username" { "Username" }
            input id="username" name="username" type="text" autocomplete="username" required value=(username);
            label for="password" { "Password" }
            input id="password" name="password" type="password" autocomplete="current-password" required;
            button type="submit" { "Sign in" }
        }
    };
    let mut response = layout::respond(
        status,
        layout::page("Sign in", Section::SignIn, None, content),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(console, LOGIN_CSRF_COOKIE, Some(&nonce)),
    );
    response
}

/// `POST /console/login`.
pub async fn submit(
    State(console): State<Console>,
    api: Api,
    headers: HeaderMap,
    Form(form): Form<Credentials>,
) -> Response {
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE);
    if expected.is_none_or(|nonce| nonce != form.csrf || form.csrf.is_empty()) {
        return render(
            &console,
            StatusCode::FORBIDDEN,
            &form.username,
            Some("The sign-in form expired; please try again."),
        );
    }
    let body = serde_json::json!({"username": form.username.trim(), "password": form.password});
    match api
        .json::<Token>(None, Method::POST, "/v1/auth/login", Some(&body))
        .await
    {
        Ok(token) => {
            let mut response = Redirect::to("/console").into_response();
            let headers = response.headers_mut();
            headers.append(
                header::SET_COOKIE,
                set_cookie(&console, SESSION_COOKIE, Some(&token.access_token)),
            );
            headers.append(
                header::SET_COOKIE,
                set_cookie(&console, LOGIN_CSRF_COOKIE, None),
            );
            response
        }
        Err(failure) => {
            let status = match failure.status() {
                StatusCode::TOO_MANY_REQUESTS => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNAUTHORIZED,
            };
            let message = if status == StatusCode::TOO_MANY_REQUESTS {
                "Too many sign-in attempts; wait a minute and try again.".to_string()
            } else {
                "The username or password is wrong, or the account is disabled.".to_string()
            };
            render(&console, status, &form.username, Some(&message))
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// `POST /console/logout`: forgets the session cookie. The access token itself lives until it
/// expires (tokens are short-lived); it was never readable by a script.
pub async fn logout(
    State(console): State<Console>,
    session: Session,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if !session.csrf_matches(&console, &form.csrf) {
        return layout::error_page(
            StatusCode::FORBIDDEN,
            "The form's security token is missing or wrong; reload the page and try again.",
        );
    }
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&console, SESSION_COOKIE, None),
    );
    response
}
