//! The console's sign-in state: the staff access token in an HttpOnly, SameSite=Strict cookie
//! scoped to `/console`, and the CSRF token every state-changing form carries.
//!
//! The CSRF token of a session is an HMAC of its access token under a key derived from the JWT
//! secret, so every instance behind a load balancer computes the same one and nothing is stored.
//! Before sign-in there is no session to bind to: the login form is protected by a random
//! double-submit cookie instead.

use super::Console;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The cookie holding the access token.
pub const SESSION_COOKIE: &str = "aero_console";
/// The cookie holding the login form's double-submit token.
pub const LOGIN_CSRF_COOKIE: &str = "aero_console_login";
/// The form field every state-changing form sends its CSRF token in.
pub const CSRF_FIELD: &str = "csrf";

/// The key CSRF tokens are signed with, derived from the JWT secret so it is the same on every
/// instance and changes with it.
pub fn csrf_key(jwt_secret: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"aero-console-csrf\0");
    hasher.update(jwt_secret.as_bytes());
    hasher.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A signed-in staff member, as the console's handlers see them.
pub struct Session {
    /// The access token the API issued at login; sent as `Authorization: Bearer`.
    pub token: String,
    /// The token this session's forms must send back.
    pub csrf: String,
}

impl Session {
    fn new(console: &Console, token: String) -> Self {
        let csrf = csrf_for(&console.csrf_key, &token);
        Self { token, csrf }
    }

    /// Whether a submitted form's CSRF token is this session's, compared in constant time.
    pub fn csrf_matches(&self, console: &Console, submitted: &str) -> bool {
        let mut mac = Hmac::<Sha256>::new_from_slice(&console.csrf_key[..])
            .expect("HMAC takes a key of any length");
        mac.update(self.token.as_bytes());
        let Some(submitted) = unhex(submitted) else {
            return false;
        };
        mac.verify_slice(&submitted).is_ok()
    }
}

fn csrf_for(key: &[u8; 32], token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key[..]).expect("HMAC takes a key of any length");
    mac.update(token.as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The value of a cookie sent with the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value for a console cookie: HttpOnly, SameSite=Strict, path `/console`, and
/// Secure when the console is served over HTTPS. `None` clears it.
pub fn set_cookie(console: &Console, name: &str, value: Option<&str>) -> HeaderValue {
    let secure = if console.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let text = match value {
        Some(value) => format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict{secure}"),
        None => format!(
            "{name}=; Path=/console; HttpOnly; SameSite=Strict{secure}; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        ),
    };
    HeaderValue::from_str(&text).expect("cookie values are tokens")
}

/// The answer to a request without a usable session: the login page, keeping where it went.
pub struct SignInFirst;

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        Redirect::to("/console/login").into_response()
    }
}

impl FromRequestParts<Console> for Session {
    type Rejection = SignInFirst;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, SignInFirst> {
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or(SignInFirst)?;
        // A token is base64url segments separated by dots; anything else was not set by us.
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(SignInFirst);
        }
        Ok(Session::new(console, token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csrf_token_is_bound_to_its_session_and_key() {
        let key = csrf_key("a-secret-of-at-least-thirty-two-characters");
        let token = csrf_for(&key, "token-a");
        assert_eq!(token.len(), 64);
        assert_eq!(unhex(&token).map(|b| hex(&b)), Some(token.clone()));
        assert_ne!(token, csrf_for(&key, "token-b"));
        let other = csrf_key("another-secret-of-at-least-thirty-two-chars");
        assert_ne!(token, csrf_for(&other, "token-a"));
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("aero_console_login=abc; aero_console=tok.en"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("tok.en"));
        assert_eq!(cookie(&headers, LOGIN_CSRF_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "aero"), None);
    }
}
