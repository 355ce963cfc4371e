//! Bearer-token checks. Every mutating endpoint needs the token; reads need it too unless
//! they were opened (`--open-reads`). Without a configured token nothing can be changed
//! and reads are open. The token is compared in constant time and never logged.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::error;

/// The API's access settings.
pub struct Auth {
    token: Option<String>,
    open_reads: bool,
}

impl Auth {
    /// `token`: the bearer token (`None`: mutations are refused); `open_reads`: reads
    /// without a token.
    pub fn new(token: Option<String>, open_reads: bool) -> Auth {
        Auth {
            token: token.filter(|t| !t.is_empty()),
            open_reads,
        }
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    fn check(&self, request: &Request) -> Result<(), Box<Response>> {
        let Some(token) = &self.token else {
            return Err(unauthorized(
                "this daemon has no API token, so nothing can be changed over the API: \
                 start it with SINKD_API_TOKEN or SINKD_API_TOKEN_FILE",
            ));
        };
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(unauthorized("wrong bearer token")),
            None => Err(unauthorized(
                "missing bearer token (Authorization: Bearer <token>)",
            )),
        }
    }
}

fn unauthorized(message: &str) -> Box<Response> {
    let mut r = error(StatusCode::UNAUTHORIZED, message.to_owned());
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Box::new(r)
}

/// Compares without an early exit, so timing does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware for mutating routes: the token, always.
pub async fn mutation(
    State(auth): State<std::sync::Arc<Auth>>,
    request: Request,
    next: Next,
) -> Response {
    match auth.check(&request) {
        Ok(()) => next.run(request).await,
        Err(r) => *r,
    }
}

/// Middleware for reads: the token, unless reads are open or no token is configured.
pub async fn read(
    State(auth): State<std::sync::Arc<Auth>>,
    request: Request,
    next: Next,
) -> Response {
    if auth.open_reads || auth.token.is_none() {
        return next.run(request).await;
    }
    match auth.check(&request) {
        Ok(()) => next.run(request).await,
        Err(r) => *r,
    }
}
