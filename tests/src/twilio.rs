//! A local server speaking Twilio's Messages API (the part a node uses),
//! for tests of the SMS factor: `didmesh-node --sms FILE` with
//! `api_base` pointing here.
//!
//! `POST /2010-04-01/Accounts/{sid}/Messages.json`, HTTP Basic
//! `sid:token`, form fields `To`, `From`, `Body` → 201 `{sid, status:
//! "queued", to, from, body, …}`; a wrong account or password → 401
//! `{code: 20003, message: "Authenticate"}`; a missing field → 400
//! `{code: 21604, …}` (Twilio's error codes). Every accepted message is
//! recorded; [`TwilioServer::fail_with`] makes the next requests fail
//! with any status, as the real API can (4xx on a bad number, 5xx on an
//! outage).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Account SID the server expects unless told otherwise.
pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000042";
/// Auth token the server expects unless told otherwise.
pub const AUTH_TOKEN: &str = "test-auth-token-never-logged";

/// One accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub body: String,
}

impl Message {
    /// The first run of six digits in the body (the code).
    pub fn code(&self) -> Option<String> {
        let b = self.body.as_bytes();
        (0..b.len().saturating_sub(5))
            .find(|&i| {
                b[i..i + 6].iter().all(u8::is_ascii_digit)
                    && (i == 0 || !b[i - 1].is_ascii_digit())
                    && b.get(i + 6).is_none_or(|c| !c.is_ascii_digit())
            })
            .map(|i| self.body[i..i + 6].to_string())
    }
}

struct Inner {
    sid: String,
    token: String,
    messages: Mutex<Vec<Message>>,
    fail: Mutex<Option<(u16, i64, String)>>,
    requests: AtomicUsize,
    unauthorized: AtomicUsize,
}

/// The server (module doc); it stops when dropped.
pub struct TwilioServer {
    /// `http://127.0.0.1:<port>`: the `api_base` of an SMS file.
    pub url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TwilioServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `application/x-www-form-urlencoded` value decoding (`+` is a space).
fn form_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(x) => {
                        out.push(x);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        })),
    )
        .into_response()
}

async fn create_message(
    State(inner): State<Arc<Inner>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", inner.sid, inner.token))
    );
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if sid != inner.sid || auth != want {
        inner.unauthorized.fetch_add(1, Ordering::SeqCst);
        return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let form_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return error(StatusCode::BAD_REQUEST, 20001, "Expected a form body");
    }
    if let Some((status, code, message)) = inner.fail.lock().map(|f| f.clone()).unwrap_or(None) {
        return error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            &message,
        );
    }
    let text = String::from_utf8_lossy(&body);
    let field = |name: &str| {
        text.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| form_decode(v))
    };
    let (Some(to), Some(from), Some(text)) = (field("To"), field("From"), field("Body")) else {
        return error(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number, a 'From' and a 'Body' are required.",
        );
    };
    let mut messages = inner.messages.lock().unwrap_or_else(|p| p.into_inner());
    let sid = format!("SM{:032x}", messages.len() + 1);
    messages.push(Message {
        sid: sid.clone(),
        to: to.clone(),
        from: from.clone(),
        body: text.clone(),
    });
    (
        StatusCode::CREATED,
        Json(json!({
            "sid": sid,
            "account_sid": inner.sid,
            "to": to,
            "from": from,
            "body": text,
            "status": "queued",
            "num_segments": "1",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "price": null,
            "error_code": null,
            "error_message": null,
            "uri": format!("/2010-04-01/Accounts/{}/Messages/{sid}.json", inner.sid),
        })),
    )
        .into_response()
}

impl TwilioServer {
    /// A server for [`ACCOUNT_SID`] and [`AUTH_TOKEN`] on a free loopback
    /// port (needs a tokio runtime).
    pub async fn start() -> TwilioServer {
        Self::start_for(ACCOUNT_SID, AUTH_TOKEN).await
    }

    /// A server for another account.
    pub async fn start_for(sid: &str, token: &str) -> TwilioServer {
        let inner = Arc::new(Inner {
            sid: sid.to_string(),
            token: token.to_string(),
            messages: Mutex::new(vec![]),
            fail: Mutex::new(None),
            requests: AtomicUsize::new(0),
            unauthorized: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                post(create_message),
            )
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local addr: {e}"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TwilioServer {
            url: format!("http://{addr}"),
            inner,
            task,
        }
    }

    /// Messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<Message> {
        self.inner
            .messages
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// The code of the last message to `to`.
    pub fn last_code_to(&self, to: &str) -> Option<String> {
        self.messages()
            .iter()
            .rev()
            .find(|m| m.to == to)
            .and_then(Message::code)
    }

    /// Requests received (accepted or not).
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Requests refused for a wrong account or password.
    pub fn unauthorized(&self) -> usize {
        self.inner.unauthorized.load(Ordering::SeqCst)
    }

    /// From now on every authorized request fails with `status` and
    /// Twilio's error JSON `{code, message}`.
    pub fn fail_with(&self, status: u16, code: i64, message: &str) {
        if let Ok(mut f) = self.inner.fail.lock() {
            *f = Some((status, code, message.to_string()));
        }
    }

    /// Back to accepting messages.
    pub fn succeed(&self) {
        if let Ok(mut f) = self.inner.fail.lock() {
            *f = None;
        }
    }

    /// An SMS file for a node using this server: `body` holds the
    /// budget, allow-list, prices and caps (`[prices]` last).
    pub fn sms_file(&self, body: &str) -> String {
        format!(
            "api_base = \"{}\"\naccount_sid = \"{}\"\nauth_token = \"{}\"\nfrom = \"+15005550006\"\n{body}",
            self.url, self.inner.sid, self.inner.token
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn decoding_and_codes() {
        assert_eq!(super::form_decode("%2B4477+00%"), "+4477 00%");
        let m = super::Message {
            sid: String::new(),
            to: String::new(),
            from: String::new(),
            body: "042917 is your code for 127.0.0.1:7001".into(),
        };
        assert_eq!(m.code().as_deref(), Some("042917"));
    }
}
