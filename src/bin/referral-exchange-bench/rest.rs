//! A client of the HTTP face for the benchmark: one kept-alive HTTP/1.1 connection over mutual TLS,
//! as an X-Road security server or a REST client keeps one.

use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use referral_exchange::{access::USER_ID_HEADER, tls};

use super::server::Target;

pub struct RestClient {
    sender: SendRequest<Full<Bytes>>,
    user: String,
}

impl RestClient {
    /// A connection to the target's HTTP face as `org` (development PKI), acting as `user`.
    pub async fn connect(target: &Target, org: &str, user: &str) -> anyhow::Result<Self> {
        let addr = target.http.context("the server's HTTP face is off")?;
        let dir = tls::PkiLayout::new(&target.pki).client_dir(org);
        let config = tls::http_client_rustls_config(
            &dir.join("ca.pem"),
            Some((&dir.join("cert.pem"), &dir.join("key.pem"))),
        )?;
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            user: user.to_owned(),
        })
    }

    /// POSTs `body` (JSON) to `path`; the answer's body if it is 200, an error otherwise.
    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> anyhow::Result<Bytes> {
        let request = hyper::Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .header(USER_ID_HEADER, &self.user)
            .body(Full::new(Bytes::from(body)))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status != hyper::StatusCode::OK {
            bail!("{status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }
}
