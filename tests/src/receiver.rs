//! A real HTTP receiver for webhook tests (axum): it listens on 127.0.0.1, checks each notification's
//! HMAC-SHA256 signature with the shared secret, records it, and answers with the status it is
//! told to; it can also go down (refuse connections) and come back on the same port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One notification as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Headers, names lower-cased.
    pub headers: HashMap<String, String>,
    /// The body as JSON.
    pub body: serde_json::Value,
    /// Whether the signature matched the secret, the timestamp header and the body.
    pub signature_ok: bool,
    /// The status answered.
    pub status: u16,
    /// When it arrived, epoch milliseconds.
    pub at_ms: i64,
}

/// The receiver.
#[derive(Debug)]
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    secret: String,
    status: Arc<AtomicU16>,
    received: Arc<Mutex<Vec<Received>>>,
    task: Option<JoinHandle<()>>,
}

fn verify(secret: &str, headers: &HashMap<String, String>, body: &[u8]) -> bool {
    let (Some(ts), Some(sig)) = (
        headers.get("x-watchtrail-timestamp"),
        headers.get("x-watchtrail-signature"),
    ) else {
        return false;
    };
    let Some(hex_sig) = sig.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = hex::decode(hex_sig) else {
        return false;
    };
    // Refuse replays: the timestamp must be recent.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    if ts.parse::<i64>().map_or(true, |t| (now - t).abs() > 300) {
        return false;
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut msg = ts.as_bytes().to_vec();
    msg.push(b'.');
    msg.extend_from_slice(body);
    ring::hmac::verify(&key, &msg, &tag).is_ok()
}

#[derive(Clone)]
struct Shared {
    secret: String,
    status: Arc<AtomicU16>,
    received: Arc<Mutex<Vec<Received>>>,
}

async fn handle(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let code = shared.status.load(Ordering::SeqCst);
    let item = Received {
        signature_ok: verify(&shared.secret, &headers, &body),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        headers,
        status: code,
        at_ms,
    };
    if let Ok(mut r) = shared.received.lock() {
        r.push(item);
    }
    // One request a connection, so that going down refuses the next notification even over a
    // client's pooled connection.
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONNECTION, "close")], "ok").into_response()
}

impl Receiver {
    /// Starts on a free port, answering 200.
    pub async fn start(secret: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let mut r = Self {
            addr,
            secret: secret.to_string(),
            status: Arc::new(AtomicU16::new(200)),
            received: Arc::new(Mutex::new(Vec::new())),
            task: None,
        };
        r.serve(listener);
        r
    }

    fn serve(&mut self, listener: TcpListener) {
        let shared = Shared {
            secret: self.secret.clone(),
            status: Arc::clone(&self.status),
            received: Arc::clone(&self.received),
        };
        let app = Router::new().fallback(handle).with_state(shared);
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    /// The URL notifications go to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers every request with `code` from now on.
    pub fn answer_with(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    /// Stops listening: connections are refused.
    pub fn go_down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn come_back(&mut self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("rebind receiver: {e}"),
            }
        };
        self.serve(listener);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}
