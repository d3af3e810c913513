//! Reading a response body within limits: the bytes on the wire are capped
//! as they arrive, then decompressed (gzip, deflate, brotli) with a cap on
//! the output, so neither a huge body nor a compression bomb gets through.

use std::io::Read;

use bytes::Bytes;
use http_body_util::BodyExt;

/// Reads at most `max` bytes of `response`; `Err` with the size read when
/// it is larger.
pub async fn read_capped(response: http::Response<hyper::body::Incoming>, max: usize) -> Result<Bytes, BodyError> {
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(BodyError::TooLarge { limit: max, what: "body" });
    }
    let mut incoming = response.into_body();
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(ingest_runtime::error_chain(&e)))?;
        let Ok(chunk) = frame.into_data() else { continue }; // trailers
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge { limit: max, what: "body" });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// Undoes a `Content-Encoding`, producing at most `max` bytes.
pub fn decode(encoding: Option<&str>, body: Bytes, max: usize) -> Result<Bytes, BodyError> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    let reader: Box<dyn Read> = match encoding.as_deref() {
        None | Some("") | Some("identity") => {
            return if body.len() > max { Err(BodyError::TooLarge { limit: max, what: "body" }) } else { Ok(body) };
        }
        Some("gzip") | Some("x-gzip") => Box::new(flate2::read::MultiGzDecoder::new(std::io::Cursor::new(body))),
        Some("deflate") => Box::new(flate2::read::ZlibDecoder::new(std::io::Cursor::new(body))),
        Some("br") => Box::new(brotli::Decompressor::new(std::io::Cursor::new(body), 4096)),
        Some(other) => return Err(BodyError::Encoding(other.to_string())),
    };
    let mut out = Vec::new();
    reader
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Read(format!("cannot decompress the {} body: {e}", encoding.unwrap_or_default())))?;
    if out.len() > max {
        return Err(BodyError::TooLarge { limit: max, what: "decompressed body" });
    }
    Ok(out.into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    TooLarge { limit: usize, what: &'static str },
    Encoding(String),
    Read(String),
    Timeout(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { limit, what } => write!(f, "the {what} is larger than the {limit}-byte limit"),
            Self::Encoding(e) => write!(f, "unsupported content encoding '{e}'"),
            Self::Read(e) | Self::Timeout(e) => f.write_str(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap().into()
    }

    #[test]
    fn decodes_within_the_limit() {
        assert_eq!(decode(Some("gzip"), gzip(b"hello"), 100).unwrap(), Bytes::from_static(b"hello"));
        assert_eq!(decode(None, Bytes::from_static(b"plain"), 100).unwrap(), Bytes::from_static(b"plain"));
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22).write_all(b"brotli text").unwrap();
        assert_eq!(decode(Some("br"), br.into(), 100).unwrap(), Bytes::from_static(b"brotli text"));
    }

    #[test]
    fn a_compression_bomb_stops_at_the_limit() {
        // 64 MiB of zeros gzip to about 64 KiB.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 200_000);
        let err = decode(Some("gzip"), bomb, 15 << 20).unwrap_err();
        assert_eq!(err, BodyError::TooLarge { limit: 15 << 20, what: "decompressed body" });
        assert!(matches!(decode(Some("zstd"), Bytes::new(), 10), Err(BodyError::Encoding(_))));
        assert!(matches!(decode(Some("gzip"), Bytes::from_static(b"not gzip"), 10), Err(BodyError::Read(_))));
    }
}
