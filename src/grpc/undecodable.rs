//! Requests tonic cannot decode, answered as the client's mistake and audited like any refusal.
//!
//! tonic answers a request whose bytes are not the method's message (including a string that is not
//! UTF-8) with `INTERNAL`, as gRPC's own guidance has it, and one larger than the decoding limit with
//! `OUT_OF_RANGE`. Both happen before a handler runs, so no audit event would record them, and an
//! `INTERNAL` from a client's bug pages the operator. This layer, around the gRPC routes, rewrites
//! those two answers: `INVALID_ARGUMENT` with a field violation, and `RESOURCE_EXHAUSTED`, both
//! through the one error mapping and audited under the caller the connection names.
//!
//! It also holds every method of the API to one request message ([`OneMessage`]): tonic reads the
//! first message of a unary call and drains the rest unread, so a client that sends two would be
//! answered as if it had sent one. The second message is refused instead, as `INVALID_ARGUMENT`.

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

/// What the request body answers when a second message follows the first (see [`OneMessage`]).
const SECOND_MESSAGE: &str = "a second request message on a call that takes one";

/// A request body that ends in an error where a second gRPC message would begin. A gRPC message on
/// the wire is a 5-byte prefix (a compression flag and a big-endian length) followed by that many
/// bytes; this body follows the first prefix across however the bytes arrive, and answers any byte
/// after the first message with a `Status` that tonic passes on as the call's answer (and
/// [`client_mistake`] rewrites). A body that only passes through (`check` false) serves the gRPC
/// services that are not the API's (reflection streams many messages).
pub struct OneMessage<B> {
    inner: B,
    check: bool,
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the first message still to come, once its prefix is read.
    remaining: u64,
}

impl<B> OneMessage<B> {
    fn new(inner: B, check: bool) -> Self {
        Self {
            inner,
            check,
            prefix: [0; 5],
            prefix_len: 0,
            remaining: 0,
        }
    }

    /// Follows `data`; false if it holds a byte after the first message.
    fn follow(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            if self.prefix_len < self.prefix.len() {
                let take = (self.prefix.len() - self.prefix_len).min(data.len());
                self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
                self.prefix_len += take;
                data = &data[take..];
                if self.prefix_len == self.prefix.len() {
                    let [_, a, b, c, d] = self.prefix;
                    self.remaining = u64::from(u32::from_be_bytes([a, b, c, d]));
                }
                continue;
            }
            if self.remaining == 0 {
                return false;
            }
            let take = usize::try_from(self.remaining)
                .unwrap_or(usize::MAX)
                .min(data.len());
            self.remaining -= take as u64;
            data = &data[take..];
        }
        true
    }
}

impl<B> http_body::Body for OneMessage<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<tower::BoxError>,
{
    type Data = bytes::Bytes;
    type Error = tower::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if this.check
                    && let Some(data) = frame.data_ref()
                    && !this.follow(data)
                {
                    let refusal: tower::BoxError = Box::new(Status::internal(SECOND_MESSAGE));
                    return Poll::Ready(Some(Err(refusal)));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What tonic's answer means, if it is one this layer rewrites.
fn client_mistake(status: &Status) -> Option<Error> {
    let message = status.message();
    match status.code() {
        Code::Internal if message == SECOND_MESSAGE => Some(Error::invalid(vec![Violation::new(
            "request",
            "one_message",
            "the method takes one request message; the call sent more",
        )])),
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
    S: tower::Service<http::Request<OneMessage<B>>, Response = http::Response<R>>
        + Clone
        + Send
        + 'static,
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
        // Every method of the API takes one request message.
        let request = request.map(|body| OneMessage::new(body, method.is_some()));
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
