//! Requests tonic cannot decode, answered as the client's mistake and audited like any refusal.
//!
//! tonic answers a request whose bytes are not the method's message (including a string that is not
//! UTF-8) with `INTERNAL`, as gRPC's own guidance has it, and one larger than the decoding limit with
//! `OUT_OF_RANGE`. Both happen before a handler runs, so no audit event would record them, and an
//! `INTERNAL` from a client's bug pages the operator. This layer, around the gRPC routes, rewrites
//! those two answers: `INVALID_ARGUMENT` with a field violation, and `RESOURCE_EXHAUSTED`, both
//! through the one error mapping and audited under the caller the connection names.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::http;
use tonic::{Code, Status};

use crate::{
    access::{CORRELATION_ID_HEADER, USER_ID_HEADER},
    domain::Violation,
    error::{Error, Reason},
    exchange::Exchange,
};

/// Wraps the gRPC routes (see the module docs).
#[derive(Clone)]
pub struct UndecodableLayer {
    exchange: Arc<Exchange>,
}

impl UndecodableLayer {
    pub fn new(exchange: Arc<Exchange>) -> Self {
        Self { exchange }
    }
}

impl<S> tower::Layer<S> for UndecodableLayer {
    type Service = Undecodable<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Undecodable {
            inner,
            exchange: self.exchange.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Undecodable<S> {
    inner: S,
    exchange: Arc<Exchange>,
}

/// What tonic's answer means, if it is one of the two this layer rewrites.
fn client_mistake(status: &Status) -> Option<Error> {
    let message = status.message();
    match status.code() {
        Code::Internal
            if message.starts_with("failed to decode Protobuf message")
                || message == "Missing request message." =>
        {
            Some(Error::invalid(vec![Violation::new(
                "request",
                "protobuf",
                "the request body is not the method's message (bytes that do not decode, or a \
                 string that is not UTF-8)",
            )]))
        }
        Code::OutOfRange if message.contains("decoded message length too large") => {
            Some(Error::ResourceExhausted {
                reason: Reason::RequestTooLarge,
                message: "the request message is larger than the server decodes (4 MiB)".into(),
            })
        }
        _ => None,
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Undecodable<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The ready service answers this call; a clone waits for the next (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let exchange = self.exchange.clone();
        let method = crate::http::grpc_method(request.uri().path());
        // What identifying the caller needs, kept in case the answer is rewritten: the connection's
        // certificate (extensions) and the two identity headers, not the whole header map.
        let head = method.map(|_| {
            let mut metadata = http::HeaderMap::new();
            for name in [USER_ID_HEADER, CORRELATION_ID_HEADER] {
                if let Some(value) = request.headers().get(name) {
                    metadata.insert(name, value.clone());
                }
            }
            (metadata, request.extensions().clone())
        });
        Box::pin(async move {
            let response = inner.call(request).await?;
            let (Some(method), Some((headers, extensions))) = (method, head) else {
                return Ok(response);
            };
            let Some(error) =
                Status::from_header_map(response.headers()).and_then(|s| client_mistake(&s))
            else {
                return Ok(response);
            };
            let request = tonic::Request::from_parts(
                tonic::metadata::MetadataMap::from_headers(headers),
                extensions,
                (),
            );
            let status = super::refuse_unread(&exchange, &request, method, error).await;
            Ok(status.into_http())
        })
    }
}
