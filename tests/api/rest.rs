//! A small HTTP/1.1 client over mutual TLS for the HTTP face: one kept-alive connection, the
//! certificate of a test organisation (or any given one), JSON in and out.

use std::{path::Path, sync::Arc};

use http_body_util::{BodyExt as _, Full};
use hyper::{Request, StatusCode, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;

/// One HTTP/1.1 connection and the headers it sends with every request.
pub struct Rest {
    sender: SendRequest<Full<bytes::Bytes>>,
    headers: Vec<(String, String)>,
}

/// An answer: status, headers, and the body as JSON (`Value::Null` when it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Answer {
    /// The `ErrorInfo.reason` of a `google.rpc.Status` answer.
    pub fn reason(&self) -> String {
        self.detail("ErrorInfo")["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The `(field, reason)` pairs of its `BadRequest`.
    pub fn violations(&self) -> Vec<(String, String)> {
        self.detail("ErrorInfo");
        self.detail("BadRequest")["fieldViolations"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|v| {
                        (
                            v["field"].as_str().unwrap_or_default().to_owned(),
                            v["reason"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn detail(&self, kind: &str) -> Value {
        self.json["details"]
            .as_array()
            .and_then(|details| {
                details.iter().find(|d| {
                    d["@type"].as_str() == Some(&format!("type.googleapis.com/google.rpc.{kind}"))
                })
            })
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Asserts the status, and for an error that its body is a `google.rpc.Status` of `code`.
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        if status >= 400 {
            assert!(
                self.json["code"].is_i64(),
                "not a google.rpc.Status: {}",
                self.text
            );
            assert!(self.json["message"].is_string(), "{}", self.text);
        }
        self
    }
}

/// A rustls client configuration trusting `ca` and presenting `cert`/`key` (none if `None`).
pub fn tls_config(ca: &Path, identity: Option<(&Path, &Path)>) -> rustls::ClientConfig {
    referral_exchange::tls::http_client_rustls_config(ca, identity).expect("client TLS")
}

impl Rest {
    /// Connects to `port` on 127.0.0.1 with `config`.
    pub async fn connect(port: u16, config: rustls::ClientConfig) -> Rest {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("tcp connect");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("tls handshake");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http handshake");
        tokio::spawn(connection);
        Rest {
            sender,
            headers: Vec::new(),
        }
    }

    /// Sends `name: value` with every request.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        self.send("GET", path, None, &[]).await
    }

    pub async fn post(&mut self, path: &str, body: &Value) -> Answer {
        let bytes = serde_json::to_vec(body).expect("json");
        self.send("POST", path, Some(bytes), &[]).await
    }

    /// Any request, with extra headers for this one only.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
            .expect("request");
        self.sender.ready().await.expect("connection ready");
        let response = self.sender.send_request(request).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            text,
            json,
        }
    }
}
