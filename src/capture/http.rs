//! `http://…`: an MJPEG stream over plain HTTP (`multipart/x-mixed-replace`), as IP cameras,
//! `mjpg-streamer`, `ustreamer` and ESP32-CAM serve it.
//!
//! A deliberately small client on a blocking `std::net::TcpStream` (one GET, then the parts), on
//! the camera's capture thread: no second TLS stack or HTTP crate for one content type. `https`
//! is refused at config time. `http://user:pass@host/…` sends HTTP basic authentication. A read
//! that waits longer than the stall timeout is [`CaptureError::Stalled`]; a closed connection is
//! [`CaptureError::Unplugged`]; both make the camera thread reconnect with back-off.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::{CaptureError, Frame, FrameSource, convert};
use crate::error::{Error, Result};

/// Largest accepted part (one JPEG frame).
pub const MAX_PART_BYTES: usize = 16 << 20;
const MAX_HEADER_BYTES: usize = 16 << 10;

/// A connected MJPEG stream.
pub struct HttpMjpeg {
    url: String,
    reader: BufReader<TcpStream>,
    boundary: Vec<u8>,
    stall: Duration,
    seq: u64,
}

struct Url {
    host: String,
    port: u16,
    path: String,
    auth: Option<String>,
}

fn parse_url(url: &str) -> Result<Url> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        Error::invalid(format!("{url}: only http:// MJPEG streams are supported"))
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (auth, hostport) = match authority.rsplit_once('@') {
        Some((a, h)) => (Some(base64(a.as_bytes())), h),
        None => (None, authority),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (
            h.to_string(),
            p.parse()
                .map_err(|_| Error::invalid(format!("{url}: bad port {p:?}")))?,
        ),
        _ => (hostport.to_string(), 80),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(Error::invalid(format!("{url}: no host")));
    }
    Ok(Url {
        host,
        port,
        path: path.to_string(),
        auth,
    })
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The URL without credentials, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(a)) if a > s && !url[s + 3..a].contains('/') => {
            format!("{}://…@{}", &url[..s], &url[a + 1..])
        }
        _ => url.to_string(),
    }
}

fn read_line_limited(
    r: &mut impl BufRead,
    what: &str,
) -> std::result::Result<String, CaptureError> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_HEADER_BYTES as u64)
        .read_until(b'\n', &mut line)
        .map_err(io_err(what))?;
    if n == 0 {
        return Err(CaptureError::Unplugged(Error::unavailable(format!(
            "{what}: connection closed"
        ))));
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> CaptureError + '_ {
    move |e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            CaptureError::Stalled(Duration::ZERO)
        }
        _ => CaptureError::Unplugged(Error::unavailable(format!("{what}: {e}"))),
    }
}

impl HttpMjpeg {
    /// Connects, sends the GET and checks the response is a multipart MJPEG stream.
    pub fn open(url: &str, stall: Duration) -> Result<HttpMjpeg> {
        let shown = redact_url(url);
        let u = parse_url(url)?;
        let addr = (u.host.as_str(), u.port)
            .to_socket_addrs()
            .map_err(|e| Error::unavailable(format!("{shown}: cannot resolve {}: {e}", u.host)))?
            .next()
            .ok_or_else(|| Error::unavailable(format!("{shown}: {} has no address", u.host)))?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| Error::unavailable(format!("{shown}: cannot connect to {addr}: {e}")))?;
        stream.set_read_timeout(Some(stall)).ok();
        stream.set_write_timeout(Some(Duration::from_secs(5))).ok();
        let _ = stream.set_nodelay(true);
        let mut req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: faced/{}\r\nAccept: multipart/x-mixed-replace, */*\r\nConnection: close\r\n",
            u.path,
            u.host,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(a) = &u.auth {
            req.push_str(&format!("Authorization: Basic {a}\r\n"));
        }
        req.push_str("\r\n");
        (&stream)
            .write_all(req.as_bytes())
            .map_err(|e| Error::unavailable(format!("{shown}: {e}")))?;
        let mut reader = BufReader::with_capacity(256 << 10, stream);
        let fail = |e: CaptureError| Error::unavailable(format!("{shown}: {e}"));
        let status = read_line_limited(&mut reader, &shown).map_err(fail)?;
        let code = status.split_whitespace().nth(1).unwrap_or("");
        if code != "200" {
            let hint = if code == "401" {
                " (add user:password@ to the URL)"
            } else {
                ""
            };
            return Err(Error::unavailable(format!(
                "{shown}: server answered {status:?}{hint}"
            )));
        }
        let mut boundary = None;
        loop {
            let line = read_line_limited(&mut reader, &shown).map_err(fail)?;
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.trim().eq_ignore_ascii_case("content-type")
            {
                let v = v.trim();
                if !v.to_ascii_lowercase().starts_with("multipart/") {
                    return Err(Error::invalid(format!(
                        "{shown}: content type is {v:?}, not an MJPEG stream (multipart/x-mixed-replace); \
                         use the camera's stream URL, not its snapshot URL"
                    )));
                }
                boundary = v.split(';').find_map(|p| {
                    let p = p.trim();
                    p.strip_prefix("boundary=")
                        .map(|b| b.trim_matches('"').trim_start_matches("--").to_string())
                });
            }
        }
        let boundary = boundary.ok_or_else(|| {
            Error::invalid(format!("{shown}: multipart response without a boundary"))
        })?;
        Ok(HttpMjpeg {
            url: shown,
            reader,
            boundary: format!("--{boundary}").into_bytes(),
            stall,
            seq: 0,
        })
    }

    fn read_part(&mut self) -> std::result::Result<Vec<u8>, CaptureError> {
        let url = self.url.clone();
        // Skip to the boundary line (preamble, or the CRLF after the previous part).
        loop {
            let line = read_line_limited(&mut self.reader, &url)?;
            if line.as_bytes().starts_with(&self.boundary) {
                if line.as_bytes()[self.boundary.len()..].starts_with(b"--") {
                    return Err(CaptureError::Unplugged(Error::unavailable(format!(
                        "{url}: stream ended"
                    ))));
                }
                break;
            }
        }
        let mut len = None;
        loop {
            let line = read_line_limited(&mut self.reader, &url)?;
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.trim().eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse::<usize>().ok();
            }
        }
        match len {
            Some(n) if n > MAX_PART_BYTES => Err(CaptureError::Unplugged(Error::exhausted(
                format!("{url}: a {n}-byte frame is over the {MAX_PART_BYTES}-byte limit"),
            ))),
            Some(n) => {
                let mut buf = vec![0; n];
                self.reader.read_exact(&mut buf).map_err(io_err(&url))?;
                Ok(buf)
            }
            None => {
                // No Content-Length: read up to the JPEG's EOI marker.
                let mut buf = Vec::new();
                loop {
                    let n = self
                        .reader
                        .read_until(0xD9, &mut buf)
                        .map_err(io_err(&url))?;
                    if n == 0 {
                        return Err(CaptureError::Unplugged(Error::unavailable(format!(
                            "{url}: connection closed"
                        ))));
                    }
                    if buf.len() > MAX_PART_BYTES {
                        return Err(CaptureError::Unplugged(Error::exhausted(format!(
                            "{url}: frame too large"
                        ))));
                    }
                    if buf.ends_with(&[0xFF, 0xD9]) {
                        return Ok(buf);
                    }
                }
            }
        }
    }
}

impl FrameSource for HttpMjpeg {
    fn next_frame(&mut self) -> std::result::Result<Frame, CaptureError> {
        let part = self.read_part().map_err(|e| match e {
            CaptureError::Stalled(_) => CaptureError::Stalled(self.stall),
            e => e,
        })?;
        let img = convert::decode_mjpeg(&part).map_err(CaptureError::BadFrame)?;
        self.seq += 1;
        Ok(Frame::now(img, self.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://me:pw@cam.lan:8080/stream?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("cam.lan", 8080, "/stream?x=1")
        );
        assert_eq!(u.auth.as_deref(), Some("bWU6cHc="));
        let u = parse_url("http://cam").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert_eq!(redact_url("http://me:pw@cam/x"), "http://…@cam/x");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
