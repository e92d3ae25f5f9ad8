//! Decoded HTTP exchanges, as sinks render them. Built by `tlstap-http` from the ordered
//! plaintext of a connection; owns their meaning, not how they are found.
//!
//! What must stay true: a field tlstap could not decode is `None`, never a guess. A decoder that
//! attached mid-connection has lost the HPACK dynamic table; what it cannot resolve is shown as
//! missing, so a wrong header is never printed.

/// The protocol an exchange was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpProto {
    Http1,
    H2,
    /// HTTP/2 carrying `application/grpc*`.
    Grpc,
}

impl HttpProto {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpProto::Http1 => "http/1.1",
            HttpProto::H2 => "h2",
            HttpProto::Grpc => "grpc",
        }
    }
}

/// One header field. `None` = not decodable (an HPACK reference into dynamic-table entries
/// tlstap never saw); never a guessed value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    pub name: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl Header {
    pub fn new(name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Header {
        Header { name: Some(name.into()), value: Some(value.into()) }
    }

    /// Whether the name is known and equals `name` (ASCII case-insensitive).
    #[inline]
    pub fn is(&self, name: &str) -> bool {
        self.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }

    #[inline]
    pub fn is_complete(&self) -> bool {
        self.name.is_some() && self.value.is_some()
    }
}

/// A gRPC length-prefixed message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GrpcMessage {
    /// The message's compressed flag (1 = compressed with the stream's `grpc-encoding`).
    pub compressed: bool,
    /// The message as the program handled it: decompressed when `compressed` and the encoding
    /// is known and decoding succeeded (see `decoded`).
    pub data: Vec<u8>,
    /// False when `compressed` but the bytes could not be decompressed (then `data` is raw).
    pub decoded: bool,
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpMessage {
    /// Header fields in wire order (HTTP/2 pseudo-headers included, first).
    pub headers: Vec<Header>,
    /// Trailer fields (chunked trailers, HTTP/2 trailing HEADERS).
    pub trailers: Vec<Header>,
    /// The body as the application sees it: de-chunked, and decompressed by `encodings` when
    /// `decoded` is true; else the bytes as transferred.
    pub body: Vec<u8>,
    /// The body as transferred (after de-chunking, before decompression), kept only when it
    /// differs from `body`.
    pub raw_body: Option<Vec<u8>>,
    /// Content-Encoding values in the order they were applied (e.g. `["gzip"]`).
    pub encodings: Vec<String>,
    /// Whether `body` is the decompressed form (false when there was nothing to decode, or
    /// decoding failed; then `body` is as transferred).
    pub decoded: bool,
    /// Bytes of body transferred, even those not kept.
    pub body_len: u64,
    /// Body bytes beyond the kept limit, or lost in capture, are missing from `body`.
    pub body_truncated: bool,
    /// gRPC messages split out of the body (gRPC only).
    pub grpc_messages: Vec<GrpcMessage>,
    /// The message ended as its framing says (else the capture stopped, the stream was reset,
    /// or bytes were lost).
    pub complete: bool,
    /// HTTP/1 only: the start line's version (e.g. "HTTP/1.1") and, for responses, reason.
    pub version: Option<String>,
    pub reason: Option<String>,
}

impl HttpMessage {
    /// The first value of a header (ASCII case-insensitive name), when known.
    #[inline]
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|h| h.is(name)).and_then(|h| h.value.as_deref())
    }

    /// Like `header`, but also looks in the trailers (gRPC status comes in either).
    #[inline]
    pub fn header_or_trailer(&self, name: &str) -> Option<&[u8]> {
        self.header(name).or_else(|| self.trailers.iter().find(|h| h.is(name)).and_then(|h| h.value.as_deref()))
    }

    /// Whether any header or trailer could not be decoded.
    #[inline]
    pub fn has_undecodable_fields(&self) -> bool {
        self.headers.iter().chain(&self.trailers).any(|h| !h.is_complete())
    }
}

/// A request and its response (either may be missing: the request was sent before tlstap
/// started, or the capture ended before the response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpExchange {
    pub proto: HttpProto,
    /// HTTP/2 stream id.
    pub stream_id: Option<u32>,
    pub method: Option<String>,
    /// HTTP/2 `:scheme`; "https" for HTTP/1 (it ran over TLS).
    pub scheme: Option<String>,
    /// HTTP/2 `:authority`, HTTP/1 `Host`.
    pub authority: Option<String>,
    /// Request target (path and query).
    pub path: Option<String>,
    pub status: Option<u16>,
    pub request: Option<HttpMessage>,
    pub response: Option<HttpMessage>,
    /// Wall-clock ns: the call that carried the request's first byte, the response's first
    /// byte, and the last byte of the exchange.
    pub request_ns: Option<u64>,
    pub response_ns: Option<u64>,
    pub end_ns: u64,
    /// The traced program sent the request (it is the client).
    pub program_is_client: bool,
}

impl HttpExchange {
    /// `grpc-status` of the response (trailers, or headers of a trailers-only response).
    #[inline]
    pub fn grpc_status(&self) -> Option<u32> {
        let value = self.response.as_ref()?.header_or_trailer("grpc-status")?;
        std::str::from_utf8(value).ok()?.parse().ok()
    }

    /// `grpc-message`, percent-decoding left to the reader.
    #[inline]
    pub fn grpc_message(&self) -> Option<&[u8]> {
        self.response.as_ref()?.header_or_trailer("grpc-message")
    }

    /// Any field of either message could not be decoded.
    #[inline]
    pub fn has_undecodable_fields(&self) -> bool {
        [&self.request, &self.response].into_iter().flatten().any(HttpMessage::has_undecodable_fields)
    }

    /// Time of the exchange's first byte seen.
    #[inline]
    pub fn start_ns(&self) -> u64 {
        self.request_ns.or(self.response_ns).unwrap_or(self.end_ns)
    }
}
